"""The labelling service: the one API behind the quality-engineer GUI view and the ``inspector review`` CLI.

Queue semantics
  * ``lease_next(user)`` hands the highest-priority, oldest pending item to one labeller for ``lease_s``
    seconds (a user who already holds a live lease gets that item again). Two labellers never get the same
    item: PostgreSQL uses ``SELECT .. FOR UPDATE SKIP LOCKED``; SQLite a conditional ``UPDATE .. WHERE
    status = 'pending' OR lease expired`` inside a ``BEGIN IMMEDIATE`` transaction. An expired lease
    returns the item to the queue.
  * ``label`` (only the lease holder), ``skip`` (back to the queue, never offered to that user again),
    ``undo_last``, ``relabel`` (the old label is kept: history rows are never deleted, only marked
    not current / undone), ``request_review`` (an operator marks a verdict wrong;
    :mod:`inspector.review.review_requests`).
  * Every label change and its audit row are ONE transaction: a process killed mid-submit leaves no partial
    label. Images are archived (content-addressed) before any item points at them, never by a label.

Labels are ``good``, ``unsure``, or a defect class name (``[A-Za-z0-9_.-]``, 1–64 chars, also the folder
name on export; pass ``classes=`` to restrict them to the model's classes).
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, true, update
from sqlalchemy.orm import Session

from inspector.archive import Archive
from inspector.contracts.labels import GOOD_LABEL, UNSURE_LABEL
from inspector.contracts.messages import now
from inspector.contracts.statuses import ReviewStatus
from inspector.review import dataset_export
from inspector.review.dataset_export import LAYOUTS
from inspector.review.label_records import (
    DatasetVersion,
    LabelError,
    LabelRecord,
    ReviewItemView,
    label_record,
    review_item_view,
)
from inspector.review.review_requests import queue_review_request
from inspector.store.db import Store
from inspector.store.models import LabelRow, ReviewItemRow, ReviewSkipRow, VerdictRow
from inspector.store.records import insert_ignore

__all__ = [
    "LABEL_RE",
    "LAYOUTS",
    "DatasetVersion",
    "LabelError",
    "LabelRecord",
    "LabellingService",
    "ReviewItemView",
    "_view",
]

LABEL_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_view = review_item_view  # the name inspector.review.open_queue imports


def _check_user(user: str) -> str:
    if not user or not user.strip() or len(user) > 128:
        raise LabelError(f"invalid user name {user!r}", "give the labeller's name (1-128 characters)")
    return user.strip()


class LabellingService:
    """The review queue, the labels and the dataset export of one store (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        archive: Archive,
        lease_s: float = 300.0,
        classes: set[str] | None = None,
        product: str | None = None,
    ) -> None:
        self.store, self.archive, self.lease_s = store, archive, lease_s
        self.product = product  # set: this product's queue and labelled frames only (None: every product)
        self.classes = None if classes is None else set(classes) | {GOOD_LABEL, UNSURE_LABEL}

    # -- queue -----------------------------------------------------------------------------------

    def check_label(self, label: str) -> str:
        if not LABEL_RE.match(label or ""):
            raise LabelError(f"invalid label {label!r}", "use 'good', 'unsure' or a defect class name ([A-Za-z0-9_.-])")
        if self.classes is not None and label not in self.classes:
            raise LabelError(f"unknown label {label!r}", f"use one of {', '.join(sorted(self.classes))}")
        return label

    def _available(self, user: str, t: float) -> Any:
        skipped = exists().where(and_(ReviewSkipRow.item_id == ReviewItemRow.id, ReviewSkipRow.user == user))
        expired = and_(ReviewItemRow.status == ReviewStatus.LEASED, ReviewItemRow.lease_expires < t)
        mine = ReviewItemRow.product == self.product if self.product is not None else true()
        return and_(or_(ReviewItemRow.status == ReviewStatus.PENDING, expired), ~skipped, mine)

    def lease_next(self, user: str) -> ReviewItemView | None:
        """The next item for ``user`` (held for lease_s), or None when the queue is empty for them."""
        user = _check_user(user)
        with self.store.session() as s:
            t = now()
            held = s.scalar(
                select(ReviewItemRow)
                .where(
                    ReviewItemRow.status == ReviewStatus.LEASED,
                    ReviewItemRow.leased_by == user,
                    ReviewItemRow.lease_expires >= t,
                )
                .order_by(ReviewItemRow.priority.desc(), ReviewItemRow.created_at)
                .limit(1)
            )
            if held is not None:
                return review_item_view(held)
            for _ in range(20):
                item_id = s.scalar(
                    select(ReviewItemRow.id)
                    .where(self._available(user, t))
                    .order_by(
                        ReviewItemRow.priority.desc(),
                        ReviewItemRow.created_at,
                        ReviewItemRow.id,
                    )
                    .limit(1)
                    .with_for_update(skip_locked=True)
                )
                if item_id is None:
                    return None
                if self._take(s, item_id, user, t):
                    return review_item_view(s.get_one(ReviewItemRow, item_id, populate_existing=True))
        return None

    def _take(self, s: Session, item_id: int, user: str, t: float) -> bool:
        """Conditional UPDATE: succeeds only if the item is still free (the SQLite path relies on this)."""
        res = s.execute(
            update(ReviewItemRow)
            .where(ReviewItemRow.id == item_id, self._available(user, t))
            .values(
                status=ReviewStatus.LEASED,
                leased_by=user,
                lease_expires=t + self.lease_s,
                updated_at=t,
            )
            .execution_options(synchronize_session=False)
        )
        return res.rowcount == 1

    def skip(self, item_id: int, user: str) -> None:
        """Give the item back to the queue; it is not offered to ``user`` again."""
        user = _check_user(user)
        with self.store.session() as s:
            self._release_held(s, item_id, user, status=ReviewStatus.PENDING)
            s.execute(
                insert_ignore(s, ReviewSkipRow.__table__, "item_id", "user"),
                [{"item_id": item_id, "user": user, "at": now()}],
            )

    def _release_held(self, s: Session, item_id: int, user: str, status: str) -> ReviewItemRow:
        t = now()
        res = s.execute(
            update(ReviewItemRow)
            .where(
                ReviewItemRow.id == item_id,
                ReviewItemRow.status == ReviewStatus.LEASED,
                ReviewItemRow.leased_by == user,
            )
            .values(
                status=status,
                leased_by=user if status == ReviewStatus.LABELLED else None,
                lease_expires=None,
                updated_at=t,
            )
            .execution_options(synchronize_session=False)
        )
        if res.rowcount != 1:
            item = s.get(ReviewItemRow, item_id)
            if item is None:
                raise LabelError(f"review item {item_id} does not exist", "lease an item with `next` first")
            raise LabelError(
                f"review item {item_id} is not leased by {user} (status {item.status}, holder {item.leased_by})",
                "lease the item again with `next`",
            )
        return s.get_one(ReviewItemRow, item_id, populate_existing=True)

    # -- labels ----------------------------------------------------------------------------------

    def label(self, item_id: int, user: str, label: str, note: str | None = None) -> LabelRecord:
        """Label a leased item (only by its lease holder). Label, item status and audit row: one transaction."""
        user, label = _check_user(user), self.check_label(label)
        with self.store.session() as s:
            item = self._release_held(s, item_id, user, status=ReviewStatus.LABELLED)
            return self._write_label(s, item.frame_id, item.id, user, label, note, action="label")

    def _write_label(
        self, s: Session, frame_id: str, item_id: int | None, user: str, label: str, note: str | None, action: str
    ) -> LabelRecord:
        prev = s.scalar(
            select(LabelRow).where(LabelRow.frame_id == frame_id, LabelRow.is_current.is_(True)).with_for_update()
        )
        if prev is not None:
            prev.is_current = False
            s.flush()
        row = LabelRow(
            frame_id=frame_id,
            item_id=item_id,
            label=label,
            user=user,
            note=note,
            created_at=now(),
            is_current=True,
            undone=False,
            supersedes_id=prev.id if prev else None,
        )
        s.add(row)
        s.flush()
        self.store.audit.record(
            user,
            action,
            f"frame:{frame_id}",
            prev.label if prev else None,
            label,
            {"item_id": item_id, "label_id": row.id, "note": note},
            session=s,
        )
        return label_record(row)

    def relabel(self, frame_id: str, user: str, label: str, note: str | None = None) -> LabelRecord:
        """Change a frame's label; the old label stays in the history. An open item for the frame is closed."""
        user, label = _check_user(user), self.check_label(label)
        with self.store.session() as s:
            item = s.scalar(select(ReviewItemRow).where(ReviewItemRow.frame_id == frame_id).with_for_update())
            known = item is not None or s.scalar(select(VerdictRow.id).where(VerdictRow.frame_id == frame_id))
            if not known:
                raise LabelError(f"frame {frame_id} has no verdict and no review item", "check the frame id")
            if item is not None and item.status != ReviewStatus.LABELLED:
                item.status, item.leased_by, item.lease_expires, item.updated_at = (
                    ReviewStatus.LABELLED,
                    user,
                    None,
                    now(),
                )
            return self._write_label(s, frame_id, item.id if item else None, user, label, note, action="relabel")

    def undo_last(self, user: str) -> LabelRecord | None:
        """Undo ``user``'s latest label that is still current: the label before it (if any) is current again,
        otherwise the item goes back to ``user`` under a fresh lease. Returns the undone label, or None."""
        user = _check_user(user)
        with self.store.session() as s:
            row = s.scalar(
                select(LabelRow)
                .where(LabelRow.user == user, LabelRow.is_current.is_(True))
                .order_by(LabelRow.created_at.desc(), LabelRow.id.desc())
                .limit(1)
                .with_for_update()
            )
            if row is None:
                return None
            row.is_current, row.undone = False, True
            s.flush()
            restored = self._restore_previous(s, row)
            if restored is None and row.item_id is not None:
                t = now()
                s.execute(
                    update(ReviewItemRow)
                    .where(ReviewItemRow.id == row.item_id)
                    .values(
                        status=ReviewStatus.LEASED,
                        leased_by=user,
                        lease_expires=t + self.lease_s,
                        updated_at=t,
                    )
                    .execution_options(synchronize_session=False)
                )
            self.store.audit.record(
                user,
                "label.undo",
                f"frame:{row.frame_id}",
                row.label,
                restored.label if restored else None,
                {"label_id": row.id},
                session=s,
            )
            return label_record(row)

    def _restore_previous(self, s: Session, row: LabelRow) -> LabelRow | None:
        prev_id = row.supersedes_id
        while prev_id is not None:
            prev = s.get_one(LabelRow, prev_id)
            if not prev.undone:
                prev.is_current = True
                s.flush()
                return prev
            prev_id = prev.supersedes_id
        return None

    def history(
        self,
        user: str | None = None,
        label: str | None = None,
        since: float | datetime | None = None,
        limit: int = 100,
        frame_id: str | None = None,
    ) -> list[LabelRecord]:
        """Label rows, newest first (current, superseded and undone ones)."""
        q = select(LabelRow).order_by(LabelRow.created_at.desc(), LabelRow.id.desc()).limit(max(1, min(limit, 10_000)))
        if user:
            q = q.where(LabelRow.user == user)
        if label:
            q = q.where(LabelRow.label == label)
        if frame_id:
            q = q.where(LabelRow.frame_id == frame_id)
        if since is not None:
            q = q.where(LabelRow.created_at >= (since.timestamp() if isinstance(since, datetime) else since))
        with self.store.session() as s:
            return [label_record(r) for r in s.scalars(q)]

    def current_label(self, frame_id: str) -> LabelRecord | None:
        with self.store.session() as s:
            r = s.scalar(select(LabelRow).where(LabelRow.frame_id == frame_id, LabelRow.is_current.is_(True)))
            return label_record(r) if r else None

    def item(self, item_id: int) -> ReviewItemView | None:
        with self.store.session() as s:
            r = s.get(ReviewItemRow, item_id)
            return review_item_view(r) if r else None

    def image(self, item: ReviewItemView) -> bytes:
        if not item.image_sha256:
            raise LabelError(f"review item {item.id} has no archived image", "the frame was not archived")
        return self.archive.get(item.image_sha256)

    def queue_stats(self) -> dict[str, Any]:
        """pending (incl. expired leases), leased, labelled, total, by_priority (open items), labels (current)."""
        t = now()
        with self.store.session() as s:
            rows = s.execute(select(ReviewItemRow.status, ReviewItemRow.priority, ReviewItemRow.lease_expires)).all()
            by_label = dict(
                s.execute(
                    select(LabelRow.label, func.count()).where(LabelRow.is_current.is_(True)).group_by(LabelRow.label)
                ).all()
            )
        stats: dict[str, Any] = {
            **{str(st): 0 for st in ReviewStatus},
            "total": len(rows),
            "by_priority": {},
            "labels": by_label,
        }
        for status, priority, expires in rows:
            if status == ReviewStatus.LEASED and expires is not None and expires < t:
                status = ReviewStatus.PENDING
            stats[status] = stats.get(status, 0) + 1
            if status != ReviewStatus.LABELLED:
                stats["by_priority"][priority] = stats["by_priority"].get(priority, 0) + 1
        return stats

    def request_review(
        self,
        frame_id: str,
        reason: str,
        user: str,
        priority: int = 90,
        image: bytes | None = None,
        encoding: str = "png",
    ) -> int:
        """Queue a frame for review (an operator says the verdict is wrong). An existing item gets the reason
        and the higher priority, and is re-opened if it was labelled. ``image``: the frame, archived first
        when the router had not archived it. Returns the item id."""
        user, priority = _check_user(user), max(0, min(100, priority))
        return queue_review_request(self.store, self.archive, frame_id, reason, user, priority, image, encoding)

    # -- datasets --------------------------------------------------------------------------------

    def export_dataset(self, out_dir: str | Path, layout: str = "classification") -> DatasetVersion:
        """Export current labels (not 'unsure') of this service's product (every product: None) with archived
        images in the trainer's folder layout (``inspector.review.dataset_export.export_dataset``)."""
        return dataset_export.export_dataset(self.store, self.archive, out_dir, layout, self.product)

    def dataset_versions(self) -> list[DatasetVersion]:
        return dataset_export.dataset_versions(self.store)
