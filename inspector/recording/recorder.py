"""Record every verdict of the verdicts stream in the database, exactly once per frame.

The recorder reads with the consumer group ``Names.store_group`` (from the start of the stream), writes a
batch (``store.batch_size`` entries, or whatever arrived within ``store.flush_ms``) in ONE transaction with
``INSERT .. ON CONFLICT (frame_id) DO NOTHING``, and XACKs the entries only after the commit. A recorder
that dies leaves its entries pending; it re-reads them on restart (same consumer name) and any other
recorder takes them over with XAUTOCLAIM once they are idle ``store.reclaim_idle_ms``. Delivery is
at-least-once and the insert is idempotent, so each frame has exactly one row. Entries that cannot be
decoded are counted, logged and acknowledged (they would never decode on a retry either).

A :class:`~inspector.bus.consumer.StreamConsumer`: the worker process runs ``VerdictRecorder.run(stop)`` in a
thread, ``python -m inspector.recording`` runs it as its own process. Redis and database failures are
logged and retried with capped backoff; nothing is acknowledged that is not committed, so after a database
outage the recorder catches up from its pending entries. Its heartbeat reports it ``stalled`` after
``store.stall_s`` without progress, and ``down`` once the process is gone (``inspector status``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import ClassVar

import redis
from sqlalchemy.orm import Session

from inspector import telemetry
from inspector.bus.consumer import StreamConsumer
from inspector.bus.streams import Entry
from inspector.contracts.config import StationConfig
from inspector.contracts.health import ConsumerRole
from inspector.contracts.messages import PartVerdict, Verdict
from inspector.contracts.names import Names
from inspector.store.db import Store
from inspector.store.records import insert_verdicts

log = logging.getLogger(__name__)
MAX_BACKOFF_S = 5.0


@dataclass
class _Pending:
    ids: list[str] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    first_at: float = 0.0


class VerdictRecorder(StreamConsumer):
    role: ClassVar[ConsumerRole] = ConsumerRole.RECORDER
    retry_on: ClassVar[tuple[type[BaseException], ...]] = (Exception,)  # Redis or database: nothing acked is lost
    backoff_max_s: ClassVar[float] = MAX_BACKOFF_S
    message_type: type[Verdict] | type[PartVerdict] = Verdict  # what the stream holds (PartRecorder: part verdicts)

    def __init__(
        self, cfg: StationConfig, client: redis.Redis, store: Store, consumer: str, stream: str | None = None
    ) -> None:
        super().__init__(cfg, client, consumer)
        self.names = Names(cfg.redis.prefix, cfg.station.id)
        self.client, self.store = client, store
        self.stream, self.group = stream or self.names.verdicts, self.names.store_group
        self.batch_size = cfg.store.batch_size
        self.flush_s = cfg.store.flush_ms / 1000
        self.reclaim_idle_ms = cfg.store.reclaim_idle_ms
        self.stats: Counter[str] = Counter()
        self._batch = _Pending()
        self._group_ready = False
        if stream is None:
            telemetry.watch_recorder(self)

    # -- redis -----------------------------------------------------------------------------------

    def ensure_group(self) -> None:
        if not self._group_ready:
            self.bus.ensure_group(self.stream, self.group, start="0")
            self._group_ready = True

    def _read(self, start: str, block_ms: int | None) -> list[Entry]:
        room = max(1, self.batch_size - len(self._batch.ids))
        if start == "0":
            return self.recover_own(self.stream, self.group, room)
        return self.bus.read_new(self.stream, self.group, self.consumer, room, block_ms)

    def _reclaim(self) -> int:
        """Take over every entry idle longer than reclaim_idle_ms (their recorder died); returns how many."""
        self._next_reclaim = time.monotonic() + self.reclaim_idle_ms / 2000
        n = 0
        while True:
            entries = self.bus.reclaim(self.stream, self.group, self.consumer, self.reclaim_idle_ms, self.batch_size)
            if not entries:
                break
            self._add(entries)
            n += len(entries)
            self._flush_if_due(force=len(self._batch.ids) >= self.batch_size)
        self.stats["reclaimed"] += n
        return n

    # -- batching ----------------------------------------------------------------------------------

    def _add(self, entries: list[Entry]) -> None:
        for entry in entries:
            if not self._batch.ids:
                self._batch.first_at = time.monotonic()
            self._batch.ids.append(entry.entry_id)
            if entry.fields is None:  # deleted (trimmed) while pending: acknowledged with the batch, nothing to record
                self.stats["deleted"] += 1
                continue
            verdict = self._decode(entry)
            if verdict is not None:
                self._batch.verdicts.append(verdict)

    def _decode(self, entry: Entry) -> Verdict | None:
        raw = entry.message_raw
        try:
            if raw is None:
                raise ValueError("entry has no message field (foreign entry)")
            return self.message_type.from_json(raw)  # type: ignore[return-value]  # PartRecorder's PartVerdict
        except Exception as err:  # noqa: BLE001 - a bad entry is counted and acknowledged, never fatal
            self.stats["bad_entries"] += 1
            log.warning("verdict entry %r on %s cannot be recorded: %s", entry.entry_id, self.stream, err)
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
        self._batch = _Pending()
        self.progress.ok(len(b.ids))
        return inserted

    def _insert(self, s: Session, rows: list[Verdict]) -> int:
        return insert_verdicts(s, rows)

    # -- lifecycle (StreamConsumer) ------------------------------------------------------------------

    def setup(self) -> None:
        self.ensure_group()
        self._recover_own()

    def step(self) -> int:
        if time.monotonic() >= self._next_reclaim:
            self._reclaim()
        b = self._batch
        wait = self.flush_s if not b.ids else max(0.001, self.flush_s - (time.monotonic() - b.first_at))
        return self.read_once(max(1, int(wait * 1000)))

    def teardown(self) -> None:
        try:
            self.flush()
        except Exception as err:  # noqa: BLE001 - entries stay pending and are re-read later
            log.error("%s %s: final flush failed: %s", self.role.value, self.consumer, err)

    def on_failure(self, err: BaseException) -> str:
        self.stats["errors"] += 1
        self._group_ready = False
        reason = f"Redis: {err}" if isinstance(err, redis.RedisError) else self.store.describe(err)
        log.error("%s %s: %d verdicts held", self.role.value, self.consumer, len(self._batch.ids))
        return reason

    def read_once(self, block_ms: int | None) -> int:
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
            held = set(self._batch.ids)
            fresh = [e for e in self._read("0", None) if e.entry_id not in held]
            if not fresh:
                break
            self.stats["recovered"] += len(fresh)
            self._add(fresh)
            self.flush()
        self.flush()

    def drain(self) -> int:
        """Record everything the stream holds for this group now (own pending, stale, new); returns entries."""
        self.ensure_group()
        before = self.stats["recorded"] + self.stats["bad_entries"]
        self._recover_own()
        self._reclaim()
        while self.read_once(None):
            pass
        self.flush()
        return self.stats["recorded"] + self.stats["bad_entries"] - before
