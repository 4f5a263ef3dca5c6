"""Review requests: an operator (or the line's quality engineer) says a verdict is wrong and queues its frame
for review (:meth:`inspector.review.labelling.LabellingService.request_review` is the API). A frame not yet in
the queue gets an item built from its recorded verdict; an item already there gets the reason and the higher
priority, and is re-opened if it was labelled. The item and its audit row are one transaction."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from inspector.archive import Archive, normalise_ext
from inspector.contracts.messages import Decision, ReviewRequest, now
from inspector.contracts.statuses import ReviewStatus
from inspector.review.label_records import LabelError
from inspector.store.db import Store
from inspector.store.models import ReviewItemRow, VerdictRow
from inspector.store.records import review_item_row


def queue_review_request(
    store: Store,
    archive: Archive,
    frame_id: str,
    reason: str,
    user: str,
    priority: int,
    image: bytes | None = None,
    encoding: str = "png",
) -> int:
    """Queue ``frame_id`` for review on behalf of ``user`` (a checked name; ``priority`` within 0-100),
    archiving ``image`` first when given. Returns the item id."""
    sha, ext = (archive.put(image, encoding), normalise_ext(encoding)) if image is not None else (None, None)
    with store.session() as s:
        item = s.scalar(select(ReviewItemRow).where(ReviewItemRow.frame_id == frame_id).with_for_update())
        if item is None:
            item = _item_from_verdict(s, frame_id, reason, priority, sha, ext)
        else:
            _reopen(item, reason, priority, sha, ext)
        s.flush()
        store.audit.record(
            user,
            "review.request",
            f"frame:{frame_id}",
            None,
            {"reason": reason, "priority": priority},
            {"item_id": item.id},
            session=s,
        )
        return item.id


def _item_from_verdict(
    s: Session, frame_id: str, reason: str, priority: int, sha: str | None, ext: str | None
) -> ReviewItemRow:
    v = s.scalar(select(VerdictRow).where(VerdictRow.frame_id == frame_id))
    if v is None:
        raise LabelError(f"frame {frame_id} has no recorded verdict", "wait for the recorder, or check the id")
    req = ReviewRequest(
        station=v.station,
        frame_id=frame_id,
        part_id=v.part_id,
        camera=v.camera,
        reasons=[reason],
        priority=priority,
        image_sha256=sha,
        decision=Decision(v.decision),
        model_version=v.model_version,
        class_probs=v.class_probs,
        anomaly_score=v.anomaly_score,
        product=v.product,
    )
    item = ReviewItemRow(**review_item_row(req, ext, v.defect_class))
    s.add(item)
    return item


def _reopen(item: ReviewItemRow, reason: str, priority: int, sha: str | None, ext: str | None) -> None:
    item.reasons = [*item.reasons, reason] if reason not in item.reasons else list(item.reasons)
    item.priority = max(item.priority, priority)
    if item.image_sha256 is None and sha is not None:
        item.image_sha256, item.image_ext = sha, ext
    if item.status == ReviewStatus.LABELLED:
        item.status, item.leased_by, item.lease_expires = ReviewStatus.PENDING, None, None
    item.updated_at = now()
