"""The retraining job: RQ glue around ``trainer.retrain``, with progress in ``job.meta`` and audit rows.

snapshot -> train (fit, export, INT8 gate) -> evaluate (candidate and incumbent, same frames; the gate)
-> package (manifest written once) -> register (status gated_pass / gated_fail from the gate) -> promote
(only when ``jobs.auto_promote`` is on and the gate passed) -> lock released.

Run by an RQ worker with the JSON serializer; arguments are plain JSON. Each step records
``meta.steps[<step>] = {status, seconds, info}`` and an audit row ``retrain.<step>``; long steps report
progress lines in ``meta.message`` (and the last ones in ``meta.log``). A failing step publishes a critical
``JOB`` event naming the step and the error, records ``retrain.failed`` and re-raises, so RQ retries the job
(``rq.Retry``) or moves it to the failed registry: never lost, never half-promoted.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from typing import Any

from rq import get_current_job
from rq.job import Job

from inspector.bus.streams import StationBus
from inspector.contracts.config import StationConfig
from inspector.contracts.messages import Event, EventType
from inspector.contracts.statuses import PipelineStepStatus
from inspector.store.db import Store, open_store
from jobs import registry, steps
from jobs.queues import worker_config
from jobs.trigger import release_lock

log = logging.getLogger(__name__)

STEPS = ("snapshot", "train", "evaluate", "package", "register", "promote")
LOG_LINES = 40
ACTOR = "retrain-job"


class Run:
    """One execution of the pipeline: its job, config, store and bus, and the step bookkeeping."""

    def __init__(self, job: Job, cfg: StationConfig, store: Store) -> None:
        self.job, self.cfg, self.store = job, cfg, store
        self.bus = StationBus(job.connection, cfg)
        self.job.meta.setdefault("steps", {})
        self.job.meta["attempt"] = int(self.job.meta.get("attempt", 0)) + 1

    def step(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        self._meta(step=name, progress=STEPS.index(name) / len(STEPS))
        self.job.meta["steps"][name] = {"status": PipelineStepStatus.RUNNING, "started": time.time()}
        self.job.save_meta()
        t0 = time.perf_counter()
        try:
            info = fn()
        except Exception as err:
            self._failed(name, err)
            raise
        secs = round(time.perf_counter() - t0, 2)
        self.job.meta["steps"][name] = {"status": PipelineStepStatus.DONE, "seconds": secs, "info": _brief(info)}
        self.job.save_meta()
        self.store.audit.record(ACTOR, f"retrain.{name}", self.job.id, None, _brief(info), {"seconds": secs})
        return info

    def progress(self, message: str) -> None:
        """A progress line of the running step (``meta.message``; the last ``LOG_LINES`` in ``meta.log``)."""
        log.info("job %s: %s", self.job.id, message)
        lines = [*self.job.meta.get("log", []), f"{time.strftime('%H:%M:%S')} {message}"][-LOG_LINES:]
        self._meta(message=message, log=lines)
        self.job.save_meta()

    def _meta(self, **kw: Any) -> None:
        self.job.meta.update(kw)

    def _failed(self, name: str, err: Exception) -> None:
        msg = f"{type(err).__name__}: {err}"
        self.job.meta["steps"][name] = {"status": PipelineStepStatus.FAILED, "error": msg}
        self._meta(step=name, error=msg)
        self.job.save_meta()
        self.event(
            "critical",
            f"retraining failed at step {name}: {msg}",
            step=name,
            error=msg,
            traceback=traceback.format_exc()[-2000:],
        )
        try:
            self.store.audit.record(ACTOR, "retrain.failed", self.job.id, None, {"step": name, "error": msg})
        except Exception:  # noqa: BLE001 - the event above already surfaced the failure
            log.exception("could not audit the failure")

    def event(self, severity: str, message: str, **data: Any) -> None:
        self.bus.publish_event(
            Event(
                station=self.cfg.station.id,
                type=EventType.JOB,
                severity=severity,  # type: ignore[arg-type]
                message=message,
                data={"job_id": self.job.id, **data},
            )
        )


def _brief(info: dict[str, Any]) -> dict[str, Any]:
    """Step info without the long item lists (those live in the package's manifest)."""
    return {k: v for k, v in info.items() if not isinstance(v, list)}


def retrain(
    station: str, reason: str, source: str = "manual", actor: str = "system", condition_changed: bool = False
) -> dict[str, Any]:
    """RQ entry point of one retraining of ``station``."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("retrain runs inside an RQ job")
    cfg = worker_config(station)
    store = open_store(cfg)
    try:
        return _retrain(Run(job, cfg, store), reason, source, actor, condition_changed)
    except Exception:
        if not job.retries_left:  # no retry will follow: the station is free again
            release_lock(job.connection, cfg, job.id)
        raise
    finally:
        store.close()


def _retrain(run: Run, reason: str, source: str, actor: str, condition_changed: bool) -> dict[str, Any]:
    cfg, job, say = run.cfg, run.job, run.progress
    stage = steps.staging_dir(cfg, job.id)
    steps.models_dir(cfg).mkdir(parents=True, exist_ok=True)
    steps.sweep_staging(cfg, keep="")  # an earlier attempt's half-built folder is thrown away
    run.store.audit.record(
        actor,
        "retrain.started",
        job.id,
        None,
        {"reason": reason, "source": source},
        {"attempt": job.meta["attempt"], "condition_changed": condition_changed},
    )
    run.event("info", f"retraining started: {reason}", step="started")
    inc = steps.incumbent_of(run.store)
    run.step("snapshot", lambda: steps.snapshot(cfg, run.store, stage, inc, condition_changed, say))
    run.step("train", lambda: steps.train(cfg, stage, inc, say))
    run.step("evaluate", lambda: steps.evaluate(cfg, stage, inc, say))
    pkg = run.step("package", lambda: steps.package(cfg, stage, job.id, reason, say))
    reg = run.step("register", lambda: _register(run, pkg))
    promoted = run.step(
        "promote",
        lambda: {
            "promoted": registry.auto_promote(
                cfg,
                job.connection,
                run.store,
                pkg["version"],
                ACTOR,
                details={"job_id": job.id, "reason": reason, "incumbent": inc.version},
            )
        },
    )["promoted"]
    result = {
        "passed": reg["passed"],
        "promoted": promoted,
        "status": reg["status"],
        "failed_rows": reg["failed_rows"],
        "task": pkg["task"],
    }
    run._meta(step="done", progress=1.0, version=pkg["version"], promoted=promoted)
    job.save_meta()
    release_lock(job.connection, cfg, job.id)
    run.event(
        "info",
        f"retraining finished: {pkg['version']} "
        f"{'promoted' if promoted else 'waits for approval' if reg['passed'] else 'rejected by the gate'}",
        step="done",
        version=pkg["version"],
        **result,
    )
    return {"version": pkg["version"], "path": pkg["path"], **result}


def _register(run: Run, pkg: dict[str, Any]) -> dict[str, Any]:
    """Register the candidate with the gate its manifest carries; the registry sets gated_pass / gated_fail."""
    from trainer.retrain import gate_of

    gate = gate_of(pkg["path"])
    status = registry.register_candidate(
        run.store,
        pkg["version"],
        pkg["path"],
        pkg["sha256"],
        gate,
        ACTOR,
        metrics={"task": pkg["task"], "checklist_failed": pkg["checklist_failed"]},
    )
    return {
        "status": str(status),
        "passed": bool(gate and gate.passed),
        "failed_rows": [r.line() for r in gate.failed] if gate else [],
    }
