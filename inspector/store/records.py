"""Writes and reads of verdicts, review items, the model registry and drift alarms.

Every insert keyed by a frame id is idempotent (``INSERT .. ON CONFLICT DO NOTHING`` on both SQLite
and PostgreSQL), so at-least-once delivery from Redis gives exactly one row per frame.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Insert, Table, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from inspector.contracts.errors import InspectorError
from inspector.contracts.lifecycle import ModelStatus
from inspector.contracts.messages import ReviewRequest, Verdict, now
from inspector.contracts.statuses import ReviewStatus
from inspector.store.db import Store
from inspector.store.models import DriftAlarmRow, ModelVersionRow, ReviewItemRow, VerdictRow

VERDICT_TABLE: Table = VerdictRow.__table__  # type: ignore[assignment]
REVIEW_TABLE: Table = ReviewItemRow.__table__  # type: ignore[assignment]


def insert_ignore(s: Session, table: Table | Any, *keys: str) -> Insert:
    """``INSERT .. ON CONFLICT (keys) DO NOTHING`` for the session's dialect."""
    dialect = s.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(table).on_conflict_do_nothing(index_elements=list(keys))


def verdict_row(v: Verdict, station: str | None = None) -> dict[str, Any]:
    return {
        "frame_id": v.frame_id,
        "station": station or v.station,
        "camera": v.camera,
        "part_id": v.part_id,
        "seq": v.seq,
        "captured_at": v.captured_at,
        "decided_at": v.ts,
        "decision": v.decision.value,
        "reject": v.reject,
        "defect_class": v.defect_class,
        "reasons": list(v.reasons),
        "class_probs": v.class_probs,
        "anomaly_score": v.anomaly_score,
        "anomaly_raw": v.anomaly_raw,
        "model_version": v.model_version,
        "worker": v.worker,
        "latency_ms": v.latency_ms,
        "error": v.error,
        "truth": v.truth,
        "product": v.product,
    }


def insert_verdicts(s: Session, verdicts: Sequence[Verdict]) -> int:
    """Insert in the caller's transaction; returns how many were new (duplicates by frame id are ignored)."""
    if not verdicts:
        return 0
    rows = list({v.frame_id: verdict_row(v) for v in verdicts}.values())
    result = s.execute(insert_ignore(s, VERDICT_TABLE, "frame_id"), rows)
    return max(result.rowcount, 0) if result.rowcount is not None else 0


def record_verdicts(store: Store, verdicts: Iterable[Verdict]) -> int:
    with store.session() as s:
        return insert_verdicts(s, list(verdicts))


def review_item_row(
    req: ReviewRequest, image_ext: str | None = None, defect_class: str | None = None
) -> dict[str, Any]:
    t = now()
    return {
        "frame_id": req.frame_id,
        "station": req.station,
        "camera": req.camera,
        "part_id": req.part_id,
        "priority": req.priority,
        "reasons": list(req.reasons),
        "decision": req.decision.value,
        "defect_class": defect_class,
        "class_probs": req.class_probs,
        "anomaly_score": req.anomaly_score,
        "model_version": req.model_version,
        "image_sha256": req.image_sha256,
        "image_ext": image_ext,
        "product": req.product,
        "status": ReviewStatus.PENDING,
        "leased_by": None,
        "lease_expires": None,
        "created_at": req.ts,
        "updated_at": t,
    }


def add_review_item(
    store: Store, req: ReviewRequest, image_ext: str | None = None, defect_class: str | None = None
) -> int:
    """Insert a pending review item (idempotent by frame id); returns its id."""
    with store.session() as s:
        s.execute(insert_ignore(s, REVIEW_TABLE, "frame_id"), [review_item_row(req, image_ext, defect_class)])
        return int(s.scalar(select(ReviewItemRow.id).where(ReviewItemRow.frame_id == req.frame_id)))


