"""The type-ignore ratchet (.ci/type_ignores.py) fails on a new bare ``# type: ignore`` and lets a reasoned one pass."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / ".ci" / "type_ignores.py"


def ratchet() -> ModuleType:
    spec = importlib.util.spec_from_file_location("type_ignores", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_counts_only_comments_without_a_reason() -> None:
    bare_ignores = ratchet().bare_ignores
    assert bare_ignores("x = f()  # type: ignore\n") == 1
    assert bare_ignores("x = f()  # type: ignore[arg-type]\n") == 1
    assert bare_ignores("x = f()  # type: ignore[arg-type]  # the stub is wrong upstream\n") == 0
    assert bare_ignores('s = "# type: ignore"\n') == 0  # text in a string is no comment


def test_a_planted_bare_ignore_in_a_copy_fails_the_check(tmp_path: Path) -> None:
    for folder in ("inspector", "jobs"):  # a copy of part of the tree: the check runs on whatever folders exist
        for path in (ROOT / folder).rglob("*.py"):
            target = tmp_path / path.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    (tmp_path / ".ci").mkdir()
    shutil.copyfile(ROOT / ".ci" / "type_ignores.baseline.json", tmp_path / ".ci" / "type_ignores.baseline.json")
    assert run(tmp_path, "--init").returncode == 0  # the copy's own counts as its baseline
    assert run(tmp_path).returncode == 0
    (tmp_path / "inspector" / "reasoned.py").write_text("x: int = 'a'  # type: ignore[assignment]  # a test\n")
    assert run(tmp_path).returncode == 0
    planted = tmp_path / "inspector" / "decision.py"
    planted.write_text(planted.read_text() + "\nY: int = 'b'  # type: ignore\n")
    out = run(tmp_path)
    assert out.returncode == 1 and "NEW  inspector/decision.py" in out.stdout and "reasoned.py" not in out.stdout
    assert run(tmp_path, "--update").returncode == 1  # --update never raises a file's baseline
    planted.write_text(planted.read_text().replace("  # type: ignore\n", "\n"))
    assert run(tmp_path).returncode == 0
