"""Route uncertain frames to human review: sample, archive the frame, queue the item, announce it.

Two halves, so that no sampled frame is lost to a database or disk error:

- **on the verdict path** (the worker, after it published the verdict): :meth:`ReviewRouter.submit` samples
  (pure and cheap) and appends the picked frame, image included, to the review inbox stream
  (``Names.review_inbox``) in Redis. It never blocks on the disk or the database and never raises; when
  the inbox already holds ``review.queue_size`` frames the pick is dropped and counted (``review_dropped``).
- **the consumer** (:meth:`ReviewRouter.run`, a :class:`~inspector.bus.consumer.StreamConsumer` on a thread of
  the worker process; consumer group ``Names.review_group``), for each inbox entry:

  1. archive the image (content-addressed, atomic, fsynced): the item never points at a missing file;
  2. insert the review item (idempotent by frame id): the router is the writer of ``review_items``;
  3. publish the ``ReviewRequest`` on the review stream (``Names.review``), a notification for views;
  4. only then XACK (and XDEL) the inbox entry.

  A failure (database down, disk full or read-only) leaves the entry pending: it is retried with capped
  backoff, re-read by the same consumer after a restart, or taken over by another router with XAUTOCLAIM
  after ``store.reclaim_idle_ms``. Every step is idempotent, so a retry never makes a second item. A full
  or read-only disk is named with its path; the consumer's heartbeat turns ``stalled`` after ``store.stall_s``.

``route()`` does sample + steps 1–3 at once on the caller's thread (tools and tests); it never raises.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import ClassVar

import redis

from inspector.archive import Archive
from inspector.bus.consumer import StreamConsumer
from inspector.bus.streams import Entry
from inspector.contracts.config import StationConfig
from inspector.contracts.errors import InspectorError
from inspector.contracts.health import ConsumerRole
from inspector.contracts.messages import ReviewJob, ReviewRequest, Verdict
from inspector.contracts.names import STREAM_FIELD_IMAGE, STREAM_FIELD_MESSAGE, Names
from inspector.review.samplers import Sampler, choose, default_samplers
from inspector.store.db import Store
from inspector.store.records import add_review_item

log = logging.getLogger(__name__)
ENCODING_EXT = {"jpeg": "jpg", "jpg": "jpg", "png": "png", "raw": "raw"}
MAX_BACKOFF_S = 5.0
READ_COUNT = 16


class ReviewRouter(StreamConsumer):
    role: ClassVar[ConsumerRole] = ConsumerRole.REVIEW_ROUTER
    retry_on: ClassVar[tuple[type[BaseException], ...]] = (Exception,)  # Redis, database or disk: entries stay pending
    backoff_max_s: ClassVar[float] = MAX_BACKOFF_S

    def __init__(
        self,
        cfg: StationConfig,
        client: redis.Redis,
        names: Names,
        archive: Archive,
        store: Store,
        samplers: list[Sampler] | None = None,
        consumer: str = "review-router",
    ) -> None:
        super().__init__(cfg, client, consumer)
        self.client, self.names, self.archive, self.store = client, names, archive, store
        self.samplers = samplers if samplers is not None else default_samplers(cfg.review, cfg.policy, client, names)
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._held: list[Entry] = []

    def pick(self, verdict: Verdict, t: float | None = None) -> tuple[list[str], int] | None:
        """Reasons and priority if the verdict should be reviewed (consumes rate-limit slots)."""
        if not self.cfg.review.enabled:
            return None
        with self._lock:
            return choose(self.samplers, verdict, time.time() if t is None else t)

    def route(self, verdict: Verdict, image: bytes, encoding: str) -> ReviewRequest | None:
        """Sample, then archive + queue + announce now; never raises."""
        try:
            chosen = self.pick(verdict)
        except Exception as err:  # noqa: BLE001 - review must never break the verdict path
            return self._failed(verdict, "sample", err)
        if chosen is None:
            return None
        job = ReviewJob(
            station=verdict.station, verdict=verdict, reasons=chosen[0], priority=chosen[1], encoding=encoding
        )
        try:
            return self._deliver(job, image)
        except Exception as err:  # noqa: BLE001 - logged and counted, never raised
            return self._failed(verdict, "deliver", err)

    def _deliver(self, job: ReviewJob, image: bytes) -> ReviewRequest:
        """Archive, insert the item, announce it; raises on any failure (every step is idempotent)."""
        verdict = job.verdict
        ext = ENCODING_EXT.get(job.encoding.lower(), "raw")
        sha = self.archive.put(image, ext)
        req = ReviewRequest(
            station=verdict.station,
            frame_id=verdict.frame_id,
            part_id=verdict.part_id,
            camera=verdict.camera,
            reasons=job.reasons,
            priority=job.priority,
            image_sha256=sha,
            decision=verdict.decision,
            model_version=verdict.model_version,
            class_probs=verdict.class_probs,
            anomaly_score=verdict.anomaly_score,
            product=verdict.product,
        )
        add_review_item(self.store, req, image_ext=ext, defect_class=verdict.defect_class)
        self.client.xadd(
            self.names.review,
            {STREAM_FIELD_MESSAGE: req.to_json()},
            maxlen=self.cfg.review.review_maxlen,
            approximate=True,
        )
        self.stats["routed"] += 1
        return req

    def _failed(self, verdict: Verdict, stage: str, err: Exception) -> None:
        self.stats[f"failed_{stage}"] += 1
        log.error(
            "review routing (%s) failed for frame %s (station %s, model %s): %s",
            stage,
            verdict.frame_id,
            verdict.station,
            verdict.model_version,
            self._reason(err),
        )
        return None

    def _reason(self, err: BaseException) -> str:
        if isinstance(err, redis.RedisError):
            return f"Redis: {err}"
        if isinstance(err, InspectorError):
            return err.message
        return self.store.describe(err) if self.store is not None else str(err)

    # -- the verdict path: sample and hand over to the inbox ----------------------------------------

    def submit(self, verdict: Verdict, image: bytes, encoding: str) -> bool:
        """Sample now; append a picked frame to the review inbox. Never blocks on disk or database, never
        raises. Returns True when the frame was queued for review."""
        try:
            chosen = self.pick(verdict)
            if chosen is None:
                return False
            if self.client.xlen(self.names.review_inbox) >= self.cfg.review.queue_size:
                self.stats["dropped_queue_full"] += 1
                self.bus.count("review_dropped")
                log.error(
                    "review inbox %s holds %d frames (review.queue_size): frame %s not queued for review",
                    self.names.review_inbox,
                    self.cfg.review.queue_size,
                    verdict.frame_id,
                )
                return False
            job = ReviewJob(
                station=verdict.station, verdict=verdict, reasons=chosen[0], priority=chosen[1], encoding=encoding
            )
            pipe = self.client.pipeline(transaction=True)
            pipe.xadd(self.names.review_inbox, {STREAM_FIELD_MESSAGE: job.to_json(), STREAM_FIELD_IMAGE: image})
            pipe.hincrby(self.names.counters, "review_queued", 1)
            pipe.execute()
            self.stats["queued"] += 1
            return True
        except Exception as err:  # noqa: BLE001
            self._failed(verdict, "submit", err)
            return False

    # -- the consumer: inbox -> archive + review item, acknowledged only when both are done ----------

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self.stop_event.clear()
            self._thread = threading.Thread(target=self.run, args=(self.stop_event,), name="review-router", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:  # type: ignore[override]  # waits for its thread
        """Route what the inbox holds now (unless delivery fails), then stop within ``timeout``
        (default ``store.stop_timeout_s``); whatever is left stays pending for the next router."""
        self.stop_event.set()
        if self._thread is None:
            return
        self._thread.join(self.cfg.store.stop_timeout_s if timeout is None else timeout)
        if self._thread.is_alive():
            log.warning(
                "review router %s did not finish within its stop bound; its entries stay pending", self.consumer
            )
        self._thread = None

    def setup(self) -> None:
        """The group, then the entries delivered to this consumer name before a restart (or a Redis failure)."""
        self.bus.ensure_group(self.names.review_inbox, self.names.review_group)
        own = self._read("0", None)
        ids = {e.entry_id for e in own}
        self._held = own + [e for e in self._held if e.entry_id not in ids]

    def step(self) -> int:
        """Route what is held, else what a dead router left, else what is new (blocking up to 200 ms)."""
        if not self._held:
            self._held = self._reclaim() or self._read(">", 200)
        if not self._held:
            self.progress.ok()
            return 0
        n = 0
        while self._held:
            self._handle(self._held[0])
            self._held.pop(0)
            self.progress.ok(1)
            n += 1
        return n

    def teardown(self) -> None:
        """Stopping: finish what the inbox holds now; the first failure leaves the rest pending."""
        try:
            self.setup()
            while True:
                if not self._held:
                    self._held = self._reclaim() or self._read(">", None)
                if not self._held:
                    return
                self.step()
        except Exception as err:  # noqa: BLE001 - what is left stays pending for the next router
            self.on_failure(err)

    def on_failure(self, err: BaseException) -> str:
        reason = self._reason(err)
        self.stats["errors"] += 1
        log.error("review router %s: %s; %d frames held", self.consumer, reason, len(self._held))
        if isinstance(err, redis.RedisError):
            self._held = []  # re-read own pending at setup: what was held may have been reclaimed meanwhile
        return reason

    def _read(self, start: str, block_ms: int | None) -> list[Entry]:
        reply = self.client.xreadgroup(
            self.names.review_group, self.consumer, {self.names.review_inbox: start}, count=READ_COUNT, block=block_ms
        )
        return [
            Entry(eid.decode() if isinstance(eid, bytes) else eid, fields or None)
            for _stream, entries in reply or []
            for eid, fields in entries
        ]

    def _reclaim(self) -> list[Entry]:
        entries = self.reclaim_stale(
            self.names.review_inbox, self.names.review_group, self.cfg.store.reclaim_idle_ms, READ_COUNT
        )
        self.stats["reclaimed"] += len(entries)
        return entries

    def _handle(self, entry: Entry) -> None:
        """Deliver one inbox entry, then acknowledge and delete it; raises (entry kept) when delivery fails."""
        if entry.fields is None:
            self.stats["lost_deleted"] += 1
            log.error("review inbox entry %s was deleted before it was routed", entry.entry_id)
        else:
            try:
                job = ReviewJob.from_json(entry.message_raw or b"")
            except Exception as err:  # noqa: BLE001 - never decodes on a retry either: counted and dropped
                self.stats["bad_entries"] += 1
                log.error("review inbox entry %s cannot be read: %s", entry.entry_id, err)
            else:
                self._deliver(job, entry.image)
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(self.names.review_inbox, self.names.review_group, entry.entry_id)
        pipe.xdel(self.names.review_inbox, entry.entry_id)
        pipe.execute()
