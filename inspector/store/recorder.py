"""Record every verdict of the verdicts stream in the database, exactly once per frame.

The recorder reads with the consumer group ``Names.store_group`` (from the start of the stream), writes a
batch (``store.batch_size`` entries, or whatever arrived within ``store.flush_ms``) in ONE transaction with
``INSERT .. ON CONFLICT (frame_id) DO NOTHING``, and XACKs the entries only after the commit. A recorder
that dies leaves its entries pending; it re-reads them on restart (same consumer name) and any other
recorder takes them over with XAUTOCLAIM once they are idle ``store.reclaim_idle_ms``. Delivery is
at-least-once and the insert is idempotent, so each frame has exactly one row. Entries that cannot be
decoded are counted, logged and acknowledged (they would never decode on a retry either).

The worker process runs ``VerdictRecorder.run(stop)`` in a thread. Redis and database failures are
logged and retried with capped backoff; nothing is acknowledged that is not committed, so after a database
outage the recorder catches up from its pending entries. Its :class:`~inspector.progress.Progress` says when it
last made progress; a heartbeat thread reports it ``stalled`` after ``store.stall_s`` (``inspector status``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass

import redis
from redis.exceptions import ResponseError
from sqlalchemy.orm import Session

from inspector import telemetry
from inspector.contracts.config import StationConfig
from inspector.contracts.health import ConsumerRole
from inspector.contracts.messages import PartVerdict, Verdict
from inspector.contracts.names import STREAM_FIELD_MESSAGE, Names
from inspector.progress import Progress
from inspector.store.db import Store
from inspector.store.records import insert_verdicts

log = logging.getLogger(__name__)
MAX_BACKOFF_S = 5.0


@dataclass
class _Pending:
    ids: list[bytes]
    verdicts: list[Verdict]
    first_at: float


class VerdictRecorder:
    message_type: type[Verdict] | type[PartVerdict] = Verdict  # what the stream holds (PartRecorder: part verdicts)

    def __init__(self, cfg: StationConfig, client: redis.Redis, store: Store, consumer: str,
                 stream: str | None = None) -> None:
        self.names = Names(cfg.redis.prefix, cfg.station.id)
        self.client, self.store, self.consumer = client, store, consumer
        self.stream, self.group = stream or self.names.verdicts, self.names.store_group
        self.batch_size = cfg.store.batch_size
        self.flush_s = cfg.store.flush_ms / 1000
        self.reclaim_idle_ms = cfg.store.reclaim_idle_ms
        self.stats: Counter[str] = Counter()
        self.progress = Progress(ConsumerRole.RECORDER, consumer, cfg.store.stall_s)
        self._batch = _Pending([], [], 0.0)
        self._group_ready = False
        self._last_reclaim = 0.0
        if stream is None:
            telemetry.watch_recorder(self)

    # -- redis -----------------------------------------------------------------------------------

    def ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise
        self._group_ready = True

    def _read(self, start: str, block_ms: int | None) -> list[tuple[bytes, dict[bytes, bytes] | None]]:
        room = max(1, self.batch_size - len(self._batch.ids))
        reply = self.client.xreadgroup(self.group, self.consumer, {self.stream: start}, count=room, block=block_ms)
        if not reply:
            return []
        entries = reply[0][1] if isinstance(reply, list) else next(iter(reply.values()))[0]
        return list(entries)

    def _reclaim(self) -> int:
        """Take over entries idle longer than reclaim_idle_ms (their recorder died); returns how many."""
        self._last_reclaim = time.monotonic()
        start, n = "0-0", 0
        while True:
            reply = self.client.xautoclaim(self.stream, self.group, self.consumer, self.reclaim_idle_ms,
                                           start_id=start, count=self.batch_size)
            start, entries = reply[0], reply[1]
            deleted = list(reply[2]) if len(reply) > 2 else []
            if deleted:
                self.client.xack(self.stream, self.group, *deleted)
            self._add(entries)
            n += len(entries)
            self._flush_if_due(force=len(self._batch.ids) >= self.batch_size)
            if start in (b"0-0", "0-0") or not entries:
                break
        self.stats["reclaimed"] += n
        return n

    # -- batching ----------------------------------------------------------------------------------

    def _add(self, entries: list[tuple[bytes, dict[bytes, bytes] | None]]) -> None:
        for entry_id, fields in entries:
            verdict = self._decode(entry_id, fields)
            if not self._batch.ids:
                self._batch.first_at = time.monotonic()
            self._batch.ids.append(entry_id)
            if verdict is not None:
                self._batch.verdicts.append(verdict)

    def _decode(self, entry_id: bytes, fields: dict[bytes, bytes] | None) -> Verdict | None:
        raw = (fields or {}).get(STREAM_FIELD_MESSAGE)
        try:
            if raw is None:
                raise ValueError("entry has no message field (trimmed or foreign entry)")
            return self.message_type.from_json(raw)  # type: ignore[return-value]
        except Exception as err:  # noqa: BLE001 - a bad entry is counted and acknowledged, never fatal
            self.stats["bad_entries"] += 1
            log.warning("verdict entry %r on %s cannot be recorded: %s", entry_id, self.stream, err)
            return None

    def _flush_if_due(self, force: bool = False) -> int:
        b = self._batch
        if not b.ids:
            return 0
        if not force and len(b.ids) < self.batch_size and time.monotonic() - b.first_at < self.flush_s:
            return 0
        return self.flush()

    def flush(self) -> int:
        """Commit the current batch, then acknowledge it; returns the number of new rows."""
        b = self._batch
        if not b.ids:
            return 0
        with self.store.session() as s:
            inserted = self._insert(s, b.verdicts)
        self.client.xack(self.stream, self.group, *b.ids)
        self.stats["recorded"] += len(b.verdicts)
        self.stats["batches"] += 1
        self._batch = _Pending([], [], 0.0)
        self.progress.ok(len(b.ids))
        return inserted

    def _insert(self, s: Session, rows: list[Verdict]) -> int:
        return insert_verdicts(s, rows)

    # -- loops -------------------------------------------------------------------------------------

    def step(self, block_ms: int | None) -> int:
        """Read once (blocking up to block_ms), flush when the batch is full or old; returns entries read."""
        entries = self._read(">", block_ms)
        self._add(entries)
        self._flush_if_due()
        if not self._batch.ids:
            self.progress.ok()  # nothing held: idle is progress
        return len(entries)

    def _recover_own(self) -> None:
        """Entries delivered to this consumer name before a restart and never acknowledged."""
        while True:
            entries = self._read("0", None)
            fresh = [e for e in entries if e[0] not in set(self._batch.ids)]
            if not fresh:
                break
            self._add(fresh)
            self.flush()
        self.flush()

    def drain(self) -> int:
        """Record everything the stream holds for this group now (own pending, stale, new); returns entries."""
        self.ensure_group()
        before = self.stats["recorded"] + self.stats["bad_entries"]
        self._recover_own()
        self._reclaim()
        while self.step(None):
            pass
        self.flush()
        return self.stats["recorded"] + self.stats["bad_entries"] - before

    def run(self, stop: threading.Event) -> None:
        """Record until ``stop`` is set; then flush what was read. Failures are retried with backoff."""
        backoff = 0.05
        while not stop.is_set():
            try:
                self._run_once(stop)
                return
            except Exception as err:  # noqa: BLE001 - keep recording; nothing unacknowledged is lost
                self.stats["errors"] += 1
                self._group_ready = False
                reason = self.store.describe(err) if not isinstance(err, redis.RedisError) else f"Redis: {err}"
                self.progress.failed(reason)
                log.error("verdict recorder %s: %s; %d verdicts held, retrying in %.2f s",
                          self.consumer, reason, len(self._batch.ids), backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
        self._final_flush()

    def _run_once(self, stop: threading.Event) -> None:
        self.ensure_group()
        self._recover_own()
        while not stop.is_set():
            if time.monotonic() - self._last_reclaim > self.reclaim_idle_ms / 2000:
                self._reclaim()
            wait = self.flush_s if not self._batch.ids else max(0.001, self.flush_s - (time.monotonic() - self._batch.first_at))
            self.step(max(1, int(wait * 1000)))
        self.flush()

    def _final_flush(self) -> None:
        try:
            self.flush()
        except Exception as err:  # noqa: BLE001 - entries stay pending and are re-read later
            log.error("verdict recorder %s: final flush failed: %s", self.consumer, err)
