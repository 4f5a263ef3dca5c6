"""The images of the frames where a shadow candidate's verdict differs from the active model's: kept in memory
after the candidate judges a frame, until the recorder has written the active verdict (``MATCH_AFTER_S``), then
archived where the two differ (up to ``shadow.save_differing`` per version) for ``inspector jobs shadow-report``."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from inspector.archive import Archive
from inspector.contracts.messages import FrameMeta
from inspector.store.db import Store
from inspector.store.shadow import differing_without_image, images_saved, set_shadow_image

RECENT_IMAGES = 2000  # frames kept in memory until their active verdict is recorded (a few seconds at line rate)
MATCH_AFTER_S = 1.0  # the recorder writes verdict rows within store.flush_ms; look for them after this


@dataclass
class _Judged:
    meta: FrameMeta
    image: bytes
    at: float


class DifferingImages:
    """The judged frames' images of one candidate version, and the archiving of those whose verdicts differ."""

    def __init__(self, store: Store, archive: Archive, limit: int) -> None:
        self.store, self.archive, self.limit = store, archive, limit
        self.version: str | None = None
        self.saved = 0
        self._recent: OrderedDict[str, _Judged] = OrderedDict()

    def follow(self, version: str) -> None:
        """Keep images for ``version`` from now on, counting those already archived for it."""
        self.version = version
        self.saved = images_saved(self.store, version)

    def forget(self) -> None:
        """Drop every image held (the candidate was unloaded)."""
        self.version = None
        self._recent.clear()

    def remember(self, meta: FrameMeta, image: bytes) -> None:
        if self.limit <= self.saved:
            return
        self._recent[meta.id] = _Judged(meta, image, time.monotonic())
        while len(self._recent) > RECENT_IMAGES:
            self._recent.popitem(last=False)

    def save_due(self) -> int:
        """Archive the images of judged frames whose active verdict is now recorded and differs; returns how
        many were archived."""
        if not self._recent or self.version is None:
            return 0
        cutoff = time.monotonic() - MATCH_AFTER_S
        due = [fid for fid, j in self._recent.items() if j.at <= cutoff]
        if not due:
            return 0
        archived = 0
        for fid in differing_without_image(self.store, self.version, due):
            if self.saved >= self.limit:
                break
            judged = self._recent[fid]
            ext = "png" if judged.meta.encoding == "png" else "jpg"
            sha = self.archive.put(judged.image, ext)
            set_shadow_image(self.store, self.version, fid, sha, ext)
            self.saved += 1
            archived += 1
        too_old = time.monotonic() - 10 * MATCH_AFTER_S  # the recorder had its chance: forget the image
        for fid in due:
            judged_at = self._recent.get(fid)
            if judged_at is not None and judged_at.at <= too_old:
                self._recent.pop(fid, None)
        return archived
