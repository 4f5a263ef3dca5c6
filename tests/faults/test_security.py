"""Security settings are honoured: Redis password and ACL user, TLS settings passed through, no pickle anywhere
in the source tree, roles enforced by the GUI's role policy."""

from __future__ import annotations

import ast
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from inspector.bus.connection import _free_port, _redis_server_binary, client_for_url, connect
from inspector.contracts.config import RedisSection, parse_config
from inspector.contracts.errors import TransportError

pytestmark = pytest.mark.faults

REPO = Path(__file__).resolve().parents[2]
SOURCE_DIRS = ("inspector", "trainer", "jobs", "gui")


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server with ``--requirepass`` and an ACL user ``station`` limited to ``insp:*`` keys."""
    port = _free_port()
    acl = tmp_path / "users.acl"
    acl.write_text(
        "user default on >s3cret ~* &* +@all\nuser station on >st4tion ~insp:* &* +@all -flushall -flushdb\n"
    )
    proc = subprocess.Popen(
        [
            _redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(tmp_path),
            "--aclfile",
            str(acl),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.3)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def _cfg(url: str, **redis: object):  # type: ignore[no-untyped-def]
    return parse_config(
        {"station": {"id": "sec"}, "redis": {"url": url, "reconnect": {"give_up_s": 0.2, "max_s": 0.05}, **redis}},
        environ={},
    )


def test_password_works_and_missing_password_fails_clearly(locked_redis: str) -> None:
    assert connect(_cfg(locked_redis, password="s3cret")).ping()
    t0 = time.monotonic()
    with pytest.raises(TransportError) as err:
        connect(_cfg(locked_redis))
    took = time.monotonic() - t0
    print(f"NOAUTH after {took:.1f} s: {err.value}")
    assert "auth" in str(err.value).lower()
    with pytest.raises(TransportError):
        connect(_cfg(locked_redis, password="wrong"))


def test_missing_password_fails_fast_and_names_the_credentials(locked_redis: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(TransportError) as err:
        connect(_cfg(locked_redis))
    assert time.monotonic() - t0 < 4, f"took {time.monotonic() - t0:.1f} s with give_up_s=0.2"
    assert "does not answer" not in err.value.message and "password" in str(err.value).lower()


def test_acl_user_is_honoured(locked_redis: str) -> None:
    client = connect(_cfg(locked_redis, username="station", password="st4tion"))
    assert client.acl_whoami() in (b"station", "station")
    client.set("insp:{sec}:x", 1)
    with pytest.raises(Exception, match="no permissions"):
        client.set("other:key", 1)  # the ACL's key pattern is enforced server-side
    with pytest.raises(TransportError):
        connect(_cfg(locked_redis, username="station", password="nope"))


def test_tls_settings_build_an_ssl_pool(tmp_path: Path) -> None:
    from redis.connection import SSLConnection

    ca = tmp_path / "ca.pem"
    ca.write_text("not read until connecting")
    for url, section in (
        ("redis://h:6380/0", RedisSection(tls=True, tls_ca_certs=ca)),
        ("rediss://h:6380/0", RedisSection(tls_ca_certs=ca)),
    ):
        pool = client_for_url(url, section).connection_pool
        assert pool.connection_class is SSLConnection, url
        assert pool.connection_kwargs.get("ssl_ca_certs") == str(ca)
    plain = client_for_url("redis://h:6380/0", RedisSection()).connection_pool
    assert plain.connection_class is not SSLConnection


# ------------------------------------------------------------------------------------------ no pickle anywhere
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "shelve", "marshal"}


def _call_name(node: ast.Call) -> str:
    f = node.func
    parts = []
    while isinstance(f, ast.Attribute):
        parts.append(f.attr)
        f = f.value
    if isinstance(f, ast.Name):
        parts.append(f.id)
    return ".".join(reversed(parts))


def _kw(node: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in node.keywords if k.arg == name), None)


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _problems(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    imports_rq = any(isinstance(n, ast.ImportFrom) and (n.module or "").startswith("rq") for n in ast.walk(tree))
    for node in ast.walk(tree):
        where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if any(m.split(".")[0] in PICKLE_MODULES for m in mods):
                yield f"{where}: imports {mods}"
        if not isinstance(node, ast.Call):
            continue
        name = _call_name(node)
        if name.endswith(("pickle.load", "pickle.loads", "joblib.load", "read_pickle")):
            yield f"{where}: {name}"
        if name.endswith("torch.load") and not _is_true(_kw(node, "weights_only")):
            yield f"{where}: torch.load without weights_only=True"
        if name.split(".")[-1] == "load" and name.startswith(("np.", "numpy.")) and _is_true(_kw(node, "allow_pickle")):
            yield f"{where}: {name}(allow_pickle=True)"
        if (
            imports_rq
            and name.split(".")[-1] in ("Queue", "Worker", "SimpleWorker", "fetch", "fetch_many", "create")
            and _kw(node, "serializer") is None
            and name.split(".")[0] in ("Queue", "Worker", "SimpleWorker", "Job", "rq")
        ):
            yield f"{where}: rq {name} without serializer= (rq's default is pickle)"


def test_no_pickle_in_the_source_tree() -> None:
    files = [p for d in SOURCE_DIRS if (REPO / d).is_dir() for p in (REPO / d).rglob("*.py")]
    problems = [msg for f in files for msg in _problems(f)]
    print(f"PICKLE_SCAN files={len(files)} problems={len(problems)}")
    assert not problems, "\n".join(problems)


def test_scanner_catches_what_it_should(tmp_path: Path) -> None:
    bad = REPO / "tests" / "faults" / "_scan_probe.py"
    bad.write_text(
        "import pickle\nimport torch\nfrom rq import Queue\ntorch.load('x')\npickle.loads(b'')\nQueue('q')\n"
    )
    try:
        found = list(_problems(bad))
    finally:
        bad.unlink()
    assert len(found) == 4, found


# ------------------------------------------------------------------------------------------ roles
def test_gui_role_policy_enforces_actions() -> None:
    state = pytest.importorskip("gui.state")
    policy = state.RolePolicy(
        parse_config({"gui": {"maintenance": {"pin_hash": state.pin_hash("1234")}}}, environ={}).gui
    )
    with pytest.raises(state.LoginError):
        policy.login("eve", "maintenance", "0000")
    maint = policy.login("max", "maintenance", "1234")
    operator = policy.login("olga", "operator")
    quality = policy.login("quinn", "quality")
    for action in ("model.promote", "model.rollback", "model.approve", "retrain", "camera.changed"):
        assert maint.can(action)
        with pytest.raises(PermissionError):
            operator.require(action)
        # the GUI and the CLI share one table (inspector.contracts.lifecycle.PERMISSIONS): quality approves and
        # asks for a retraining, but never promotes, rolls back or records a camera change
        assert quality.can(action) is (action in ("model.approve", "retrain"))
    with pytest.raises(PermissionError):
        operator.require("label")
    assert quality.can("label") and not maint.can("label")
    print("ROLES", {r.value: sorted(state.PERMISSIONS[r]) for r in state.Role})
