"""Maintenance and model actions behind one small adapter, so the views never know the job back-end.

Each action is signed by the person (``actor``), written to the audit trail, and handed to the job
back-end through :data:`JOB_SUBMITTER`. Until the RQ jobs package is wired (``set_job_submitter``), the
default submitter announces the job as a ``job`` event on the station's events stream, which is also how
job progress reaches the maintenance view (events with ``data = {job_id, kind, status, step, progress}``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from inspector.contracts.config import StationConfig
from inspector.contracts.errors import InspectorError
from inspector.contracts.messages import Event, EventType
from inspector.store import Store


@dataclass(frozen=True)
class JobRequest:
    kind: str  # "retrain" | "recalibrate"
    requested_by: str
    reason: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    created_at: float = field(default_factory=time.time)
    params: dict[str, Any] = field(default_factory=dict)


JobSubmitter = Callable[[StationConfig, JobRequest], str]


def _events_submitter(cfg: StationConfig, job: JobRequest) -> str:
    """Default back-end: a ``job`` event (status queued) on the events stream; returns the job id."""
    _publish_event(cfg, Event(station=cfg.station.id, type=EventType.JOB, message=f"{job.kind} requested by {job.requested_by}",
                              data={"job_id": job.id, "kind": job.kind, "status": "queued", "step": "queued",
                                    "progress": 0.0, "requested_by": job.requested_by, "reason": job.reason}))
    return job.id


JOB_SUBMITTER: list[JobSubmitter] = [_events_submitter]


def set_job_submitter(fn: JobSubmitter) -> None:
    """Point the GUI's job requests at the real jobs API (``jobs`` package, RQ queue ``training``)."""
    JOB_SUBMITTER[0] = fn


def _publish_event(cfg: StationConfig, event: Event) -> None:
    from inspector.bus.connection import resolve_url
    from inspector.bus.streams import StationBus
    from inspector.line.health import fast_client

    client = fast_client(cfg, resolve_url(cfg, start_embedded=False), timeout_s=2.0)
    try:
        StationBus(client, cfg).publish_event(event)
    finally:
        client.close()


# --------------------------------------------------------------------------- maintenance


def _audit(cfg: StationConfig, store: Store | None, *args: Any) -> None:
    if store is not None:
        store.audit.record(*args)
        return
    from inspector.store import open_store

    with open_store(cfg) as own:
        own.audit.record(*args)


def request_retrain(cfg: StationConfig, actor: str, reason: str, store: Store | None = None) -> str:
    """Queue a retraining job; audit ``retrain.request``. Returns the job id."""
    job = JobRequest("retrain", actor, reason)
    job_id = JOB_SUBMITTER[0](cfg, job)
    _audit(cfg, store, actor, "retrain.request", cfg.station.id, None, {"job_id": job_id}, asdict(job))
    return job_id


def camera_changed(cfg: StationConfig, actor: str, note: str, store: Store | None = None) -> str:
    """Camera or lighting changed: announce it (drift references restart), queue a recalibration job, audit it."""
    job = JobRequest("recalibrate", actor, note, params={"camera": cfg.camera.id})
    _publish_event(cfg, Event(station=cfg.station.id, type=EventType.MAINTENANCE, severity="warning",
                              camera=cfg.camera.id, message=f"camera or lighting changed: {note}",
                              data={"action": "camera_changed", "by": actor, "job_id": job.id}))
    job_id = JOB_SUBMITTER[0](cfg, job)
    _audit(cfg, store, actor, "camera.changed", cfg.camera.id, None, {"job_id": job_id, "note": note}, asdict(job))
    return job_id


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelView:
    version: str
    status: str
    created_at: float
    promoted_at: float | None
    metrics: dict[str, Any]


def list_models(store: Store) -> list[ModelView]:
    from inspector.store import records

    return [ModelView(r.version, r.status, r.created_at, r.promoted_at, dict(r.metrics or {}))
            for r in records.list_models(store)]


def approve_model(store: Store, actor: str, version: str) -> None:
    """A person approves a candidate for promotion (gate: ``jobs.auto_promote`` off)."""
    from inspector.store.models import ModelVersionRow

    with store.session() as s:
        row = s.get(ModelVersionRow, version)
        if row is None:
            raise InspectorError(f"model version {version} is not registered", "refresh the list of models")
        old = row.status
        if old == "candidate":
            row.status = "approved"
        store.audit.record(actor, "model.approve", version, {"status": old}, {"status": row.status}, session=s)


def promote_model(store: Store, actor: str, version: str) -> str | None:
    """Make ``version`` active (audited ``model.promote``); returns the previous active version."""
    from inspector.store import records

    return records.promote_model(store, version, actor)


def rollback_model(store: Store, actor: str) -> str:
    """Re-activate the most recently retired version (audited ``model.rollback``); returns it."""
    from inspector.store import records

    retired = [m for m in list_models(store) if m.status == "retired" and m.promoted_at]
    if not retired:
        raise InspectorError("no earlier model version to roll back to", "promote a version instead")
    target = max(retired, key=lambda m: m.promoted_at or 0.0).version
    records.promote_model(store, target, actor, action="model.rollback")
    return target
