"""The layers hold and are enforced: gui > jobs > trainer > inspector (pyproject.toml's import-linter contracts,
run by ``lint-imports`` in .ci/run).

Each planted import is written into a copy of the four packages in a temporary folder, and ``lint-imports``
(a real run, as a subprocess, with the repository's own ``--config``) must name the contract it breaks; the
same copy without the plant keeps it. The ``inspector`` command composes the upper layers' commands by entry
point and says how to fix a missing one in one line.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import inspector.plugins as plugins

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("inspector", "trainer", "jobs", "gui")
LINT = shutil.which("lint-imports")

pytestmark = pytest.mark.skipif(LINT is None, reason="import-linter not installed: pip install -e '.[test]'")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The four packages and pyproject.toml, copied (Python files only)."""
    root = tmp_path_factory.mktemp("layers")
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package,
            root / package,
            ignore=lambda d, names: [
                n for n in names if not (n.endswith(".py") or (Path(d) / n).is_dir()) or n == "__pycache__"
            ],
        )
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def lint(root: Path, contract: str) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the copy in ``root`` (its packages first on the path), one contract."""
    assert LINT is not None
    return subprocess.run(
        [LINT, "--config", str(root / "pyproject.toml"), "--contract", contract, "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )


def planted(root: Path, module: str, line: str) -> Path:
    """Append ``line`` to ``module``'s file in the copy; returns the file (the caller restores it)."""
    path = root / (module.replace(".", "/") + ".py")
    if not path.is_file():
        path = root / module.replace(".", "/") / "__init__.py"
    path.write_text(path.read_text() + f"\n{line}\n")
    return path


@pytest.mark.parametrize(
    ("contract", "name", "module", "line", "named"),
    [
        (
            "layers",
            "Layers: gui > jobs > trainer > inspector",
            "inspector.decision",
            "import trainer  # planted",
            "inspector.decision -> trainer",
        ),
        (
            "layers",
            "Layers: gui > jobs > trainer > inspector",
            "trainer.recipe",
            "def _f():\n    from jobs import queues  # planted, lazily",
            "trainer.recipe -> jobs.queues",
        ),
        (
            "gui-no-jobs",
            "gui reaches jobs by RQ dotted-path strings only",
            "gui.render",
            "import jobs.queues  # planted",
            "gui.render -> jobs.queues",
        ),
        (
            "contracts-pure",
            "inspector.contracts imports only pydantic, yaml and the standard library",
            "inspector.contracts.names",
            "import redis  # planted",
            "inspector.contracts.names -> redis",
        ),
    ],
)
def test_a_planted_import_breaks_its_contract_and_is_named(
    tree: Path, contract: str, name: str, module: str, line: str, named: str
) -> None:
    clean = lint(tree, contract)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert f"{name}" in clean.stdout and "KEPT" in clean.stdout
    path = planted(tree, module, line)
    original = path.read_text().rsplit(f"\n{line}\n", 1)[0]
    try:
        broken = lint(tree, contract)
    finally:
        path.write_text(original)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "BROKEN" in broken.stdout and name in broken.stdout
    assert named in broken.stdout


def test_the_inspector_command_lists_every_command_group() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "inspector.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "200", "PATH": ""},
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    for command in (
        "demo",
        "camera",
        "worker",
        "status",
        "validate-config",
        "gui",
        "line",
        "trace",
        "bench",
        "jobs",
        "audit",
        "identity",
        "review",
        "station",
        "product",
        "shadow",
    ):
        assert f" {command} " in out.stdout, command


def test_a_missing_entry_point_is_one_line_naming_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugins, "entry_points", lambda group: [])
    app = typer.Typer()

    @app.command()
    def other() -> None:
        """Another command."""

    plugins.add_commands(app)
    result = CliRunner().invoke(app, ["jobs", "status", "--json"])
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "'jobs' command is not available" in lines[0] and "pip install -e" in lines[0]
    with pytest.raises(plugins.PluginMissing, match="not registered") as err:
        plugins.provider("gui")
    assert "pip install -e" in err.value.hint
