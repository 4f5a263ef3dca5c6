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
from inspector.contracts.lifecycle import GateReport
from inspector.contracts.messages import Event
from inspector.store import Store
from jobs import (
    maintenance,
    registry,
)
from jobs.trigger import request_retrain as enqueue_retrain


@dataclass(frozen=True)
class JobRequest:
    kind: str  # "retrain" | "recalibrate"
    requested_by: str
    reason: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    created_at: float = field(default_factory=time.time)
    params: dict[str, Any] = field(default_factory=dict)


JobSubmitter = Callable[[StationConfig, JobRequest], str]


def _client(cfg: StationConfig):  # type: ignore[no-untyped-def]
    from inspector.bus.connection import resolve_url
    from inspector.line.health import fast_client

    return fast_client(cfg, resolve_url(cfg, start_embedded=False), timeout_s=5.0)


def _rq_submitter(cfg: StationConfig, job: JobRequest) -> str:
    """Default back-end: the RQ retraining queue (one job per station at a time, deduped)."""

    client = _client(cfg)
    try:
        result = enqueue_retrain(cfg, client, job.reason, source="gui", actor=job.requested_by,
                                 condition_changed=job.kind == "recalibrate")
    finally:
        client.close()
    return result.job_id or result.status


JOB_SUBMITTER: list[JobSubmitter] = [_rq_submitter]


def set_job_submitter(fn: JobSubmitter) -> None:
    """Replace the job back-end (tests, or another scheduler)."""
    JOB_SUBMITTER[0] = fn


def _publish_event(cfg: StationConfig, event: Event) -> None:
    from inspector.bus.streams import StationBus

    client = _client(cfg)
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
    """Queue a retraining job (deduped, one per station); audit ``retrain.request``. Returns the job id."""
    job = JobRequest("retrain", actor, reason)
    job_id = JOB_SUBMITTER[0](cfg, job)
    _audit(cfg, store, actor, "retrain.request", cfg.station.id, None, {"job_id": job_id}, asdict(job))
    return job_id


def camera_changed(cfg: StationConfig, actor: str, note: str, store: Store | None = None) -> str:
    """Camera or lighting changed: drift alarms are suppressed and frames under the new condition are collected
    (jobs.maintenance, audited there); once a person confirms them, a refit job sets the new threshold and
    drift reference. Returns the collection id."""

    client = _client(cfg)
    try:
        if store is not None:
            return str(maintenance.camera_changed(cfg, client, store, actor, note)["id"])
        from inspector.store import open_store

        with open_store(cfg) as own:
            return str(maintenance.camera_changed(cfg, client, own, actor, note)["id"])
    finally:
        client.close()


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


def approve_model(store: Store, actor: str, version: str, role: str = "maintenance") -> str:
    """A person who read every gate row approves a gated_pass version (the registry enforces the rules)."""
    return registry.approve(store, version, actor, role).value


def promote_model(store: Store, actor: str, version: str, cfg: StationConfig | None = None,
                  role: str = "maintenance") -> str | None:
    """Make ``version`` active through the registry (gate and approval enforced, verified package, audit row,
    workers hot-reload). A failed or missing gate is refused; the GUI offers no override (the CLI's --force)."""

    if cfg is None:
        raise InspectorError("promotion needs the station config", "call promote_model(store, actor, version, cfg)")
    client = _client(cfg)
    try:
        return registry.promote(cfg, client, store, version, actor, role=role)
    finally:
        client.close()


@dataclass(frozen=True)
class GateView:
    version: str
    status: str
    report: GateReport | None


def gate_of(store: Store, version: str) -> GateView:
    """The gate report of a version, for the maintenance view to show before anyone can approve."""
    row = registry.get_version(store, version)
    return GateView(version, row.status, registry.gate_of(row))


def rollback_model(store: Store, actor: str, cfg: StationConfig | None = None, role: str = "maintenance") -> str:
    """Re-activate the previous version through the registry (audited ``model.rollback``); returns it."""

    if cfg is None:
        raise InspectorError("rollback needs the station config", "call rollback_model(store, actor, cfg)")
    client = _client(cfg)
    try:
        return registry.rollback(cfg, client, store, actor, reason="GUI", role=role)
    finally:
        client.close()


# --------------------------------------------------------------------------- drift reference


@dataclass(frozen=True)
class ActiveReference:
    """The active model's version and parsed drift reference (None: no active model, or no reference)."""

    version: str | None
    reference: Any  # inspector.drift.reference.DriftReference | None
    note: str = ""


def active_reference(cfg: StationConfig, store: Store | None = None) -> ActiveReference:
    """The drift reference of the package the workers serve (DbWorker thread: Redis + disk I/O).

    Source: the ``active_model`` hash, exactly as ``DriftMonitor.refresh_model`` reads it, so the chart's bands
    are the reference the alarms are raised on; the store's active row is the fallback while Redis has no hash
    (a station that has not served yet)."""
    from inspector.drift.monitor import load_reference
    from inspector.store.records import active_model

    version = path = None
    client = _client(cfg)
    try:
        from inspector.contracts.names import Names

        raw = client.hgetall(Names(cfg.redis.prefix, cfg.station.id).active_model)
    finally:
        client.close()
    if raw.get(b"version") and raw.get(b"path"):
        version, path = raw[b"version"].decode(), raw[b"path"].decode()
    elif store is not None and (row := active_model(store)) is not None:
        version, path = row.version, row.package_path
    if path is None:
        return ActiveReference(None, None, "no active model")
    _manifest, ref = load_reference(path)
    if ref.empty:
        return ActiveReference(version, None, f"package {version} has no drift reference")
    return ActiveReference(version, ref)


# --------------------------------------------------------------------------- products and shadow mode


def line_product(cfg: StationConfig) -> str | None:
    """The product on the line now (None: the station makes one product)."""
    from inspector.products import current_product

    client = _client(cfg)
    try:
        return current_product(client, cfg)
    finally:
        client.close()


def change_over(cfg: StationConfig, store: Store, actor: str, product: str, role: str = "maintenance") -> str:
    """Switch the line to ``product`` (refused for a product the station does not make); audited."""
    from inspector.products import switch_product

    client = _client(cfg)
    try:
        previous = switch_product(cfg, client, store, product, actor, role, source="gui")
    finally:
        client.close()
    return f"{previous} -> {product}"


def start_shadow(cfg: StationConfig, store: Store, actor: str, version: str, role: str = "maintenance") -> str:
    """Judge live frames with ``version`` in shadow (registered, hash checked, never the active one); audited."""
    from inspector.shadow_cli import start_shadow as start

    client = _client(cfg)
    try:
        start(cfg, client, store, version, actor, role)
    finally:
        client.close()
    return version


def shadow_report(store: Store, version: str) -> Any:
    """How ``version`` judged live frames in shadow beside the active model (inspector.store.shadow.ShadowReport)."""
    from inspector.store.shadow import shadow_report as report

    return report(store, version, max_differences=20)
