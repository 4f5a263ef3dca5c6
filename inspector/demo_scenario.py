"""``inspector demo --scenario drift``: the learning loop, played end to end on the demo's synthetic parts.

What runs is the station itself, at production gate defaults, with no mock anywhere:

1. **Commissioning** (the station is down): a base data folder of synthetic washers in the anomaly layout
   (``train/good``, ``test/<class>``, JPEG as the camera sends them), its held-out set frozen
   (:func:`trainer.heldout.freeze_heldout`, as ``trainer heldout freeze`` does), the first model built by the
   station's one retraining path (:func:`trainer.retrain.build_candidate`: a fused combined package), gated,
   registered, approved by quality and promoted by maintenance through :mod:`jobs.registry` (as the CLI does).
2. **The station** starts under its supervisor (``inspector station run``): embedded Redis, inspection workers
   (verdict recorder and review routing inside), line outputs, drift monitor + retrain trigger, RQ worker.
   The scenario's own camera publishes the parts, so it knows every part's truth (``FrameMeta.truth``).
3. **Good production**, then **a lighting change** (the lamp's output halves: every pixel x0.5).
4. The drift monitor raises DRIFT_ALARM; the retrain trigger consumes it and enqueues **one** RQ job.
   Meanwhile a **scripted quality engineer** labels every queued review frame with its truth through the
   labelling service (lease, label), exactly as a person does with ``inspector review`` or the GUI.
5. The job (snapshot, train the incumbent's kind, evaluate, package, register) runs in the RQ worker; its
   **gate** (``inspector.gates`` at the defaults) decides; the candidate is approved and promoted (or
   auto-promoted by the job when the station file turns ``jobs.auto_promote`` on); the workers **hot-swap**.
6. One JSON summary: frames, verdicts, recorded rows, lost, duplicates, line rejects, the alarm, the job, the
   gate rows, the promoted version and its folder, errors during the swap, and recall / false-reject rate
   before the change, after it (old model) and after the promotion (new model).

Sizes (:class:`DriftScenario`) keep it within 5 minutes on 2 cores: 128 px parts, 250 base images, about 500
frames; both trainings run on every start (nothing cached: the demo's own package is not used). Two station
settings differ from the defaults, both about timing, none a gate: ``drift.hysteresis`` 14 (the alarm waits for
enough changed frames that the job finds labelled defects of the new lighting) and ``review.limits.per_minute``
600 (the scripted engineer labels at once; the default rate limit spares people). Ctrl-C (or SIGTERM) at any phase stops the supervisor, which stops every station process;
the commissioning Redis is stopped by its owner; nothing is left running.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import redis
import yaml
from rich.console import Console

from inspector.bus.connection import EmbeddedRedis, StationLock, client_for_url, embedded_url
from inspector.bus.streams import StationBus, decode_message
from inspector.camera.synthetic import DEFECT_CLASSES, PartFactory
from inspector.contracts.config import StationConfig
from inspector.contracts.errors import InspectorError
from inspector.contracts.lifecycle import Role
from inspector.contracts.messages import Decision, Event, EventType, FrameMeta, Verdict
from inspector.contracts.processes import StationProcess
from inspector.line.sim_plc import SimulatedPlc
from inspector.models.decode import encode_image

SCENARIOS = ("drift",)
GOOD = "good"
QE_USER = "quality-engineer"
MAINTENANCE_USER = "maintenance"
STATION_FILE = "station.yaml"


@dataclass(frozen=True)
class DriftScenario:
    """The scenario's sizes: small parts and few frames, so that the loop fits in 5 minutes on 2 cores."""

    image_size: int = 128           # px, parts and model input (jobs.anomaly_image_size)
    train_good: int = 100           # base train/good
    test_good: int = 50             # base test/good (half held out)
    test_defects: int = 24          # base test/<class> per defect class (half held out)
    fps: float = 8.0                # the line's pace during production and after the swap
    training_fps: float = 1.5       # the line's pace while the job trains (the line keeps running)
    defect_rate: float = 0.25
    production_frames: int = 160    # good production before the change
    max_change_frames: int = 400    # no drift alarm by then: the scenario fails
    after_frames: int = 120         # frames after every worker swapped
    lighting_gain: float = 0.5      # the change: every pixel times this
    # Consecutive tripped drift checks (10 frames apart) before the alarm. The job learns from the labels that
    # exist when the alarm starts it: with the default 3 the alarm came after ~70 changed frames, the job's
    # recent gate set held 8 labelled defects of the new lighting, short of jobs.min_gate_frames (10), and the
    # gate (rightly) failed; 10 gave 12 (measured). 14 waits for ~180 changed frames, about 35 labelled
    # defects at the snapshot, ~16 in the recent gate set. Gates: untouched.
    drift_hysteresis: int = 14
    # Review picks per sampler and minute. The default 30 spares people a flood; the scripted engineer labels
    # at once, and at 8 fps the changed lighting's REVIEW goods used up the samplers' minute, starving the
    # defects (6 in the recent gate set, measured). Gates: untouched.
    review_per_minute: int = 600
    workers: int = 2
    job_wait_s: float = 900
    ready_wait_s: float = 180
    seed: int = 2024


