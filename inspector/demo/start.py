"""The demo's station start-up: models, simulated PLC, station file, supervisor, waiting until all is up."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from pathlib import Path

import redis
import yaml
from rich.console import Console

from inspector.bus.connection import client_for_url, embedded_url
from inspector.contracts.config import StationConfig
from inspector.contracts.errors import InspectorError
from inspector.contracts.names import Names
from inspector.contracts.processes import StationProcess
from inspector.demo.models import ensure_demo_package
from inspector.demo.station import DemoStation
from inspector.demo.tally import EventTally, VerdictTally
from inspector.line.sim_plc import SimulatedPlc
from inspector.station.processes import ProcessSpec, plan
from inspector.station.supervisor import Supervisor

log = logging.getLogger(__name__)

DEMO_PROCESSES = [
    StationProcess.CAMERA,
    StationProcess.WORKER,
    StationProcess.LINE,
    StationProcess.DRIFT,
    StationProcess.JOBS,
]
CONFIG_FILE = "demo-station.yaml"


def _demo_config(cfg: StationConfig, workers: int, plc: SimulatedPlc) -> StationConfig:
    cfg = cfg.model_copy(deep=True)
    cfg.station.data_dir = Path(cfg.station.data_dir).resolve()
    cfg.supervisor.processes = list(DEMO_PROCESSES)
    cfg.supervisor.workers = workers
    cfg.supervisor.lock_wait_s = min(cfg.supervisor.lock_wait_s, 2.0)
    cfg.line.modbus_url = plc.url
    cfg.line.modbus_reject_coil, cfg.line.modbus_ready_coil = plc.reject_coil, plc.ready_coil
    cfg.line.modbus_seq_register = plc.seq_register
    return cfg


def _camera_spec(path: Path, go: Path, report: Path, frames: int | None) -> ProcessSpec:
    argv = (
        sys.executable,
        "-m",
        "inspector.demo.camera",
        "--config",
        str(path),
        "--go",
        str(go),
        "--report",
        str(report),
        *(("--frames", str(frames)) if frames is not None else ()),
    )
    return ProcessSpec("camera", StationProcess.CAMERA, argv)


def start_demo_station(
    cfg: StationConfig,
    *,
    frames: int | None = None,
    workers: int = 1,
    package: Path | None = None,
    data: Path | None = None,
    console: Console | None = None,
    ready_timeout_s: float = 120.0,
) -> DemoStation:
    """Start the demo's whole station and return it once the camera streams; the caller calls ``stop()``.

    It starts, in this order: the model package (``package``, or the demo's own, trained on the first run
    from synthetic parts or ``data``); a simulated PLC (:class:`inspector.line.sim_plc.SimulatedPlc`, a real
    Modbus TCP server on a free local port, in this process); the station file ``<data_dir>/demo-station.yaml``
    (``cfg`` with every process, ``line.modbus_url`` at the PLC); the station supervisor on a thread (data
    folder lock, embedded Redis, then as child processes: ``workers`` inspection workers, each with the
    verdict recorder and review routing; the line outputs to the PLC; the drift monitor and retrain trigger;
    the RQ worker with its scheduler; the demo camera, ``python -m inspector.demo.camera``). The camera waits
    until every worker's heartbeat and the line's first Modbus write are seen, then publishes ``frames``
    parts (None: until stopped) and stays idle. Failing or interrupted part-way, it stops what it started.
    Children's output goes to ``<data_dir>/logs/demo-station.log``, the supervisor's lines too.
    """
    console = console or Console(stderr=True)
    t0 = time.monotonic()
    cfg.model.package = package or ensure_demo_package(cfg, data, console)
    deadline = time.monotonic() + ready_timeout_s  # from the model's being ready: training has its own pace
    plc = SimulatedPlc().start()
    supervisor: Supervisor | None = None
    thread: threading.Thread | None = None
    try:
        cfg = _demo_config(cfg, workers, plc)
        path, go, report, log_path = _station_files(cfg)
        specs = [s for s in plan(cfg, path) if s.kind is not StationProcess.CAMERA]
        specs.append(_camera_spec(path, go, report, frames))
        supervisor, thread, error = _start_supervisor(cfg, path, specs, log_path)
        client = _wait_for_redis(cfg, thread, error, deadline)
        tally = VerdictTally(client, Names(cfg.redis.prefix, cfg.station.id).verdicts)
        events = EventTally(client, Names(cfg.redis.prefix, cfg.station.id).events)
        tally.start()
        events.start()
        station = DemoStation(cfg, path, supervisor, plc, client, tally, events, frames, report, log_path, thread)
        station.register_model()
        _wait_ready(station, error, workers, deadline)
        plc.reset()
        station.started_wall = time.time()
        station.started = time.monotonic()
        station.startup_s = station.started - t0
        go.write_text(str(station.started_wall))
        return station
    except BaseException:
        if supervisor is not None and thread is not None:
            supervisor.stop_event.set()
            thread.join(cfg.supervisor.stop_timeout_s + 15)
        plc.stop()
        raise


def _station_files(cfg: StationConfig) -> tuple[Path, Path, Path, Path]:
    """Write the demo's station file; clear the camera's go file and report of an earlier run. Returns the
    station file, the camera's go file and report, and the station's log."""
    data_dir = Path(cfg.station.data_dir)
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    path, go, report = data_dir / CONFIG_FILE, data_dir / "demo-camera.go", data_dir / "demo-camera.json"
    for stale in (go, report):
        stale.unlink(missing_ok=True)
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return path, go, report, logs / "demo-station.log"


def _start_supervisor(
    cfg: StationConfig, path: Path, specs: list[ProcessSpec], log_path: Path
) -> tuple[Supervisor, threading.Thread, list[BaseException]]:
    """The station supervisor on a thread of this process; what it raised lands in the returned list."""
    log_file = log_path.open("a", buffering=1)

    def say(line: str) -> None:
        log_file.write(f"{time.strftime('%H:%M:%S')} {line}\n")

    supervisor = Supervisor(cfg, path, say=say, specs=specs, child_output=log_path)
    error: list[BaseException] = []

    def run() -> None:
        try:
            supervisor.run()
        except BaseException as err:  # noqa: BLE001 - re-raised in the demo's thread
            error.append(err)

    thread = threading.Thread(target=run, name="demo-supervisor", daemon=True)
    thread.start()
    return supervisor, thread, error


def _raise_supervisor_error(error: list[BaseException], log_path: Path) -> None:
    if error:
        raise error[0]
    raise InspectorError("the demo's station supervisor stopped", f"see {log_path}")


def _wait_for_redis(
    cfg: StationConfig, thread: threading.Thread, error: list[BaseException], deadline: float
) -> redis.Redis:
    data_dir = Path(cfg.station.data_dir)
    while True:
        if not thread.is_alive():
            _raise_supervisor_error(error, data_dir / "logs" / "demo-station.log")
        url = embedded_url(data_dir) if cfg.redis.url is None else cfg.redis.url
        if url is not None:
            client = client_for_url(url, cfg.redis)
            try:
                if client.ping():
                    return client
            except redis.RedisError:
                client.close()
        if time.monotonic() > deadline:
            raise InspectorError("the demo's Redis did not start", f"see {data_dir / 'logs' / 'demo-station.log'}")
        time.sleep(0.05)


def _wait_ready(station: DemoStation, error: list[BaseException], workers: int, deadline: float) -> None:
    names = Names(station.cfg.redis.prefix, station.cfg.station.id)
    since = time.time()
    while True:
        if not station.thread.is_alive():
            _raise_supervisor_error(error, station.log_path)
        station.check_alive()
        up = 0
        for i in range(1, workers + 1):
            raw = station.client.get(names.heartbeat(f"{station.cfg.station.id}-worker-{i}"))
            if raw and float(json.loads(raw).get("ts", 0)) >= since - 1:
                up += 1
        line_up = station.plc.snapshot().ready_writes > 0
        if up >= workers and line_up:
            return
        if time.monotonic() > deadline:
            missing = ([f"{workers - up} of {workers} workers"] if up < workers else []) + (
                [] if line_up else ["the line outputs (no Modbus write at the simulated PLC)"]
            )
            raise InspectorError(
                f"the demo station did not come up: waiting for {' and '.join(missing)}", f"see {station.log_path}"
            )
        time.sleep(0.1)
