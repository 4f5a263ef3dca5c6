"""What the labelling service hands out (``inspector.review.labelling``): review item views, label records,
dataset versions, and its one error."""

from __future__ import annotations

from dataclasses import dataclass, field

from inspector.contracts.errors import InspectorError
from inspector.contracts.statuses import ReviewStatus
from inspector.store.models import LabelRow, ReviewItemRow


class LabelError(InspectorError):
    """A label action was refused (not the lease holder, unknown item, invalid label)."""


@dataclass(frozen=True)
class ReviewItemView:
    """A review item: the frame, why it was queued, what the model said, and its lease."""

    id: int
    frame_id: str
    part_id: str
    camera: str
    priority: int
    reasons: list[str]
    decision: str
    defect_class: str | None
    class_probs: dict[str, float] | None
    anomaly_score: float | None
    model_version: str | None
    image_sha256: str | None
    created_at: float
    status: str = ReviewStatus.PENDING
    leased_by: str | None = None
    lease_expires: float | None = None


@dataclass(frozen=True)
class LabelRecord:
    """One label of a frame (history rows are kept: ``current`` / ``undone`` mark their state)."""

    id: int
    frame_id: str
    item_id: int | None
    label: str
    user: str
    note: str | None
    created_at: float
    current: bool
    undone: bool
    supersedes_id: int | None


@dataclass(frozen=True)
class DatasetVersion:
    """An exported labelled dataset: its content hash, counts per folder, layout, where, what was left out."""

    hash: str
    counts: dict[str, int]
    layout: str = "classification"
    path: str = ""
    files: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


def review_item_view(r: ReviewItemRow) -> ReviewItemView:
    """The row as the GUI and the CLI see it."""
    return ReviewItemView(
        r.id,
        r.frame_id,
        r.part_id,
        r.camera,
        r.priority,
        list(r.reasons),
        r.decision,
        r.defect_class,
        r.class_probs,
        r.anomaly_score,
        r.model_version,
        r.image_sha256,
        r.created_at,
        r.status,
        r.leased_by,
        r.lease_expires,
    )


def label_record(r: LabelRow) -> LabelRecord:
    """The row as the GUI and the CLI see it."""
    return LabelRecord(
        r.id, r.frame_id, r.item_id, r.label, r.user, r.note, r.created_at, r.is_current, r.undone, r.supersedes_id
    )
