"""Back-end handles the views use from the DbWorker thread only: store, archive, labelling service (the review
queue, labels and history are read and written through the labelling service, never by SQL from the views)."""

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
