"""Back-end handles the views use from the DbWorker thread only: store, archive, labelling service."""

from __future__ import annotations

from typing import Any

from inspector.contracts.config import StationConfig


class Services:
    """Lazily opened (on the worker thread, on first use); tests inject their own."""

    def __init__(self, cfg: StationConfig, store: Any = None, archive: Any = None, labelling: Any = None) -> None:
        self.cfg = cfg
        self._store = store
        self._archive = archive
        self._labelling = labelling

    @property
    def store(self) -> Any:
        if self._store is None:
            from inspector.store import open_store

            self._store = open_store(self.cfg)
        return self._store

    @property
    def archive(self) -> Any:
        if self._archive is None:
            from inspector.archive import Archive

            self._archive = Archive.for_data_dir(self.cfg.station.data_dir)
        return self._archive

    @property
    def labelling(self) -> Any:
        if self._labelling is None:
            from inspector.review.labelling import LabellingService

            self._labelling = LabellingService(self.store, self.archive, self.cfg.review.lease_s)
        return self._labelling


def open_review_queue(store: Any, limit: int = 200) -> list[Any]:
    """Open review items (pending or leased), highest priority first, oldest first within a priority."""
    from sqlalchemy import select

    from inspector.store.models import ReviewItemRow

    q = (select(ReviewItemRow).where(ReviewItemRow.status != "labelled")
         .order_by(ReviewItemRow.priority.desc(), ReviewItemRow.created_at, ReviewItemRow.id).limit(limit))
    with store.session() as s:
        rows = list(s.scalars(q))
        s.expunge_all()
    return rows
