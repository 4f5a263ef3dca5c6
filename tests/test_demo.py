"""``inspector demo``: the whole station under the supervisor, its simulated PLC, and Ctrl-C in every phase.

Real parts only: the demo command in a subprocess (embedded redis-server, supervisor, worker / line / drift /
jobs / camera processes), a real pymodbus server as the PLC, the station's SQLite database. The phases after
training use the tiny numpy-built package (``--package``) so that they do not train for a minute each.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from inspector.bus.connection import StationLock
from inspector.camera.synthetic import DEFECT_CLASSES, PartFactory
from inspector.line.decider import Signal
from inspector.line.outputs import ModbusMap, ModbusOutput
from inspector.line.sim_plc import SimulatedPlc
from inspector.models.tiny_package import build_tiny_package
from tests.line.line_peers import wait_for

pytest.importorskip("pymodbus")


class _Part:
    def __init__(self, seq: int) -> None:
        self.seq = seq


class _Outcome:
    def __init__(self, seq: int, signal_: Signal) -> None:
        self.part, self.signal = _Part(seq), signal_


def test_simulated_plc_counts_the_parts_and_rejects_the_modbus_output_writes() -> None:
    plc = SimulatedPlc().start()
    out = ModbusOutput(plc.url, ModbusMap(unit=1, pulse_s=0.5))  # long pulse: rejects overlap it
    try:
        out.set_ready(True)
        for i in range(12):
            out.publish(_Outcome(i, Signal.REJECT if i % 3 == 0 else Signal.ACCEPT))  # type: ignore[arg-type]
        assert wait_for(lambda: plc.snapshot().parts == 12, 5)
        counts = plc.snapshot()
        assert (counts.parts, counts.rejects, counts.accepts, counts.last_seq, counts.ready) == (12, 4, 8, 11, True)
        plc.reset()
        assert plc.snapshot().parts == 0 and plc.snapshot().ready
    finally:
        out.close()
        plc.stop()


# --------------------------------------------------------------------------- the demo command, interrupted
@pytest.fixture(scope="module")
def tiny_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    factory = PartFactory(seed=1234)
    good = [factory.make("good") for _ in range(60)]
    bad = [factory.make(k) for k in DEFECT_CLASSES for _ in range(20)]
    return build_tiny_package(tmp_path_factory.mktemp("pkg") / "tiny", good, bad, name="demo-tiny-test")


def _demo(data_dir: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "inspector.cli", "demo", "--headless", "--data-dir", str(data_dir), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _station_processes(data_dir: Path) -> list[str]:
    """Every process still running for this data folder: children (their command line names the demo's station
    file) and the embedded redis-server (on the folder's fixed port)."""
    port_file = data_dir / "redis" / "port"
    port = port_file.read_text().strip() if port_file.exists() else None
    left = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if str(data_dir) in cmd or (port and f"127.0.0.1:{port}" in cmd and "redis" in cmd):
            left.append(f"{proc.info['pid']} {cmd}")
    return left


def _redis_answers(data_dir: Path) -> bool:
    port_file = data_dir / "redis" / "port"
    if not port_file.exists():
        return False
    try:
        with socket.create_connection(("127.0.0.1", int(port_file.read_text())), timeout=0.3):
            return True
    except OSError:
        return False


def _interrupt(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=40)
    return proc.returncode, out, err


def _assert_nothing_left(data_dir: Path) -> None:
    assert wait_for(lambda: not _station_processes(data_dir), 5), _station_processes(data_dir)
    assert not _redis_answers(data_dir)
    lock = StationLock(data_dir)
    assert lock.try_acquire(), f"the data folder lock is still held: {lock.holder()}"
    lock.release()


def _streams_again(data_dir: Path, package: Path) -> None:
    proc = _demo(data_dir, "--frames", "15", "--json", "--package", str(package))
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["frames"] == summary["verdicts"] == summary["recorded"] == 15, summary
    assert (summary["lost"], summary["duplicates"]) == (0, 0)
    assert summary["line_parts"] == 15 and summary["line_accepts"] + summary["line_rejects"] == 15
    _assert_nothing_left(data_dir)


def test_ctrl_c_while_training_leaves_nothing_behind(tmp_path: Path, tiny_package: Path) -> None:
    pytest.importorskip("torch")
    data_dir = tmp_path / "station"
    proc = _demo(data_dir, "--frames", "50")
    assert wait_for(lambda: (data_dir / "models" / "demo-parts").is_dir(), 60), "training did not start"
    time.sleep(3)
    rc, out, err = _interrupt(proc)
    assert rc == 130, err[-3000:]
    assert "nothing is left running" in out + err
    assert not list((data_dir / "models").glob("demo-trained-*/manifest.json"))  # interrupted: no package
    _assert_nothing_left(data_dir)
    _streams_again(data_dir, tiny_package)


@pytest.mark.parametrize("phase", ["start-up", "streaming"])
def test_ctrl_c_leaves_no_process_and_no_lock_and_the_next_demo_starts(
    tmp_path: Path, tiny_package: Path, phase: str
) -> None:
    data_dir = tmp_path / "station"
    proc = _demo(data_dir, "--package", str(tiny_package), "--json")
    if phase == "start-up":  # the supervisor has started Redis and its first children, the camera waits
        assert wait_for(lambda: (data_dir / "supervisor.json").exists(), 60), proc.stderr
    else:
        report = data_dir / "demo-camera.json"
        assert wait_for(
            lambda: report.exists() and json.loads(report.read_text() or "{}").get("published", 0) >= 20, 120
        ), "the demo did not stream"
        children = json.loads((data_dir / "supervisor.json").read_text())["processes"]
        assert {"camera", "worker-1", "line", "drift", "jobs"} <= set(children)
    rc, out, err = _interrupt(proc)
    assert rc == 130, err[-3000:]
    if phase == "streaming":
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["frames"] >= 20 and summary["duplicates"] == 0
    _assert_nothing_left(data_dir)
    _streams_again(data_dir, tiny_package)
