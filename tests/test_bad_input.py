"""Bad input a technician meets, through the real CLI: each case ends in ONE error line that names the thing and
the fix, exit status 2, no traceback, within a bounded time (issue 20, point 4).

Every case runs ``inspector ...`` as a subprocess, as a person would. Redis is the test's real embedded server
(or none, for the cases about a server that is not there); TLS endpoints are real TLS servers made here with a
throw-away certificate; the read-only and full disks are real tmpfs mounts (when this user may mount).
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from inspector.bus.connection import _free_port
from inspector.contracts.config import ENV_PREFIX, NON_CONFIG_ENV

INSPECTOR = [sys.executable, "-c", "from inspector.cli import app; app()"]


@dataclass
class Case:
    argv: list[str]
    yaml: str = ""
    env: dict[str, str] = field(default_factory=dict)
    names: tuple[str, ...] = ()  # the thing that is wrong, as the line must name it
    fix: tuple[str, ...] = ()  # what to do; at least one of these must appear
    within_s: float = 10.0


def _run(case: Case, tmp: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX) or k in NON_CONFIG_ENV}
    env.update(case.env)
    argv = [a.replace("{tmp}", str(tmp)) for a in case.argv]
    if case.yaml:
        (tmp / "station.yaml").write_bytes(case.yaml.replace("{tmp}", str(tmp)).encode("latin-1"))
    t0 = time.monotonic()
    try:
        out = subprocess.run(
            INSPECTOR + argv,
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=case.within_s + 2,
        )
    except subprocess.TimeoutExpired as err:
        pytest.fail(
            f"inspector {' '.join(argv)} was still waiting after {case.within_s + 2:.0f} s; it printed: {err.stderr!r}"
        )
    return out, time.monotonic() - t0


def _assert_one_clear_line(case: Case, out: subprocess.CompletedProcess[str], took: float) -> None:
    err = out.stderr
    assert "Traceback" not in err, err
    assert out.returncode == 2, f"rc {out.returncode}\n{err}"
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, f"want exactly one error line:\n{err}"
    line = lines[0]
    for thing in case.names:
        assert thing in line, f"{thing!r} not named in: {line}"
    assert any(f in line for f in case.fix), f"none of {case.fix} in: {line}"
    assert took < case.within_s, f"took {took:.1f} s (bound {case.within_s} s): {line}"


def _closed_port() -> int:
    return _free_port()  # bound, then released: nothing listens there


# -- cases that need no server --------------------------------------------------------------------------------------

V = ["validate-config", "station.yaml"]
W = ["worker", "-c", "station.yaml", "--max-frames", "1"]
S = ["status", "-c", "station.yaml"]
CASES = {
    "empty station file": Case(V, yaml="# nothing here\n", names=("station.yaml", "empty"), fix=("station:",)),
    "empty station file (worker)": Case(W, yaml="\n", names=("station.yaml", "empty"), fix=("station:",)),
    "non-UTF-8 station file": Case(V, yaml="station:\n  id: caf\xe9\n", names=("station.yaml", "UTF-8"), fix=("save",)),
    "store.url not a URL": Case(
        V, yaml="store:\n  url: not-a-url\n", names=("store.url", "not-a-url"), fix=("sqlite:///", "postgresql")
    ),
    "http:// Redis URL": Case(
        V, yaml="redis:\n  url: http://127.0.0.1:6379/0\n", names=("redis.url", "http://"), fix=("redis://",)
    ),
    "http:// Redis URL (status)": Case(
        S, yaml="redis:\n  url: http://127.0.0.1:6379/0\n", names=("redis.url",), fix=("redis://",)
    ),
    "env override with one underscore": Case(
        V,
        yaml="station: {id: s1}\n",
        env={"INSPECTOR_REDIS_URL": "redis://h:1/0"},
        names=("INSPECTOR_REDIS_URL",),
        fix=("INSPECTOR_REDIS__URL",),
    ),
    "env override naming no key": Case(
        W,
        yaml="station: {id: s1}\n",
        env={"INSPECTOR_WORKER__MAX_BACH": "4"},
        names=("INSPECTOR_WORKER__MAX_BACH", "max_bach"),
        fix=("max_batch",),
    ),
    "wrong Redis port": Case(
        S,
        yaml="redis:\n  url: redis://127.0.0.1:{port}/0\n  reconnect: {give_up_s: 3}\n",
        names=("127.0.0.1:{port}",),
        fix=("redis.url",),
    ),
    "wrong Redis host": Case(
        W,
        yaml="redis:\n  url: redis://no-such-host.invalid:6379/0\n  reconnect: {give_up_s: 3}\n",
        names=("no-such-host.invalid",),
        fix=("redis.url",),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_clear_line(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    port = str(_closed_port())
    case = Case(
        [a.replace("{port}", port) for a in case.argv],
        case.yaml.replace("{port}", port),
        case.env,
        tuple(n.replace("{port}", port) for n in case.names),
        case.fix,
        case.within_s,
    )
    out, took = _run(case, tmp_path)
    _assert_one_clear_line(case, out, took)


def test_wrong_port_wait_is_announced_at_once(tmp_path: Path) -> None:
    """A server that may still come up is awaited, but the wait and its bound are printed before it starts."""
    port = _closed_port()
    (tmp_path / "station.yaml").write_text(
        f"redis:\n  url: redis://127.0.0.1:{port}/0\n  reconnect: {{give_up_s: 5}}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX) or k in NON_CONFIG_ENV}
    t0 = time.monotonic()
    proc = subprocess.Popen(
        INSPECTOR + ["worker", "-c", "station.yaml"],
        cwd=tmp_path,
        env=env,
        text=True,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        first_at = time.monotonic() - t0
        proc.stderr.read()  # until the process gives up and exits
        end_at = time.monotonic() - t0
    finally:
        proc.wait(30)
    assert not first.startswith("error:"), f"no wait was announced before the error: {first}"
    assert f"127.0.0.1:{port}" in first and "5" in first, first
    # at the start of the 5 s wait, not at its end (measured from the process's end: the interpreter's start-up
    # on a loaded machine took 4.3 s once, and is not part of the wait)
    assert end_at - first_at > 3, f"the wait was announced {end_at - first_at:.1f} s before the process gave up"
    assert proc.returncode == 2


# -- TLS: real TLS endpoints with a throw-away certificate ----------------------------------------------------------


def _self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the test certificate")
    key, cert = folder / f"{name}.key", folder / f"{name}.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            f"/CN={name}",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return key, cert


@pytest.fixture
def tls_port(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A TLS server on 127.0.0.1 (certificate 'server'); yields its port and a CA file that did NOT sign it."""
    key, cert = _self_signed(tmp_path, "server")
    _, other_ca = _self_signed(tmp_path, "other-ca")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            conn.settimeout(2)
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:  # handshake; plain text or a bad CA fails it
                    tls.recv(1024)
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1], other_ca
    stop.set()
    thread.join(5)
    sock.close()


