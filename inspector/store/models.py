"""SQLAlchemy 2 models of the station's system of record.

Times are UTC epoch seconds (floats), the same unit as every message on the bus. JSON columns hold
plain JSON (dicts, lists, numbers, strings). The schema is created and upgraded only by the Alembic
migrations in ``inspector/store/migrations`` (``open_store`` migrates to head); a test checks that
these models and the migrations agree.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, MetaData, String, Text, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from inspector.contracts.statuses import ReviewStatus

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class VerdictRow(Base):
    __tablename__ = "verdicts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    frame_id: Mapped[str] = mapped_column(String(64), unique=True)
    station: Mapped[str] = mapped_column(String(64))
    camera: Mapped[str] = mapped_column(String(64))
    part_id: Mapped[str] = mapped_column(String(128), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    captured_at: Mapped[float] = mapped_column(Float, index=True)
    decided_at: Mapped[float] = mapped_column(Float)
    decision: Mapped[str] = mapped_column(String(8), index=True)
    reject: Mapped[bool] = mapped_column(Boolean)
    defect_class: Mapped[str | None] = mapped_column(String(64))
    reasons: Mapped[list[Any]] = mapped_column(JSON)
    class_probs: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    anomaly_score: Mapped[float | None] = mapped_column(Float)
    anomaly_raw: Mapped[float | None] = mapped_column(Float)
    model_version: Mapped[str | None] = mapped_column(String(128), index=True)
    worker: Mapped[str | None] = mapped_column(String(128))
    latency_ms: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    truth: Mapped[str | None] = mapped_column(String(64))
    product: Mapped[str | None] = mapped_column(String(64), index=True)  # 0004: the frame's product


class ReviewItemRow(Base):
    __tablename__ = "review_items"
    __table_args__ = (Index("ix_review_items_queue", "status", "priority", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    frame_id: Mapped[str] = mapped_column(String(64), unique=True)
    station: Mapped[str] = mapped_column(String(64))
    camera: Mapped[str] = mapped_column(String(64))
    part_id: Mapped[str] = mapped_column(String(128), index=True)
    priority: Mapped[int] = mapped_column(Integer)
    reasons: Mapped[list[Any]] = mapped_column(JSON)
    decision: Mapped[str] = mapped_column(String(8))
    defect_class: Mapped[str | None] = mapped_column(String(64))
    class_probs: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    anomaly_score: Mapped[float | None] = mapped_column(Float)
    model_version: Mapped[str | None] = mapped_column(String(128))
    image_sha256: Mapped[str | None] = mapped_column(String(64))
    image_ext: Mapped[str | None] = mapped_column(String(8))
    product: Mapped[str | None] = mapped_column(String(64), index=True)  # 0006: each product has its own queue
    status: Mapped[str] = mapped_column(String(16), default=ReviewStatus.PENDING)  # a ReviewStatus value
    leased_by: Mapped[str | None] = mapped_column(String(128))
    lease_expires: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class ReviewSkipRow(Base):
    """A labeller skipped an item: it is not offered to that labeller again."""

    __tablename__ = "review_skips"

    item_id: Mapped[int] = mapped_column(ForeignKey("review_items.id", ondelete="CASCADE"), primary_key=True)
    user: Mapped[str] = mapped_column(String(128), primary_key=True)
    at: Mapped[float] = mapped_column(Float)


class LabelRow(Base):
    """One label of a frame. Relabelling adds a row and clears ``current`` on the old one (history kept)."""

    __tablename__ = "labels"
    __table_args__ = (
        Index(
            "uq_labels_current_frame",
            "frame_id",
            unique=True,
            sqlite_where=text("is_current = 1"),
            postgresql_where=text("is_current"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    frame_id: Mapped[str] = mapped_column(String(64), index=True)
    item_id: Mapped[int | None] = mapped_column(ForeignKey("review_items.id"))
    label: Mapped[str] = mapped_column(String(64), index=True)
    user: Mapped[str] = mapped_column(String(128), index=True)
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float, index=True)
    is_current: Mapped[bool] = mapped_column(Boolean)
    undone: Mapped[bool] = mapped_column(Boolean, default=False)
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("labels.id"))


class ModelVersionRow(Base):
    __tablename__ = "model_versions"

    version: Mapped[str] = mapped_column(String(128), primary_key=True)
    package_path: Mapped[str] = mapped_column(Text)
    package_sha256: Mapped[str] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), index=True)  # a ModelStatus value
    created_at: Mapped[float] = mapped_column(Float)
    promoted_at: Mapped[float | None] = mapped_column(Float)


class AuditRow(Base):
    """Append-only, hash-chained: ``hash = sha256(prev_hash + canonical JSON of the row)``."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    seq: Mapped[int] = mapped_column(Integer, unique=True)
    ts: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(256))
    old: Mapped[Any] = mapped_column(JSON, nullable=True)
    new: Mapped[Any] = mapped_column(JSON, nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    mac: Mapped[str | None] = mapped_column(String(64), nullable=True)  # HMAC-SHA256 of hash, station key (0002)


class AuditHeadRow(Base):
    """One row: the chain head, written in the transaction of every append, signed with the station key."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    store_id: Mapped[str] = mapped_column(String(32))
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str | None] = mapped_column(String(64), nullable=True)


class DriftAlarmRow(Base):
    __tablename__ = "drift_alarms"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    station: Mapped[str] = mapped_column(String(64))
    ts: Mapped[float] = mapped_column(Float, index=True)
    statistic: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)


class DatasetVersionRow(Base):
    __tablename__ = "dataset_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    layout: Mapped[str] = mapped_column(String(32))
    counts: Mapped[dict[str, Any]] = mapped_column(JSON)
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)


class ShadowVerdictRow(Base):
    """What a shadow candidate said of a live frame (``inspector shadow run``): never sent to the line. The
    active model's verdict of the same frame is the ``verdicts`` row with this ``frame_id``."""

    __tablename__ = "shadow_verdicts"
    __table_args__ = (UniqueConstraint("version", "frame_id", name="uq_shadow_verdicts_version_frame_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    version: Mapped[str] = mapped_column(String(128), index=True)
    frame_id: Mapped[str] = mapped_column(String(64), index=True)
    part_id: Mapped[str] = mapped_column(String(128))
    camera: Mapped[str] = mapped_column(String(64))
    captured_at: Mapped[float] = mapped_column(Float, index=True)
    decided_at: Mapped[float] = mapped_column(Float)
    decision: Mapped[str] = mapped_column(String(8))
    reject: Mapped[bool] = mapped_column(Boolean)
    defect_class: Mapped[str | None] = mapped_column(String(64))
    anomaly_score: Mapped[float | None] = mapped_column(Float)
    infer_ms: Mapped[float | None] = mapped_column(Float)  # the candidate's model time per frame (batch share)
    latency_ms: Mapped[float | None] = mapped_column(Float)  # capture to the shadow decision
    error: Mapped[str | None] = mapped_column(Text)
    image_sha256: Mapped[str | None] = mapped_column(String(64))  # archived when it differs from the active verdict
    image_ext: Mapped[str | None] = mapped_column(String(8))


class PartVerdictRow(Base):
    """The line's one verdict of a part seen by several views (parts.views), with every view's result; the
    views' own verdicts are the ``verdicts`` rows with this ``part_id``."""

    __tablename__ = "part_verdicts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    part_id: Mapped[str] = mapped_column(String(128), unique=True)
    station: Mapped[str] = mapped_column(String(64))
    captured_at: Mapped[float] = mapped_column(Float, index=True)
    decided_at: Mapped[float] = mapped_column(Float)
    decision: Mapped[str] = mapped_column(String(8), index=True)
    reject: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(String(32))
    failed_view: Mapped[str | None] = mapped_column(String(64))
    defect_class: Mapped[str | None] = mapped_column(String(64))
    reasons: Mapped[list[Any]] = mapped_column(JSON)
    views: Mapped[dict[str, Any]] = mapped_column(JSON)  # view -> {frame_id, decision, defect_class, model_version}
    missing: Mapped[list[Any]] = mapped_column(JSON)  # views with no verdict by the deadline
    product: Mapped[str | None] = mapped_column(String(64))
