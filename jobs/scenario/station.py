"""The drift scenario's station: the station file it runs (``scenario_config``) and the station itself,
``inspector station run`` as a child process (its supervisor starts every station process)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from inspector.contracts.config import StationConfig
from inspector.contracts.processes import StationProcess
from inspector.line.sim_plc import SimulatedPlc
from jobs.scenario.parts import DriftScenario


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


class Station:
    """``inspector station run -c station.yaml`` as a child: it owns Redis and every station process."""

    def __init__(self, cfg: StationConfig, config_file: Path, log_file: Path) -> None:
        self.cfg, self.config_file, self.log_file = cfg, config_file, log_file
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_file.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "inspector.cli", "station", "run", "-c", str(self.config_file)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM: the supervisor stops camera-less station in order (workers drain), Redis last."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.cfg.supervisor.stop_timeout_s + 15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def scenario_config(base: StationConfig, root: Path, size: DriftScenario, plc: SimulatedPlc) -> StationConfig:
    """The station file of the scenario: only sizes, the processes and the PLC's address differ from the
    defaults; every gate, threshold and timeout is the production default (``jobs.auto_promote`` is taken
    from ``base``)."""
    cfg = base.model_copy(deep=True)
    cfg.line.modbus_url = plc.url
    cfg.line.modbus_reject_coil, cfg.line.modbus_ready_coil = plc.reject_coil, plc.ready_coil
    cfg.line.modbus_seq_register = plc.seq_register
    cfg.station.data_dir = root / "station"
    cfg.jobs.base_data = (root / "base").resolve()
    cfg.jobs.anomaly_image_size = size.image_size
    cfg.supervisor.processes = [
        StationProcess.WORKER,
        StationProcess.LINE,
        StationProcess.DRIFT,
        StationProcess.JOBS,
    ]  # the camera is the scenario's own: it knows the truth
    cfg.supervisor.workers = size.workers
    cfg.drift.hysteresis = size.drift_hysteresis
    cfg.review.limits.per_minute = size.review_per_minute
    cfg.camera.fps = size.fps
    cfg.model.package = None  # workers serve the registered active model
    return cfg


# -- the scenario --------------------------------------------------------------------------------------
