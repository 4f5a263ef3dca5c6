"""``inspector demo --scenario drift`` (the ``demo_scenario`` provider of the ``inspector`` command): the learning loop, played end to end on the demo's synthetic parts.

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
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from inspector.bus.connection import EmbeddedRedis, StationLock, client_for_url
from inspector.contracts.config import StationConfig
from inspector.contracts.lifecycle import Role
from inspector.contracts.messages import Decision
from jobs import registry
from jobs.queues import SERIALIZER
from jobs.scenario.line import ScenarioLine
from jobs.scenario.parts import (
    MAINTENANCE_USER,
    QE_USER,
    SCENARIOS,
    STATION_FILE,
    DriftScenario,
    ScenarioError,
    rates,
    write_base_data,
)
from trainer import retrain
from trainer.heldout import freeze_heldout


class DriftRun(ScenarioLine):
    """The learning loop, phase by phase (see the module's text); ``summary`` grows as it goes."""

    # -- 1. commissioning
    def prepare(self) -> None:
        data_dir = Path(self.cfg.station.data_dir)
        if data_dir.exists():
            lock = StationLock(data_dir.resolve())
            if not lock.try_acquire():
                raise ScenarioError(
                    f"{data_dir} is in use by {lock.holder() or 'another process'}",
                    "stop that station first, or pass another --data-dir",
                )
            lock.release()
        shutil.rmtree(self.root, ignore_errors=True)
        write_base_data(Path(self.cfg.jobs.base_data or self.root / "base"), self.size)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.config_file = data_dir / STATION_FILE
        self.config_file.write_text(yaml.safe_dump(self.cfg.model_dump(mode="json")))

    def commission(self) -> None:
        from inspector.store.db import open_store

        cfg = self.cfg
        held = freeze_heldout(cfg.jobs.base_data or "", cfg.data_dir, frozen_by="scenario")
        self.say(f"held-out set frozen: {len(held.items)} images of the base folder's test split")
        self.store = open_store(cfg)
        built = retrain.build_candidate(
            cfg,
            self.store,
            "commission",
            reason="commissioning (scenario)",
            say=lambda m: self.say(f"[cyan]commissioning[/] {m}"),
        )
        first = built["package"]
        gate = retrain.gate_of(first["path"])
        registry.register_candidate(self.store, first["version"], first["path"], first["sha256"], gate, "commissioning")
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
        self.summary.update(
            incumbent=self.v1, incumbent_task=first["task"], commissioning_gate_passed=bool(gate and gate.passed)
        )

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
            1 for s in self.line.sent.values() if s.phase == "after_change" and s.t <= first.ts
        )
        self.summary["drift_alarm_statistics"] = first.data.get("statistics") or first.data.get("statistic")
        self.say(
            f"[red]DRIFT_ALARM[/] after {self.summary['drift_alarm_after_frames']} changed frames "
            f"({self.seq - changed_at} sent so far)"
        )
        job = self.wait_job()
        self.promote(job)
        self.summary["drift_alarms"] = len(self.drift_alarms())
        self.summary["retrain_jobs"] = len(self.retrain_jobs())
        return self.summary

    def wait_job(self) -> dict[str, Any]:
        from rq.job import Job, JobStatus

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
                self.say(
                    f"retraining job {job.id[:8]}: {step}; labels so far {dict(self.qe.labelled) if self.qe else {}}"
                )
            return status is not None and status in (
                JobStatus.FINISHED,
                JobStatus.FAILED,
                JobStatus.STOPPED,
                JobStatus.CANCELED,
            )

        with self.console.status("[bold]retraining (RQ worker) while the line keeps running[/]"):
            deadline = time.monotonic() + self.size.job_wait_s
            self.run_line(self.size.training_fps, lambda: finished() or time.monotonic() > deadline)
        self.seconds["job"] = round(time.perf_counter() - t, 1)
        job = job_box.get("job")
        if job is None or job.get_status().value != "finished":
            detail = (job.latest_result().exc_string if job is not None and job.latest_result() else "") or ""
            raise ScenarioError(
                f"the retraining job did not finish ({job.get_status().value if job else 'none'})", detail[-2000:]
            )
        result: dict[str, Any] = job.return_value() or {}
        self.say(
            f"retraining job done in {self.seconds['job']} s: {result.get('version')} "
            f"{'gate PASS' if result.get('passed') else 'gate FAIL'}"
        )
        self.summary["job"] = {
            "id": job.id,
            "seconds": self.seconds["job"],
            "status": result.get("status"),
            "task": result.get("task"),
            "steps": {k: v.get("seconds") for k, v in job.meta.get("steps", {}).items()},
        }
        return result

    def promote(self, result: dict[str, Any]) -> None:

        version, path = result["version"], result["path"]
        gate = registry.gate_of(registry.get_version(self.store, version))
        self.summary["gate"] = {
            "passed": bool(gate and gate.passed),
            "primary": next((r.frame_set for r in gate.rows), None) if gate else None,
            "rows": [r.model_dump(mode="json") for r in gate.rows] if gate else [],
        }
        for r in gate.rows if gate else []:
            self.say(f"  gate {r.line()}")
        if not (gate and gate.passed):
            raise ScenarioError(
                f"the candidate {version} failed its gate: not promoted",
                "\n".join(r.line() for r in gate.failed) if gate else "no gate report",
            )
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
                raise ScenarioError(
                    f"the workers did not swap to {version} within 120 s", self.station.tail() if self.station else ""
                )
        swap_seq = self.seq
        self.phase = "after_promotion"
        with self.step("after_promotion", f"changed lighting, new model: {self.size.after_frames} parts"):
            self.run_line(self.size.fps, lambda: False, self.size.after_frames)
        self.summary.update(
            promoted=version,
            promoted_path=path,
            swap_frames=swap_seq - promote_seq,
            swap_s=round(time.perf_counter() - t, 1),
        )

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
                n = sum(
                    int(
                        s.scalar(
                            select(func.count())
                            .select_from(VerdictRow)
                            .where(VerdictRow.frame_id.in_(ids[k : k + 500]))
                        )
                        or 0
                    )
                    for k in range(0, len(ids), 500)
                )
            if n >= len(self.line.verdicts) or time.monotonic() > deadline:
                return n
            time.sleep(0.5)

    def finish(self) -> dict[str, Any]:
        line = self.line
        self.drain()
        time.sleep(self.cfg.line.deadline_ms / 1000 + self.cfg.line.reject_pulse_ms / 1000 + 0.5)
        plc = self.plc.snapshot()  # the line decided every part (PASS in time or reject) by now
        verdicts = list(line.verdicts.values())
        by_phase = {
            p: [v for v in verdicts if line.sent[v.frame_id].phase == p]
            for p in ("before_change", "after_change", "promotion", "after_promotion")
        }
        v2 = self.summary.get("promoted")
        dark = by_phase["after_change"] + by_phase["promotion"] + by_phase["after_promotion"]
        old_dark = [v for v in dark if v.model_version == self.v1]
        new_dark = [v for v in dark if v2 and v.model_version == v2]
        swap_window = by_phase["promotion"]
        before, after, promoted = rates(by_phase["before_change"]), rates(old_dark), rates(new_dark)
        s = self.summary
        s.update(
            frames=len(line.sent),
            verdicts=line.n_verdicts,
            recorded=self.recorded(),
            lost=line.missing(),
            duplicates=line.duplicates,
            errors=sum(v.decision is Decision.ERROR for v in verdicts),
            errors_during_swap=sum(v.decision is Decision.ERROR for v in swap_window),
            line_rejects=plc.rejects,
            line_parts=plc.parts,
            verdict_rejects=sum(v.reject for v in verdicts),
            recall_before_change=before["recall"],
            false_reject_rate_before_change=before["false_reject_rate"],
            recall_after_change=after["recall"],
            false_reject_rate_after_change=after["false_reject_rate"],
            recall_after_promotion=promoted["recall"],
            false_reject_rate_after_promotion=promoted["false_reject_rate"],
            phases={"before_change": before, "after_change_old_model": after, "after_promotion_new_model": promoted},
        )
        if self.qe is not None:
            s["labels"] = {"labelled": dict(self.qe.labelled), "skipped": self.qe.skipped, "errors": self.qe.errors[:5]}
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


def run_scenario(
    cfg: StationConfig, name: str, as_json: bool, console: Console | None = None, size: DriftScenario | None = None
) -> dict[str, Any]:
    """Play scenario ``name``; prints one JSON summary with ``as_json``. Raises ScenarioError when the loop
    did not complete (the summary so far is in the error's ``summary`` attribute)."""
    if name not in SCENARIOS:
        raise ScenarioError(f"unknown scenario {name!r}", f"known: {', '.join(SCENARIOS)}")
    console = console or Console(stderr=True)
    root = (Path(cfg.station.data_dir) / f"scenario-{name}").resolve()
    run = DriftRun(cfg, root, size or DriftScenario(), console)
    previous = (
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
        if threading.current_thread() is threading.main_thread()
        else None
    )
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
