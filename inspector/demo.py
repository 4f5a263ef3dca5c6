"""``inspector demo``: the whole station, offline, with no configuration, under the station supervisor.

:func:`start_demo_station` is the demo's station start-up (``inspector demo`` and the demo scenarios use it):
the demo's models (trained on the first run, reused afterwards), a simulated PLC (a real Modbus TCP server in
this process, :mod:`inspector.line.sim_plc`), then the station supervisor of ``inspector station run``
(:class:`inspector.station.supervisor.Supervisor`, on a thread of this process: it takes the data folder's
lock and owns the embedded Redis) with every station process as a child: workers (inspection, the verdict
recorder into SQLite and review routing with its samplers), line outputs (to the simulated PLC), the drift
monitor with its retrain trigger, the RQ worker with its scheduler, and the camera (synthetic washers, or a
folder given with ``--data``). The camera publishes only once every worker and the line are up. Ctrl-C stops
it all in order, Redis last; nothing is left running and the lock is released.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import redis
import yaml
from rich.console import Console
from rich.live import Live
from rich.table import Table
from sqlalchemy import func, select

from inspector.bus.connection import client_for_url, embedded_url
from inspector.bus.streams import decode_message
from inspector.contracts.config import StationConfig
from inspector.contracts.errors import InspectorError
from inspector.contracts.messages import Event, EventType, Verdict
from inspector.contracts.names import Names
from inspector.contracts.processes import StationProcess
from inspector.demo_camera import read_report
from inspector.line.sim_plc import SimulatedPlc
from inspector.metrics import percentile
from inspector.station.processes import ProcessSpec, plan
from inspector.station.supervisor import Supervisor

log = logging.getLogger(__name__)

DEMO_PROCESSES = [StationProcess.CAMERA, StationProcess.WORKER, StationProcess.LINE, StationProcess.DRIFT,
                  StationProcess.JOBS]
CONFIG_FILE = "demo-station.yaml"


@dataclass
class _StreamReader:
    client: redis.Redis
    stream: str
    last_id: str = "0-0"

    def start(self) -> None:
        """Read from the stream's last id: only what comes after."""
        info = self.client.xinfo_stream(self.stream) if self.client.exists(self.stream) else None
        self.last_id = info["last-generated-id"].decode() if info else "0-0"


@dataclass
class VerdictTally(_StreamReader):
    """Reads the verdicts stream from where the demo started and tallies what the line saw."""

    frames: set[str] = field(default_factory=set)
    verdicts: int = 0
    duplicates: int = 0
    decisions: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    truth_vs_decision: Counter[tuple[str, str]] = field(default_factory=Counter)
    first_t: float | None = None
    last_t: float | None = None
    last: Verdict | None = None


    def poll(self, block_ms: int = 200) -> int:
        resp = self.client.xread({self.stream: self.last_id}, count=1000, block=block_ms)
        n = 0
        for _s, entries in resp or []:
            for eid, fields in entries:
                self.last_id = eid.decode()
                v = decode_message(fields[b"m"])
                assert isinstance(v, Verdict)
                self._add(v)
                n += 1
        return n

    def _add(self, v: Verdict) -> None:
        now = time.monotonic()
        self.first_t = self.first_t or now
        self.last_t = now
        self.verdicts += 1
        if v.frame_id in self.frames:
            self.duplicates += 1
            return
        self.frames.add(v.frame_id)
        self.decisions[v.decision.value] += 1
        if v.latency_ms is not None:
            self.latencies.append(v.latency_ms)
        if v.truth:
            self.truth_vs_decision[(v.truth, v.decision.value)] += 1
        self.last = v

    def fps(self, started: float) -> float:
        if not self.last_t:
            return 0.0
        return len(self.frames) / max(1e-6, self.last_t - started)


@dataclass
class EventTally(_StreamReader):
    """Reads the events stream from where the demo started: drift alarms, job and model events."""

    types: Counter[str] = field(default_factory=Counter)
    last_drift: str = ""


    def poll(self) -> None:
        for _s, entries in self.client.xread({self.stream: self.last_id}, count=1000) or []:
            for eid, fields in entries:
                self.last_id = eid.decode()
                ev = decode_message(fields[b"m"])
                if isinstance(ev, Event):
                    self.types[ev.type.value] += 1
                    if ev.type is EventType.DRIFT_ALARM:
                        self.last_drift = ev.message