def test_wrong_ca_fails_fast(tmp_path: Path, tls_port: tuple[int, Path]) -> None:
    port, ca = tls_port
    case = Case(
        W,
        yaml=f"redis:\n  url: rediss://127.0.0.1:{port}/0\n  tls_ca_certs: {ca}\n",
        names=("certificate",),
        fix=("redis.tls_ca_certs", "tls_ca_certs"),
    )
    out, took = _run(case, tmp_path)
    _assert_one_clear_line(case, out, took)  # default give_up_s (120 s): a refused handshake never heals


def test_plain_url_to_tls_port_fails_fast(tmp_path: Path, tls_port: tuple[int, Path]) -> None:
    port, _ = tls_port
    case = Case(
        S,
        yaml=f"redis:\n  url: redis://127.0.0.1:{port}/0\n",
        names=(f"127.0.0.1:{port}",),
        fix=("rediss://", "redis.tls"),
    )
    out, took = _run(case, tmp_path)
    _assert_one_clear_line(case, out, took)


# -- disks: real tmpfs mounts ----------------------------------------------------------------------------------------


def _tmpfs(target: Path, options: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[list[Path]]:
    made: list[Path] = []
    yield made
    for m in made:
        subprocess.run(["umount", "-l", str(m)], capture_output=True)


OWNERS = {
    "station run": ["station", "run", "-c", "station.yaml"],
    "worker --standalone": ["worker", "--standalone", "-c", "station.yaml", "--max-frames", "1"],
}


@pytest.mark.parametrize("owner", list(OWNERS))
def test_read_only_data_folder(owner: str, tmp_path: Path, mounts: list[Path]) -> None:
    """The process that owns the data folder (lock, embedded Redis) cannot write it: named, with the path."""
    ro = tmp_path / "ro"
    _tmpfs(ro, "ro,size=1m")
    mounts.append(ro)
    case = Case(
        OWNERS[owner],
        yaml=f"station: {{data_dir: {ro}/station}}\n",
        names=(str(ro), "read-only"),
        fix=("station.data_dir", "remount"),
    )
    out, took = _run(case, tmp_path)
    _assert_one_clear_line(case, out, took)


@pytest.mark.parametrize("owner", list(OWNERS))
def test_full_disk_names_disk_space(owner: str, tmp_path: Path, mounts: list[Path]) -> None:
    full = tmp_path / "full"
    _tmpfs(full, "size=64k")
    mounts.append(full)
    (full / "station").mkdir()
    fd = os.open(full / "filler", os.O_WRONLY | os.O_CREAT)
    try:  # fill it up
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    case = Case(
        OWNERS[owner],
        yaml=f"station: {{data_dir: {full}/station}}\n",
        names=(str(full), "full"),
        fix=("free disk space",),
    )
    out, took = _run(case, tmp_path)
    _assert_one_clear_line(case, out, took)
