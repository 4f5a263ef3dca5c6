"""A running demo station: what it reads (verdicts, events, database, jobs queue, camera report), how it waits,
stops and sums up (see :func:`inspector.demo.start.start_demo_station`)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
from rq import Queue
from sqlalchemy import func, select

from inspector.contracts.config import StationConfig
from inspector.contracts.errors import InspectorError
from inspector.contracts.jobqueue import StrictJSONSerializer, queue_name
from inspector.contracts.messages import EventType
from inspector.contracts.names import Names
from inspector.contracts.processes import ProcessState
from inspector.demo.camera import read_report
from inspector.demo.tally import EventTally, VerdictTally, chunks
from inspector.line.sim_plc import SimulatedPlc
from inspector.metrics import percentile
from inspector.station.supervisor import Supervisor


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
            return int(
                s.scalar(
                    select(func.count()).select_from(VerdictRow).where(VerdictRow.captured_at >= self.started_wall)
                )
                or 0
            )

    def recorded_frames(self) -> int:
        """How many of the frames the line saw a verdict for are in the database (exact, by frame id)."""
        from inspector.store.models import VerdictRow

        n = 0
        with self.store().session() as s:
            for chunk in chunks(sorted(self.tally.frames)):
                n += int(
                    s.scalar(select(func.count()).select_from(VerdictRow).where(VerdictRow.frame_id.in_(chunk))) or 0
                )
        return n

    def review_queued(self) -> int:
        """Frames of this demo routed to the review queue."""
        from inspector.store.models import ReviewItemRow

        with self.store().session() as s:
            return int(
                s.scalar(
                    select(func.count()).select_from(ReviewItemRow).where(ReviewItemRow.created_at >= self.started_wall)
                )
                or 0
            )

    def jobs(self) -> dict[str, int]:
        """The RQ retraining queue: queued, started, finished, failed (the last answer once Redis is gone)."""
        if self._stopped:
            return dict(self._jobs)
        try:  # read only: the queue by its contract name (the jobs worker cleans its registries, not the demo)
            q = Queue(queue_name(self.cfg), connection=self.client, serializer=StrictJSONSerializer)
            self._jobs = {
                "queued": q.count,
                "started": q.started_job_registry.get_job_count(cleanup=False),
                "finished": q.finished_job_registry.get_job_count(cleanup=False),
                "failed": q.failed_job_registry.get_job_count(cleanup=False),
            }
        except redis.RedisError:
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
            active = s.scalar(
                select(func.count())
                .select_from(ModelVersionRow)
                .where(ModelVersionRow.status == ModelStatus.ACTIVE.value)
            )
        register_model(
            self.store(),
            pkg.version,
            str(Path(self.cfg.model.package).resolve()),
            pkg.package_sha256,
            actor="demo",
            status=ModelStatus.CANDIDATE if active else ModelStatus.ACTIVE,
        )

    # ------------------------------------------------------------------ waiting
    def check_alive(self) -> None:
        """Raise when the supervisor stopped on its own, or a station process was left failed."""
        if not self.thread.is_alive() and not self._stopped:
            raise InspectorError("the demo's station supervisor stopped", f"see {self.log_path}")
        failed = [n for n, st in self.processes().items() if st == ProcessState.FAILED]
        if failed:
            raise InspectorError(
                f"demo station process {', '.join(failed)} keeps exiting: left failed", f"see {self.log_path}"
            )

    def streaming_done(self, idle_s: float = 10.0) -> bool:
        """With a frame limit: the camera published them all and every verdict is in (or none came for idle_s)."""
        if self.frames is None:
            return False
        rep = self.camera()
        if not rep.get("done"):
            return False
        return (
            len(self.tally.frames) >= int(rep.get("published", 0))
            or time.monotonic() - (self.tally.last_t or self.started) > idle_s
        )

    def settle(self, timeout_s: float = 20.0) -> None:
        """Wait until the recorder has recorded every verdict seen and the PLC has seen every part."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.poll(50)
            if self.recorded() >= len(self.tally.frames) and self.plc.snapshot().parts >= int(
                self.camera().get("published", 0)
            ):
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
            if bad
            else None,
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
            if t.first_t is not None and command_started is not None
            else None,
            "stage_latency_ms": stats.get("latency_ms", {}),
            "data_dir": str(Path(self.cfg.station.data_dir).resolve()),
        }
