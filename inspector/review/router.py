"""Route uncertain frames to human review: sample, archive the frame, queue the item, announce it.

``route()`` is called by the worker AFTER it has published the verdict, and never raises: a failure is
logged and counted in ``stats`` and the verdict path goes on. Order per picked frame:

1. archive the image (content-addressed, atomic, fsynced): the item never points at a missing file;
2. insert the review item (idempotent by frame id): **ingest is direct** — the router is the writer of
   ``review_items``; there is no separate consumer;
3. publish the ``ReviewRequest`` on the review stream (``Names.review``), a notification for views.

A crash between 1 and 2 leaves an archived file that no item references yet; a redelivered frame
re-routes to the same file (same bytes, same key). Use ``submit()`` + ``start()`` to run steps 1–3 on
a background thread behind a bounded queue: sampling stays on the caller's thread (pure and cheap),
and when the queue is full the pick is dropped and counted, so disk or database stalls never delay
verdicts.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter

import redis

from inspector.archive import Archive
from inspector.contracts.config import StationConfig
from inspector.contracts.messages import ReviewRequest, Verdict
from inspector.contracts.names import STREAM_FIELD_MESSAGE, Names
from inspector.review.samplers import Sampler, choose, default_samplers
from inspector.store.db import Store
from inspector.store.records import add_review_item

log = logging.getLogger(__name__)
ENCODING_EXT = {"jpeg": "jpg", "jpg": "jpg", "png": "png", "raw": "raw"}
_Job = tuple[Verdict, bytes, str, list[str], int]


class ReviewRouter:
    def __init__(self, cfg: StationConfig, client: redis.Redis, names: Names, archive: Archive, store: Store,
                 samplers: list[Sampler] | None = None) -> None:
        self.cfg, self.client, self.names, self.archive, self.store = cfg, client, names, archive, store
        self.samplers = samplers if samplers is not None else default_samplers(cfg.review, cfg.policy)
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=cfg.review.queue_size)
        self._thread: threading.Thread | None = None

    def pick(self, verdict: Verdict, t: float | None = None) -> tuple[list[str], int] | None:
        """Reasons and priority if the verdict should be reviewed (consumes rate-limit slots)."""
        if not self.cfg.review.enabled:
            return None
        with self._lock:
            return choose(self.samplers, verdict, time.time() if t is None else t)

    def route(self, verdict: Verdict, image: bytes, encoding: str) -> ReviewRequest | None:
        """Sample, then archive + queue + announce; never raises."""
        try:
            chosen = self.pick(verdict)
        except Exception as err:  # noqa: BLE001 - review must never break the verdict path
            return self._failed(verdict, "sample", err)
        if chosen is None:
            return None
        return self._deliver((verdict, image, encoding, *chosen))

    def _deliver(self, job: _Job) -> ReviewRequest | None:
        verdict, image, encoding, reasons, priority = job
        try:
            ext = ENCODING_EXT.get(encoding.lower(), "raw")
            sha = self.archive.put(image, ext)
            req = ReviewRequest(
                station=verdict.station, frame_id=verdict.frame_id, part_id=verdict.part_id, camera=verdict.camera,
                reasons=reasons, priority=priority, image_sha256=sha, decision=verdict.decision,
                model_version=verdict.model_version, class_probs=verdict.class_probs,
                anomaly_score=verdict.anomaly_score,
            )
            add_review_item(self.store, req, image_ext=ext, defect_class=verdict.defect_class)
            self.client.xadd(self.names.review, {STREAM_FIELD_MESSAGE: req.to_json()},
                             maxlen=self.cfg.review.review_maxlen, approximate=True)
        except Exception as err:  # noqa: BLE001 - logged and counted, never raised
            return self._failed(verdict, "deliver", err)
        self.stats["routed"] += 1
        return req

    def _failed(self, verdict: Verdict, stage: str, err: Exception) -> None:
        self.stats[f"failed_{stage}"] += 1
        log.error("review routing (%s) failed for frame %s (station %s, model %s): %s",
                  stage, verdict.frame_id, verdict.station, verdict.model_version, err)
        return None

    # -- background mode -----------------------------------------------------------------------

    def submit(self, verdict: Verdict, image: bytes, encoding: str) -> bool:
        """Sample now; queue the archive/insert/publish for the background thread. Never blocks or raises.
        Returns True when the frame was queued for review."""
        try:
            chosen = self.pick(verdict)
            if chosen is None:
                return False
            self._queue.put_nowait((verdict, image, encoding, *chosen))
            return True
        except queue.Full:
            self.stats["dropped_queue_full"] += 1
            return False
        except Exception as err:  # noqa: BLE001
            self._failed(verdict, "submit", err)
            return False

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="review-router", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish what is queued, then stop the thread."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None

    def _loop(self) -> None:
        while (job := self._queue.get()) is not None:
            self._deliver(job)