class ScenarioError(InspectorError):
    pass


# -- frames ----------------------------------------------------------------------------------------------
def relight(img: np.ndarray, gain: float) -> np.ndarray:
    """The lighting change: every pixel times ``gain`` (a lamp whose output dropped)."""
    return np.clip(img.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def write_base_data(root: Path, size: DriftScenario) -> Path:
    """The station's base data folder in the anomaly layout, JPEG-encoded as the camera sends parts."""
    factory = PartFactory(seed=size.seed + 1, size=size.image_size)
    plan = {"train/good": size.train_good, "test/good": size.test_good,
            **{f"test/{k}": size.test_defects for k in DEFECT_CLASSES}}
    for rel, n in plan.items():
        d = root / rel
        d.mkdir(parents=True, exist_ok=True)
        kind = rel.split("/")[1]
        for i in range(n):
            (d / f"{kind}_{i:04d}.jpg").write_bytes(encode_image(factory.make(kind), "jpeg", 90))
    return root


# -- what the line saw -----------------------------------------------------------------------------------
@dataclass
class Sent:
    phase: str
    truth: str
    t: float


@dataclass
class LineLog:
    """Every frame the scenario's camera sent and every verdict on the stream (read from where it started)."""

    client: redis.Redis
    stream: str
    sent: dict[str, Sent] = field(default_factory=dict)
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    n_verdicts: int = 0
    duplicates: int = 0
    last_id: str = "0-0"

    def poll(self, block_ms: int = 50) -> int:
        resp = self.client.xread({self.stream: self.last_id}, count=1000, block=max(1, block_ms))
        n = 0
        for _s, entries in resp or []:
            for eid, fields in entries:
                self.last_id = eid.decode()
                v = decode_message(fields[b"m"])
                if not isinstance(v, Verdict) or v.frame_id not in self.sent:
                    continue
                self.n_verdicts += 1
                n += 1
                if v.frame_id in self.verdicts:
                    self.duplicates += 1
                else:
                    self.verdicts[v.frame_id] = v
        return n

    def missing(self) -> int:
        return len(self.sent) - len(self.verdicts)


def rates(verdicts: list[Verdict]) -> dict[str, Any]:
    """Recall (defects not passed) and false-reject rate (good parts not passed: REVIEW rejects at the line)."""
    goods = [v for v in verdicts if v.truth == GOOD]
    defects = [v for v in verdicts if v.truth and v.truth != GOOD]
    caught = sum(v.decision is not Decision.PASS for v in defects)
    rejected = sum(v.decision is not Decision.PASS for v in goods)
    return {"recall": round(caught / len(defects), 4) if defects else None,
            "false_reject_rate": round(rejected / len(goods), 4) if goods else None,
            "n_good": len(goods), "n_defect": len(defects),
            "decisions": dict(Counter(v.decision.value for v in verdicts))}


# -- the scripted quality engineer ---------------------------------------------------------------------
class ScriptedQualityEngineer(threading.Thread):
    """Labels every queued review frame with its truth, through the labelling service (lease, then label)."""

    def __init__(self, cfg: StationConfig, store: Any, truth: Callable[[str], str | None]) -> None:
        super().__init__(name="scripted-qe", daemon=True)
        from inspector.archive import Archive
        from inspector.review.labelling import LabellingService

        self.svc = LabellingService(store, Archive.for_data_dir(cfg.data_dir), lease_s=cfg.review.lease_s)
        self.truth = truth
        self.stop_event = threading.Event()
        self.labelled: Counter[str] = Counter()
        self.skipped = 0
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.work()
            except Exception as err:  # noqa: BLE001 - reported in the summary, the line keeps running
                self.errors.append(str(err))
            self.stop_event.wait(0.3)

    def work(self) -> int:
        n = 0
        while (item := self.svc.lease_next(QE_USER)) is not None:
            label = self.truth(item.frame_id)
            if label is None:
                self.svc.skip(item.id, QE_USER)
                self.skipped += 1
                continue
            self.svc.label(item.id, QE_USER, label)
            self.labelled[label] += 1
            n += 1
        return n


# -- the station's processes ---------------------------------------------------------------------------
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
        self.proc = subprocess.Popen([sys.executable, "-m", "inspector.cli", "station", "run", "-c",
                                      str(self.config_file)], stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
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
    cfg.supervisor.processes = [StationProcess.WORKER, StationProcess.LINE, StationProcess.DRIFT,
                                StationProcess.JOBS]  # the camera is the scenario's own: it knows the truth
    cfg.supervisor.workers = size.workers
    cfg.drift.hysteresis = size.drift_hysteresis
    cfg.review.limits.per_minute = size.review_per_minute
    cfg.camera.fps = size.fps
    cfg.model.package = None  # workers serve the registered active model
    return cfg


# -- the scenario --------------------------------------------------------------------------------------
class DriftRun:
    def __init__(self, cfg: StationConfig, root: Path, size: DriftScenario, console: Console) -> None:
        self.size, self.console, self.root = size, console, root
        self.plc = SimulatedPlc()
        self.cfg = scenario_config(cfg, root, size, self.plc)
        self.t0 = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self.summary: dict[str, Any] = {"scenario": "drift", "image_size": size.image_size, "workers": size.workers,
                                        "lighting_gain": size.lighting_gain,
                                        "drift_hysteresis": self.cfg.drift.hysteresis,
                                        "review_per_minute": self.cfg.review.limits.per_minute,
                                        "auto_promote": self.cfg.jobs.auto_promote}
        self.factory = PartFactory(seed=size.seed, size=size.image_size)
        self.gain = 1.0
        self.phase = "before_change"
        self.seq = 0
        self.station: Station | None = None
        self.qe: ScriptedQualityEngineer | None = None
        self.store: Any = None
        self.client: redis.Redis | None = None

    # -- helpers
    def say(self, msg: str) -> None:
        self.console.print(f"[dim]{time.perf_counter() - self.t0:6.1f} s[/] {msg}", highlight=False)

    @contextlib.contextmanager
    def step(self, name: str, title: str) -> Iterator[None]:
        t = time.perf_counter()
        with self.console.status(f"[bold]{title}[/]"):
            yield
        self.seconds[name] = round(time.perf_counter() - t, 1)
        self.say(f"{title}: done in {self.seconds[name]} s")

    # -- 1. commissioning
    def prepare(self) -> None:
        data_dir = Path(self.cfg.station.data_dir)
        if data_dir.exists():
            lock = StationLock(data_dir.resolve())
            if not lock.try_acquire():
                raise ScenarioError(f"{data_dir} is in use by {lock.holder() or 'another process'}",
                                    "stop that station first, or pass another --data-dir")
            lock.release()
        shutil.rmtree(self.root, ignore_errors=True)
        write_base_data(Path(self.cfg.jobs.base_data or self.root / "base"), self.size)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.config_file = data_dir / STATION_FILE
        self.config_file.write_text(yaml.safe_dump(self.cfg.model_dump(mode="json")))

    def commission(self) -> None:
        from inspector.store.db import open_store
        from jobs import registry
        from trainer import retrain
        from trainer.heldout import freeze_heldout

        cfg = self.cfg
        held = freeze_heldout(cfg.jobs.base_data or "", cfg.data_dir, frozen_by="scenario")
        self.say(f"held-out set frozen: {len(held.items)} images of the base folder's test split")
        self.store = open_store(cfg)
        built = retrain.build_candidate(cfg, self.store, "commission", reason="commissioning (scenario)",
                                        say=lambda m: self.say(f"[cyan]commissioning[/] {m}"))
        first = built["package"]
        gate = retrain.gate_of(first["path"])
        registry.register_candidate(self.store, first["version"], first["path"], first["sha256"], gate,
                                    "commissioning")
        registry.approve(self.store, first["version"], QE_USER, Role.QUALITY)
        server = EmbeddedRedis(Path(cfg.data_dir), cfg.redis.appendfsync)  # the station is down: this owns it
        url = server.start()
        try:
            client = client_for_url(url, cfg.redis)
            registry.promote(cfg, client, self.store, first["version"], MAINTENANCE_USER, role=Role.MAINTENANCE)
            client.close()
        finally:
            server.stop()
        self.v1, self.v1_path = first["version"], first["path"]
        self.summary.update(incumbent=self.v1, incumbent_task=first["task"],
                            commissioning_gate_passed=bool(gate and gate.passed))

    # -- 2. the station
    def start_station(self) -> None:
        self.station = Station(self.cfg, self.config_file, Path(self.cfg.data_dir) / "station.log")
        self.station.start()
        deadline = time.monotonic() + 30
        url = None
        while url is None and time.monotonic() < deadline and self.station.alive():
            url = embedded_url(Path(self.cfg.data_dir))
            time.sleep(0.1)
        if url is None:
            raise ScenarioError("the station's Redis did not start", f"read {self.station.log_file}")
        self.client = client_for_url(url, self.cfg.redis)
        self.bus = StationBus(self.client, self.cfg)
        self.line = LineLog(self.client, self.bus.names.verdicts)
        self._wait_ready()
        self.line.last_id = self._last_id(self.bus.names.verdicts)
        self.events_from = self._last_id(self.bus.names.events)
        self.qe = ScriptedQualityEngineer(self.cfg, self.store, self._truth)
        self.qe.start()

    def _last_id(self, stream: str) -> str:
        assert self.client is not None
        if not self.client.exists(stream):
            return "0-0"
        return str(self.client.xinfo_stream(stream)["last-generated-id"].decode())

    def _truth(self, frame_id: str) -> str | None:
        sent = self.line.sent.get(frame_id)
        return sent.truth if sent else None

    def _workers_on(self, version: str) -> bool:
        assert self.client is not None
        beats = [self.client.get(k) for k in self.client.scan_iter(self.bus.names.heartbeat_pattern)]
        versions = [json.loads(b)["model_version"] for b in beats if b]
        return len(versions) >= self.size.workers and all(v == version for v in versions)

    def _groups(self, stream: str) -> set[str]:
        assert self.client is not None
        if not self.client.exists(stream):
            return set()
        return {g["name"].decode() for g in self.client.xinfo_groups(stream)}

    def _rq_workers(self) -> int:
        from rq import Worker

        from jobs.queues import station_queue

        assert self.client is not None
        return len(Worker.all(queue=station_queue(self.cfg, self.client)))

    def _wait_ready(self) -> None:
        names = self.bus.names
        deadline = time.monotonic() + self.size.ready_wait_s
        while time.monotonic() < deadline:
            if self.station is None or not self.station.alive():
                raise ScenarioError("the station's supervisor exited", self.station.tail() if self.station else "")
            verdict_groups = self._groups(names.verdicts)
            if self._workers_on(self.v1) and names.drift_group in verdict_groups and \
                    names.line_group in verdict_groups and self._rq_workers() >= 1:
                return
            time.sleep(0.2)
        raise ScenarioError(f"the station was not ready within {self.size.ready_wait_s:.0f} s",
                            self.station.tail() if self.station else "")

    # -- 3. the camera
    def publish(self) -> None:
        kind = self.factory.sample_kind(self.size.defect_rate)
        img = relight(self.factory.make(kind), self.gain) if self.gain != 1.0 else self.factory.make(kind)
        meta = FrameMeta(station=self.cfg.station.id, camera="cam0", seq=self.seq, part_id=f"part-{self.seq:05d}",
                         captured_at=time.time(), encoding="jpeg", truth=kind)
        self.line.sent[meta.id] = Sent(self.phase, kind, time.time())
        self.bus.publish_frame(meta, encode_image(img, "jpeg", self.cfg.camera.jpeg_quality))
        self.seq += 1

    def run_line(self, fps: float, until: Callable[[], bool], max_frames: int | None = None,
                 every: Callable[[], None] | None = None) -> int:
        """Publish at ``fps`` until ``until()`` (checked between frames) or ``max_frames``; returns frames sent."""
        period, n = 1.0 / fps, 0
        next_t = time.monotonic()
        while not until() and (max_frames is None or n < max_frames):
            if self.station is not None and not self.station.alive():
                raise ScenarioError("the station's supervisor exited", self.station.tail())
            self.publish()
            n += 1
            next_t += period
            while (left := next_t - time.monotonic()) > 0:
                self.line.poll(int(left * 1000))
            if every is not None:
                every()
        return n

    def drift_alarms(self) -> list[Event]:
        assert self.client is not None
        out = []
        for _eid, fields in self.client.xrange(self.bus.names.events, min=f"({self.events_from}"):
            ev = decode_message(fields[b"m"])
            if isinstance(ev, Event) and ev.type is EventType.DRIFT_ALARM:
                out.append(ev)
        return out

    def retrain_jobs(self) -> list[str]:
        from jobs.queues import JobKeys, names_of

        assert self.client is not None
        return [j.decode() for j in self.client.lrange(JobKeys(names_of(self.cfg)).history, 0, -1)]

    # -- the whole loop
    def run(self) -> dict[str, Any]:
        size = self.size
        with self.step("prepare", "writing the base data (synthetic parts)"):
            self.prepare()
        with self.step("commission", "commissioning: held-out set, first model, gate, approve, promote"):
            self.commission()
        with self.step("station_start", "starting the station (supervisor: redis, workers, line, drift, jobs)"):
            self.plc.start()
            self.start_station()
            self.plc.reset()
        with self.step("production", f"good production: {size.production_frames} parts at {size.fps:g} fps"):
            self.run_line(size.fps, lambda: False, size.production_frames)
        false_alarms = len(self.drift_alarms())
        self.summary["false_alarms_before_change"] = false_alarms
        self.gain, self.phase = size.lighting_gain, "after_change"
        changed_at = self.seq
        self.say(f"[yellow]lighting change: every pixel x{size.lighting_gain:g}[/]")
        with self.step("until_alarm", "changed lighting: waiting for the drift alarm"):
            self.run_line(size.fps, lambda: bool(self.drift_alarms()), size.max_change_frames)
        alarms = self.drift_alarms()
        if not alarms:
            raise ScenarioError(f"no drift alarm after {size.max_change_frames} changed frames", "")
        first = alarms[0]
        self.summary["drift_alarm_after_frames"] = sum(
            1 for s in self.line.sent.values() if s.phase == "after_change" and s.t <= first.ts)
        self.summary["drift_alarm_statistics"] = first.data.get("statistics") or first.data.get("statistic")
        self.say(f"[red]DRIFT_ALARM[/] after {self.summary['drift_alarm_after_frames']} changed frames "
                 f"({self.seq - changed_at} sent so far)")
        job = self.wait_job()
        self.promote(job)
        self.summary["drift_alarms"] = len(self.drift_alarms())
        self.summary["retrain_jobs"] = len(self.retrain_jobs())
        return self.summary

    def wait_job(self) -> dict[str, Any]:
        from rq.job import Job

        from jobs.queues import SERIALIZER

        assert self.client is not None
        job_box: dict[str, Any] = {}
        t = time.perf_counter()
        last_step = [""]

        def finished() -> bool:
            ids = self.retrain_jobs()
            if not ids:
                return False
            job = Job.fetch(ids[0], connection=self.client, serializer=SERIALIZER)
            job_box["job"] = job
            status = job.get_status(refresh=True)
            step = str(job.meta.get("step", status.value if status else ""))
            if step != last_step[0]:
                last_step[0] = step
                self.say(f"retraining job {job.id[:8]}: {step}; labels so far "
                         f"{dict(self.qe.labelled) if self.qe else {}}")
            return status is not None and status.value in ("finished", "failed", "stopped", "canceled")

        with self.console.status("[bold]retraining (RQ worker) while the line keeps running[/]"):
            deadline = time.monotonic() + self.size.job_wait_s
            self.run_line(self.size.training_fps, lambda: finished() or time.monotonic() > deadline)
        self.seconds["job"] = round(time.perf_counter() - t, 1)
        job = job_box.get("job")
        if job is None or job.get_status().value != "finished":
            detail = (job.latest_result().exc_string if job is not None and job.latest_result() else "") or ""
            raise ScenarioError(f"the retraining job did not finish ({job.get_status().value if job else 'none'})",
                                detail[-2000:])
        result: dict[str, Any] = job.return_value() or {}
        self.say(f"retraining job done in {self.seconds['job']} s: {result.get('version')} "
                 f"{'gate PASS' if result.get('passed') else 'gate FAIL'}")
        self.summary["job"] = {"id": job.id, "seconds": self.seconds["job"], "status": result.get("status"),
                               "task": result.get("task"),
                               "steps": {k: v.get("seconds") for k, v in job.meta.get("steps", {}).items()}}
        return result

    def promote(self, result: dict[str, Any]) -> None:
        from jobs import registry

        version, path = result["version"], result["path"]
        gate = registry.gate_of(registry.get_version(self.store, version))
        self.summary["gate"] = {"passed": bool(gate and gate.passed),
                                "primary": next((r.frame_set for r in gate.rows), None) if gate else None,
                                "rows": [r.model_dump(mode="json") for r in gate.rows] if gate else []}
        for r in gate.rows if gate else []:
            self.say(f"  gate {r.line()}")
        if not (gate and gate.passed):
            raise ScenarioError(f"the candidate {version} failed its gate: not promoted",
                                "\n".join(r.line() for r in gate.failed) if gate else "no gate report")
        assert self.client is not None
        self.phase = "promotion"
        t = time.perf_counter()
        promote_seq = self.seq
        if not result.get("promoted"):  # auto_promote off (the default): a person approves, another promotes
            registry.approve(self.store, version, QE_USER, Role.QUALITY)
            registry.promote(self.cfg, self.client, self.store, version, MAINTENANCE_USER, role=Role.MAINTENANCE)
            self.say(f"approved by {QE_USER} (quality), promoted by {MAINTENANCE_USER} (maintenance): {version}")
        else:
            self.say(f"auto-promoted by the job (jobs.auto_promote): {version}")
        with self.step("swap", "hot swap: every worker on the new model"):
            deadline = time.monotonic() + 120
            self.run_line(self.size.fps, lambda: self._workers_on(version) or time.monotonic() > deadline)
            if not self._workers_on(version):
                raise ScenarioError(f"the workers did not swap to {version} within 120 s", self.station.tail()
                                    if self.station else "")
        swap_seq = self.seq
        self.phase = "after_promotion"
        with self.step("after_promotion", f"changed lighting, new model: {self.size.after_frames} parts"):
            self.run_line(self.size.fps, lambda: False, self.size.after_frames)
        self.summary.update(promoted=version, promoted_path=path,
                            swap_frames=swap_seq - promote_seq, swap_s=round(time.perf_counter() - t, 1))

    # -- the end
    def drain(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while self.line.missing() and time.monotonic() < deadline:
            self.line.poll(200)
        if self.qe is not None:
            self.qe.work()  # the last queued frames

    def recorded(self, timeout_s: float = 30) -> int:
        from sqlalchemy import func, select

        from inspector.store.models import VerdictRow

        ids = list(self.line.sent)
        n = 0
        deadline = time.monotonic() + timeout_s
        while True:
            with self.store.session() as s:
                n = sum(int(s.scalar(select(func.count()).select_from(VerdictRow).where(
                    VerdictRow.frame_id.in_(ids[k:k + 500]))) or 0) for k in range(0, len(ids), 500))
            if n >= len(self.line.verdicts) or time.monotonic() > deadline:
                return n
            time.sleep(0.5)

    def finish(self) -> dict[str, Any]:
        line = self.line
        self.drain()
        time.sleep(self.cfg.line.deadline_ms / 1000 + self.cfg.line.reject_pulse_ms / 1000 + 0.5)
        plc = self.plc.snapshot()  # the line decided every part (PASS in time or reject) by now
        verdicts = list(line.verdicts.values())
        by_phase = {p: [v for v in verdicts if line.sent[v.frame_id].phase == p]
                    for p in ("before_change", "after_change", "promotion", "after_promotion")}
        v2 = self.summary.get("promoted")
        dark = by_phase["after_change"] + by_phase["promotion"] + by_phase["after_promotion"]
        old_dark = [v for v in dark if v.model_version == self.v1]
        new_dark = [v for v in dark if v2 and v.model_version == v2]
        swap_window = by_phase["promotion"]
        before, after, promoted = rates(by_phase["before_change"]), rates(old_dark), rates(new_dark)
        s = self.summary
        s.update(frames=len(line.sent), verdicts=line.n_verdicts, recorded=self.recorded(), lost=line.missing(),
                 duplicates=line.duplicates, errors=sum(v.decision is Decision.ERROR for v in verdicts),
                 errors_during_swap=sum(v.decision is Decision.ERROR for v in swap_window),
                 line_rejects=plc.rejects, line_parts=plc.parts, verdict_rejects=sum(v.reject for v in verdicts),
                 recall_before_change=before["recall"], false_reject_rate_before_change=before["false_reject_rate"],
                 recall_after_change=after["recall"], false_reject_rate_after_change=after["false_reject_rate"],
                 recall_after_promotion=promoted["recall"],
                 false_reject_rate_after_promotion=promoted["false_reject_rate"],
                 phases={"before_change": before, "after_change_old_model": after,
                         "after_promotion_new_model": promoted})
        if self.qe is not None:
            s["labels"] = {"labelled": dict(self.qe.labelled), "skipped": self.qe.skipped,
                           "errors": self.qe.errors[:5]}
        s["seconds"] = {**self.seconds, "total": round(time.perf_counter() - self.t0, 1)}
        return s

    def close(self) -> None:
        if self.qe is not None:
            self.qe.stop_event.set()
            self.qe.join(5)
        if self.station is not None:
            self.say("stopping the station (supervisor: every process, Redis last)")
            self.station.stop()
        with contextlib.suppress(Exception):
            self.plc.stop()
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close()
        if self.store is not None:
            with contextlib.suppress(Exception):
                self.store.close()


def _sigterm_as_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run_scenario(cfg: StationConfig, name: str, as_json: bool, console: Console | None = None,
                 size: DriftScenario | None = None) -> dict[str, Any]:
    """Play scenario ``name``; prints one JSON summary with ``as_json``. Raises ScenarioError when the loop
    did not complete (the summary so far is in the error's ``summary`` attribute)."""
    if name not in SCENARIOS:
        raise ScenarioError(f"unknown scenario {name!r}", f"known: {', '.join(SCENARIOS)}")
    console = console or Console(stderr=True)
    root = (Path(cfg.station.data_dir) / f"scenario-{name}").resolve()
    run = DriftRun(cfg, root, size or DriftScenario(), console)
    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt) \
        if threading.current_thread() is threading.main_thread() else None
    failure: ScenarioError | None = None
    try:
        try:
            run.run()
        except ScenarioError as err:
            failure = err
            run.summary["failed"] = f"{err.message}" + (f": {err.hint}" if err.hint else "")
        summary = run.finish() if run.client is not None else {**run.summary, "seconds": run.seconds}
    except KeyboardInterrupt:
        console.print("stopping…")
        raise
    finally:
        run.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    summary["seconds"]["total"] = round(time.perf_counter() - run.t0, 1)
    if as_json:
        print(json.dumps(summary))
    else:
        console.print_json(json.dumps({k: v for k, v in summary.items() if k != "gate"}))
    if failure is not None:
        failure.summary = summary  # type: ignore[attr-defined]
        raise failure
    return summary


__all__ = ["SCENARIOS", "DriftScenario", "ScenarioError", "run_scenario", "rates", "relight", "write_base_data"]