def verdicts_for_part(store: Store, part_id: str) -> list[VerdictRow]:
    with store.session() as s:
        q = select(VerdictRow).where(VerdictRow.part_id == part_id).order_by(VerdictRow.captured_at)
        return list(s.scalars(q))


def get_verdict(store: Store, frame_id: str) -> VerdictRow | None:
    with store.session() as s:
        return s.scalar(select(VerdictRow).where(VerdictRow.frame_id == frame_id))


# -- model registry ------------------------------------------------------------------------------


def register_model(
    store: Store,
    version: str,
    package_path: str,
    package_sha256: str,
    metrics: dict[str, Any] | None = None,
    actor: str = "system",
    status: ModelStatus = ModelStatus.CANDIDATE,
) -> None:
    """Add a model version (idempotent for the same version and hash) with its lifecycle status."""
    with store.session() as s:
        row = s.get(ModelVersionRow, version)
        if row is not None:
            if row.package_sha256 != package_sha256:
                raise InspectorError(
                    f"model version {version} is already registered with another package hash",
                    "give the new package a new version",
                )
            return
        s.add(
            ModelVersionRow(
                version=version,
                package_path=package_path,
                package_sha256=package_sha256,
                metrics=metrics or {},
                status=status.value,
                created_at=now(),
            )
        )
        store.audit.record(
            actor,
            "model.register",
            version,
            None,
            {"package_sha256": package_sha256, "path": package_path, "status": status.value},
            {"metrics": metrics or {}},
            session=s,
        )


def set_model_status(
    store: Store, version: str, status: ModelStatus, actor: str, action: str, details: dict[str, Any] | None = None
) -> ModelStatus:
    """Move a version to ``status`` (audited with its old status); returns the old status."""
    with store.session() as s:
        row = s.get(ModelVersionRow, version)
        if row is None:
            raise InspectorError(f"model version {version} is not registered", "register the package first")
        old = ModelStatus(row.status)
        row.status = status.value
        store.audit.record(
            actor, action, version, {"status": old.value}, {"status": status.value}, details or {}, session=s
        )
        return old


def promote_model(
    store: Store, version: str, actor: str, action: str = "model.promote", details: dict[str, Any] | None = None
) -> str | None:
    """Make ``version`` the active model (the previous active one is retired); returns the previous version."""
    with store.session() as s:
        row = s.get(ModelVersionRow, version)
        if row is None:
            raise InspectorError(f"model version {version} is not registered", "register the package first")
        active = ModelStatus.ACTIVE.value
        previous = s.scalar(select(ModelVersionRow.version).where(ModelVersionRow.status == active))
        s.execute(
            update(ModelVersionRow).where(ModelVersionRow.status == active).values(status=ModelStatus.RETIRED.value)
        )
        row.status, row.promoted_at = active, now()
        store.audit.record(actor, action, version, {"active": previous}, {"active": version}, details or {}, session=s)
        return previous


def active_model(store: Store) -> ModelVersionRow | None:
    with store.session() as s:
        return s.scalar(select(ModelVersionRow).where(ModelVersionRow.status == ModelStatus.ACTIVE.value))


def list_models(store: Store) -> list[ModelVersionRow]:
    with store.session() as s:
        return list(s.scalars(select(ModelVersionRow).order_by(ModelVersionRow.created_at.desc())))


def record_drift_alarm(
    store: Store,
    station: str,
    statistic: str,
    value: float,
    threshold: float,
    details: dict[str, Any] | None = None,
    ts: float | None = None,
) -> int:
    with store.session() as s:
        row = DriftAlarmRow(
            station=station,
            ts=ts or now(),
            statistic=statistic,
            value=value,
            threshold=threshold,
            details=details or {},
        )
        s.add(row)
        s.flush()
        store.audit.record(
            "drift-monitor",
            "drift.alarm",
            station,
            None,
            {"statistic": statistic, "value": value, "threshold": threshold},
            details or {},
            session=s,
        )
        return row.id