def ensure_demo_models(cfg: StationConfig, data: Path | None, console: Console) -> Path:
    """The demo's model package: trained on the first run (real models when the trainer is installed)."""
    from inspector.demo_models import ensure_demo_package

    return ensure_demo_package(cfg, data, console)


def _chunks(items: list[str], n: int = 500) -> Iterator[list[str]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


@dataclass
class DemoStation:
    """A running demo station (see :func:`start_demo_station`); :meth:`stop` stops all of it (idempotent)."""

    cfg: StationConfig
    config_path: Path
    supervisor: Supervisor
    plc: SimulatedPlc
    client: redis.Redis
    tally: VerdictTally
    events: EventTally
    frames: int | None
    report_path: Path
    log_path: Path
    thread: threading.Thread
    started: float = 0.0  # monotonic: when the camera was let go
    started_wall: float = 0.0
    startup_s: float = 0.0
    _store: object | None = None
    _jobs: dict[str, int] = field(default_factory=dict)
    _stopped: bool = False

    # ------------------------------------------------------------------ reading
    def poll(self, block_ms: int = 200) -> int:
        n = self.tally.poll(block_ms)
        self.events.poll()
        return n

    def camera(self) -> dict[str, int | bool]:
        """The camera's report: ``published``, ``not_sent``, ``done`` (``done`` only with a frame limit)."""
        return read_report(self.report_path)

    def processes(self) -> dict[str, str]:
        table = self.supervisor.table()
        procs: dict[str, dict[str, object]] = table["processes"]  # type: ignore[assignment]
        states = {name: str(p["state"]) for name, p in procs.items()}
        redis_state = table["redis"]
        states["redis"] = str(redis_state.get("state", "external")) if isinstance(redis_state, dict) else "?"
        return states

    def store(self):  # type: ignore[no-untyped-def]
        from inspector.store import open_store

        if self._store is None:
            self._store = open_store(self.cfg)
        return self._store

    def recorded(self) -> int:
        """Verdicts of this demo's parts in the station database."""
        from inspector.store.models import VerdictRow

        with self.store().session() as s:
            return int(s.scalar(select(func.count()).select_from(VerdictRow)
                                .where(VerdictRow.captured_at >= self.started_wall)) or 0)

    def recorded_frames(self) -> int:
        """How many of the frames the line saw a verdict for are in the database (exact, by frame id)."""
        from inspector.store.models import VerdictRow

        n = 0
        with self.store().session() as s:
            for chunk in _chunks(sorted(self.tally.frames)):
                n += int(s.scalar(select(func.count()).select_from(VerdictRow)
                                  .where(VerdictRow.frame_id.in_(chunk))) or 0)
        return n

    def review_queued(self) -> int:
        """Frames of this demo routed to the review queue."""
        from inspector.store.models import ReviewItemRow

        with self.store().session() as s:
            return int(s.scalar(select(func.count()).select_from(ReviewItemRow)
                                .where(ReviewItemRow.created_at >= self.started_wall)) or 0)

    def jobs(self) -> dict[str, int]:
        """The RQ retraining queue: queued, started, finished, failed (the last answer once Redis is gone)."""
        if self._stopped:
            return dict(self._jobs)
        try:
            from jobs.queues import station_queue

            q = station_queue(self.cfg, self.client)
            self._jobs = {"queued": q.count, "started": q.started_job_registry.count,
                          "finished": q.finished_job_registry.count, "failed": q.failed_job_registry.count}
        except (ImportError, redis.RedisError):
            pass
        return dict(self._jobs)

    def drift(self) -> str:
        alarms = self.events.types[EventType.DRIFT_ALARM.value]
        return f"ALARM x{alarms}: {self.events.last_drift}" if alarms else "watching, no alarm"

    def worker_stats(self) -> dict[str, object]:
        names = Names(self.cfg.redis.prefix, self.cfg.station.id)
        if self._stopped:
            return {}
        try:
            raw = self.client.get(names.heartbeat(f"{self.cfg.station.id}-worker-1"))
        except redis.RedisError:
            return {}
        return dict(json.loads(raw)) if raw else {}

    def register_model(self) -> None:
        """The demo's package in the model registry (audited once; active when no version is): ``inspector
        trace`` shows its hash, and a promotion has an incumbent."""
        from inspector.contracts.lifecycle import ModelStatus
        from inspector.runtime.package import load_package
        from inspector.store.models import ModelVersionRow
        from inspector.store.records import register_model

        pkg = load_package(self.cfg.model.package)
        with self.store().session() as s:
            active = s.scalar(select(func.count()).select_from(ModelVersionRow)
                              .where(ModelVersionRow.status == ModelStatus.ACTIVE.value))
        register_model(self.store(), pkg.version, str(Path(self.cfg.model.package).resolve()), pkg.package_sha256,
                       actor="demo", status=ModelStatus.CANDIDATE if active else ModelStatus.ACTIVE)

    # ------------------------------------------------------------------ waiting
    def check_alive(self) -> None:
        """Raise when the supervisor stopped on its own, or a station process was left failed."""
        if not self.thread.is_alive() and not self._stopped:
            raise InspectorError("the demo's station supervisor stopped", f"see {self.log_path}")
        failed = [n for n, st in self.processes().items() if st == "failed"]
        if failed:
            raise InspectorError(f"demo station process {', '.join(failed)} keeps exiting: left failed",
                                 f"see {self.log_path}")

    def streaming_done(self, idle_s: float = 10.0) -> bool:
        """With a frame limit: the camera published them all and every verdict is in (or none came for idle_s)."""
        if self.frames is None:
            return False
        rep = self.camera()
        if not rep.get("done"):
            return False
        return (len(self.tally.frames) >= int(rep.get("published", 0))
                or time.monotonic() - (self.tally.last_t or self.started) > idle_s)

    def settle(self, timeout_s: float = 20.0) -> None:
        """Wait until the recorder has recorded every verdict seen and the PLC has seen every part."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.poll(50)
            if (self.recorded() >= len(self.tally.frames)
                    and self.plc.snapshot().parts >= int(self.camera().get("published", 0))):
                return
            time.sleep(0.2)

    # ------------------------------------------------------------------ stop
    def stop(self) -> None:
        """Stop the camera, workers, line, drift and jobs in order, then Redis, then the simulated PLC."""
        if self._stopped:
            return
        self._stopped = True
        self.supervisor.stop_event.set()
        self.thread.join(self.cfg.supervisor.stop_timeout_s + 15)
        with contextlib.suppress(Exception):
            self.client.close()
        self.plc.stop()
        if self._store is not None:
            with contextlib.suppress(Exception):
                self._store.close()  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ summary
    def summary(self, command_started: float | None = None) -> dict[str, object]:
        t = self.tally
        rep = self.camera()
        published = int(rep.get("published", 0))
        plc = self.plc.snapshot()
        truth = t.truth_vs_decision
        good = sum(n for (tr, _d), n in truth.items() if tr == "good")
        bad = sum(n for (tr, _d), n in truth.items() if tr != "good")
        stats = self.worker_stats()
        return {
            "frames": published,
            "verdicts": t.verdicts,
            "recorded": self.recorded_frames(),
            "lost": published - len(t.frames),
            "duplicates": t.duplicates,
            "not_sent": int(rep.get("not_sent", 0)),
            "fps": round(t.fps(self.started), 2),
            "latency_ms_p50": round(percentile(t.latencies, 50), 2),
            "latency_ms_p99": round(percentile(t.latencies, 99), 2),
            "decisions": dict(t.decisions),
            "truth_vs_decision": {f"{tr}->{d}": n for (tr, d), n in sorted(truth.items())},
            "good_to_review": round(truth[("good", "REVIEW")] / good, 4) if good else None,
            "defects_passed": round(sum(n for (tr, d), n in truth.items() if tr != "good" and d == "PASS") / bad, 4)
            if bad else None,
            "line_parts": plc.parts,
            "line_accepts": plc.accepts,
            "line_rejects": plc.rejects,
            "review_queued": self.review_queued(),
            "drift_alarms": self.events.types[EventType.DRIFT_ALARM.value],
            "jobs": self.jobs(),
            "processes": self.processes(),
            "model_version": t.last.model_version if t.last is not None else None,
            "workers": self.cfg.supervisor.workers,
            "startup_s": round(self.startup_s, 2),
            "first_verdict_s": round(t.first_t - command_started, 2)
            if t.first_t is not None and command_started is not None else None,
            "stage_latency_ms": stats.get("latency_ms", {}),
            "data_dir": str(Path(self.cfg.station.data_dir).resolve()),
        }


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
    argv = (sys.executable, "-m", "inspector.demo_camera", "--config", str(path), "--go", str(go),
            "--report", str(report), *(("--frames", str(frames)) if frames is not None else ()))
    return ProcessSpec("camera", StationProcess.CAMERA, argv)


def start_demo_station(cfg: StationConfig, *, frames: int | None = None, workers: int = 1,
                       package: Path | None = None, data: Path | None = None, console: Console | None = None,
                       ready_timeout_s: float = 120.0) -> DemoStation:
    """Start the demo's whole station and return it once the camera streams; the caller calls ``stop()``.

    It starts, in this order: the model package (``package``, or the demo's own, trained on the first run
    from synthetic parts or ``data``); a simulated PLC (:class:`inspector.line.sim_plc.SimulatedPlc`, a real
    Modbus TCP server on a free local port, in this process); the station file ``<data_dir>/demo-station.yaml``
    (``cfg`` with every process, ``line.modbus_url`` at the PLC); the station supervisor on a thread (data
    folder lock, embedded Redis, then as child processes: ``workers`` inspection workers, each with the
    verdict recorder and review routing; the line outputs to the PLC; the drift monitor and retrain trigger;
    the RQ worker with its scheduler; the demo camera, ``python -m inspector.demo_camera``). The camera waits
    until every worker's heartbeat and the line's first Modbus write are seen, then publishes ``frames``
    parts (None: until stopped) and stays idle. Failing or interrupted part-way, it stops what it started.
    Children's output goes to ``<data_dir>/logs/demo-station.log``, the supervisor's lines too.
    """
    console = console or Console(stderr=True)
    t0 = time.monotonic()
    cfg.model.package = package or ensure_demo_models(cfg, data, console)
    deadline = time.monotonic() + ready_timeout_s  # from the model's being ready: training has its own pace
    plc = SimulatedPlc().start()
    supervisor: Supervisor | None = None
    thread: threading.Thread | None = None
    try:
        cfg = _demo_config(cfg, workers, plc)
        data_dir = Path(cfg.station.data_dir)
        logs = data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        path, go, report = data_dir / CONFIG_FILE, data_dir / "demo-camera.go", data_dir / "demo-camera.json"
        log_path = logs / "demo-station.log"
        for stale in (go, report):
            stale.unlink(missing_ok=True)
        path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        specs = [s for s in plan(cfg, path) if s.kind is not StationProcess.CAMERA]
        specs.append(_camera_spec(path, go, report, frames))
        log_file = log_path.open("a", buffering=1)

        def say(line: str) -> None:
            log_file.write(f"{time.strftime('%H:%M:%S')} {line}\n")

        supervisor = Supervisor(cfg, path, say=say, specs=specs, child_output=log_path)
        error: list[BaseException] = []

        def run() -> None:
            try:
                supervisor.run()  # type: ignore[union-attr]
            except BaseException as err:  # noqa: BLE001 - re-raised in the demo's thread
                error.append(err)

        thread = threading.Thread(target=run, name="demo-supervisor", daemon=True)
        thread.start()
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


def _raise_supervisor_error(error: list[BaseException], log_path: Path) -> None:
    if error:
        raise error[0]
    raise InspectorError("the demo's station supervisor stopped", f"see {log_path}")


def _wait_for_redis(cfg: StationConfig, thread: threading.Thread, error: list[BaseException],
                    deadline: float) -> redis.Redis:
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
            missing = ([f"{workers - up} of {workers} workers"] if up < workers else []) + \
                ([] if line_up else ["the line outputs (no Modbus write at the simulated PLC)"])
            raise InspectorError(f"the demo station did not come up: waiting for {' and '.join(missing)}",
                                 f"see {station.log_path}")
        time.sleep(0.1)


# --------------------------------------------------------------------------- the command
def status_table(station: DemoStation) -> Table:
    t, st = station.tally, station.processes()
    version = t.last.model_version if t.last is not None else "?"
    table = Table(title=f"inspection station demo — model {version}")
    for col in ("part", "state", "figures"):
        table.add_column(col)
    d = t.decisions
    rep = station.camera()
    workers = [s for n, s in st.items() if n.startswith("worker-")]
    wstate = workers[0] if len(set(workers)) == 1 else ", ".join(workers)
    plc = station.plc.snapshot()
    jobs = station.jobs()
    recorded = station.recorded()
    table.add_row("camera", st.get("camera", "?"), f"{rep.get('published', 0)} frames, {t.fps(station.started):.1f} fps")
    table.add_row(f"workers ({len(workers)})", wstate,
                  f"{len(t.frames)} verdicts: pass {d['PASS']}, fail {d['FAIL']}, review {d['REVIEW']}, "
                  f"error {d['ERROR']}; latency p50 {percentile(t.latencies[-2000:], 50):.1f} ms, "
                  f"p99 {percentile(t.latencies[-2000:], 99):.1f} ms")
    table.add_row("verdict recorder", wstate, f"{recorded} recorded, lag {max(0, len(t.frames) - recorded)}")
    table.add_row("review routing", wstate, f"{station.review_queued()} queued for review")
    table.add_row("drift monitor", st.get("drift", "?"), station.drift())
    table.add_row("jobs (RQ worker)", st.get("jobs", "?"),
                  ", ".join(f"{k} {v}" for k, v in jobs.items()) or "no queue yet")
    table.add_row("line → PLC", st.get("line", "?"),
                  f"accept {plc.accepts}, reject {plc.rejects}, ready {'on' if plc.ready else 'off'} ({station.plc.url})")
    table.add_row("redis", st.get("redis", "?"), "")
    if t.last is not None:
        v = t.last
        table.caption = f"last part {v.part_id}: {v.decision.value} {v.defect_class or ''} ({'; '.join(v.reasons)})"
    return table


@contextlib.contextmanager
def _interrupts() -> Iterator[None]:
    """SIGTERM as Ctrl-C, so that both stop the station in order (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _no_interrupts() -> Iterator[None]:
    """While stopping: a second Ctrl-C must not cut the ordered stop short (it is bounded anyway)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    prev = signal.signal(signal.SIGINT, signal.SIG_IGN), signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, prev[0])
        signal.signal(signal.SIGTERM, prev[1])


def run_demo(cfg: StationConfig, frames: int | None, headless: bool, as_json: bool, data: Path | None,
             workers: int = 1, console: Console | None = None, package: Path | None = None) -> dict[str, object]:
    """``inspector demo``: start the demo station, show its live table (or nothing with --json), stop it.
    Interrupted (Ctrl-C, SIGTERM), it stops everything and exits with status 130."""
    command_started = time.monotonic()
    console = console or Console(stderr=as_json)
    station: DemoStation | None = None
    summary: dict[str, object] = {}
    interrupted = False
    with _interrupts():
        try:
            if package is not None and not (package / "manifest.json").is_file():
                raise InspectorError(f"--package {package}: no model package there (no manifest.json)",
                                     "give a package folder made by trainer package-* (or leave --package out)")
            station = start_demo_station(cfg, frames=frames, workers=workers, package=package, data=data,
                                         console=console)
            _watch(station, as_json or headless, console)
            if frames is not None:
                station.settle()
            summary = station.summary(command_started)
        except KeyboardInterrupt:
            interrupted = True
            console.print("stopping…")
        finally:
            if station is not None:
                with _no_interrupts():
                    station.stop()
    if station is None:
        console.print("stopped before the station started; nothing is left running")
        raise SystemExit(130)
    if interrupted:
        summary = station.summary(command_started)
    if as_json:
        print(json.dumps(summary), flush=True)
    else:
        console.print(status_table(station))
    if interrupted:
        raise SystemExit(130)
    return summary


def _watch(station: DemoStation, quiet: bool, console: Console) -> None:
    if quiet:
        next_check = 0.0
        while True:
            station.poll()
            if time.monotonic() >= next_check:  # the process table and camera report twice a second
                station.check_alive()
                if station.streaming_done():
                    return
                next_check = time.monotonic() + 0.5
    with Live(status_table(station), console=console, refresh_per_second=2) as live:
        next_draw = 0.0
        while not station.streaming_done():
            station.poll()
            station.check_alive()
            if time.monotonic() >= next_draw:
                live.update(status_table(station))
                next_draw = time.monotonic() + 0.5
