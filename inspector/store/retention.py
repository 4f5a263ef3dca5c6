"""Retention: what a station keeps, and for how long (the ``retention`` section of the station config).

One pass (``Retention.run_once``) applies, in this order:

1. **Streams** (Redis memory): verdict, event and review entries older than ``retention.stream_max_age_s``
   are trimmed with ``XTRIM MINID``, but never past an entry that the group which makes it durable has not
   taken yet: the recorder's group on the verdicts stream (a database outage must not lose verdicts) and the
   retrain trigger's on the events stream. The done-keys that make verdicts exactly-once expire after the same
   age (``SET .. EX`` in the verdict commit script, ``inspector/bus/streams.py``), so both stay in step and
   Redis memory is flat at a given rate. ``redis.*_maxlen`` stays the hard bound by count.
2. **Verdict rows** (database): rows captured more than ``verdict_rows_max_age_s`` ago, then the oldest rows
   beyond ``verdict_rows_max``, are deleted in transactions of ``delete_batch`` rows (short write locks).
3. **Archived images** (disk): the oldest images beyond ``archive_max_age_s`` or ``archive_max_bytes`` are
   deleted, except those of labelled or leased review items (labelled frames are the training data); a still
   pending review item whose image went is dropped with it (nobody could label it).

Who runs it: the verdict recorder's process (every ``inspector worker`` that records, so also every worker
under ``inspector station run``) starts ``start_retention`` beside the recorder thread; a Redis lock
(``Names.retention_lock``, ``SET NX EX interval_s``) lets one pass per ``retention.interval_s`` run across the
whole station, however many workers there are.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.exceptions import ResponseError
from sqlalchemy import delete, func, select

from inspector.archive import SHA_RE, TMP_PREFIX, Archive
from inspector.contracts.config import RetentionSection, StationConfig
from inspector.contracts.names import Names
from inspector.contracts.statuses import ReviewStatus
from inspector.store.db import Store
from inspector.store.models import ReviewItemRow, VerdictRow
from inspector.store.part_verdicts import delete_old_part_verdicts

log = logging.getLogger(__name__)

StreamId = tuple[int, int]


def _parse_id(raw: bytes | str) -> StreamId:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class RetentionReport:
    """What one pass removed."""

    stream_entries: dict[str, int] = field(default_factory=dict)
    verdict_rows: int = 0
    images: int = 0
    image_bytes: int = 0
    review_items: int = 0
    part_rows: int = 0  # part_verdicts rows (parts.views), same age as verdict rows
    seconds: float = 0.0

    def __str__(self) -> str:
        streams = ", ".join(f"{k} {v}" for k, v in self.stream_entries.items())
        return (
            f"retention: trimmed stream entries ({streams}), {self.verdict_rows} verdict rows, {self.part_rows} part rows, {self.images} "
            f"images ({self.image_bytes / 1e6:.1f} MB), {self.review_items} pending review items, {self.seconds:.2f} s"
        )


def safe_min_id(client: redis.Redis, stream: str, cutoff: StreamId, protect: tuple[str, ...]) -> StreamId:
    """The MINID to trim to: ``cutoff``, moved back to keep every entry a protected group has pending or not read."""
    keep = cutoff
    try:
        groups = client.xinfo_groups(stream)
    except ResponseError:  # no such stream
        return keep
    for g in groups:
        name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
        if name not in protect:
            continue
        last_ms, last_seq = _parse_id(g["last-delivered-id"])
        keep = min(keep, (last_ms, last_seq + 1))  # entries after last-delivered-id were never read
        if int(g.get("pending", 0)):
            summary = client.xpending(stream, name)
            if summary.get("min"):
                keep = min(keep, _parse_id(summary["min"]))
    return keep


def trim_stream(
    client: redis.Redis, stream: str, max_age_s: float, protect: tuple[str, ...] = (), now: float | None = None
) -> int:
    """XTRIM MINID of entries older than ``max_age_s`` (never past what a protected group still needs)."""
    cutoff_ms = int(((time.time() if now is None else now) - max_age_s) * 1000)
    ms, seq = safe_min_id(client, stream, (max(0, cutoff_ms), 0), protect)
    return int(client.xtrim(stream, minid=f"{ms}-{seq}", approximate=False))


def delete_old_verdicts(store: Store, section: RetentionSection, now: float | None = None) -> int:
    """Delete verdict rows older than ``verdict_rows_max_age_s``, then the oldest beyond ``verdict_rows_max``."""
    now = time.time() if now is None else now
    deleted = 0
    if section.verdict_rows_max_age_s > 0:
        cutoff = now - section.verdict_rows_max_age_s
        while True:
            n = _delete_batch(
                store,
                select(VerdictRow.id)
                .where(VerdictRow.captured_at < cutoff)
                .order_by(VerdictRow.captured_at)
                .limit(section.delete_batch),
            )
            deleted += n
            if n < section.delete_batch:
                break
    if section.verdict_rows_max > 0:
        with store.session() as s:
            excess = int(s.scalar(select(func.count(VerdictRow.id))) or 0) - section.verdict_rows_max
        while excess > 0:
            n = _delete_batch(
                store, select(VerdictRow.id).order_by(VerdictRow.id).limit(min(excess, section.delete_batch))
            )
            deleted += n
            excess -= n
            if n == 0:
                break
    return deleted


def _delete_batch(store: Store, ids_query) -> int:  # type: ignore[no-untyped-def]
    with store.session() as s:
        ids = list(s.scalars(ids_query))
        if ids:
            s.execute(delete(VerdictRow).where(VerdictRow.id.in_(ids)))
        return len(ids)


def archive_files(archive: Archive) -> list[tuple[float, int, Path, str]]:
    """(mtime, bytes, path, sha256) of every archived image, oldest first."""
    files = []
    for p in archive.root.glob("??/??/*"):
        sha = p.name.split(".", 1)[0]
        if p.name.startswith(TMP_PREFIX) or not SHA_RE.match(sha):
            continue
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        files.append((st.st_mtime, st.st_size, p, sha))
    files.sort()
    return files


def prune_archive(
    store: Store, archive: Archive, section: RetentionSection, now: float | None = None
) -> tuple[int, int, int]:
    """Delete the oldest unprotected images beyond the age and size bounds; returns (images, bytes, review items)."""
    if section.archive_max_age_s <= 0 and section.archive_max_bytes <= 0:
        return 0, 0, 0
    cutoff = (
        (time.time() if now is None else now) - section.archive_max_age_s if section.archive_max_age_s > 0 else None
    )
    files = archive_files(archive)
    total = sum(size for _, size, _, _ in files)
    with store.session() as s:
        protected = set(
            s.scalars(select(ReviewItemRow.image_sha256).where(ReviewItemRow.status != ReviewStatus.PENDING))
        )
    removed: list[str] = []
    freed = 0
    for mtime, size, path, sha in files:
        too_old = cutoff is not None and mtime < cutoff
        too_big = section.archive_max_bytes > 0 and total > section.archive_max_bytes
        if not (too_old or too_big):
            break  # oldest first: nothing newer is due
        if sha in protected:
            continue
        path.unlink(missing_ok=True)
        total -= size
        freed += size
        removed.append(sha)
    items = 0
    for i in range(0, len(removed), section.delete_batch):
        chunk = removed[i : i + section.delete_batch]
        with store.session() as s:
            items += (
                s.execute(
                    delete(ReviewItemRow).where(
                        ReviewItemRow.image_sha256.in_(chunk), ReviewItemRow.status == ReviewStatus.PENDING
                    )
                ).rowcount
                or 0
            )
    return len(removed), freed, items


class Retention:
    """One station's retention: streams, verdict rows, archived images (see the module docstring)."""

    def __init__(self, cfg: StationConfig, client: redis.Redis, store: Store, archive: Archive) -> None:
        self.cfg, self.client, self.store, self.archive = cfg, client, store, archive
        self.section = cfg.retention
        self.names = Names(cfg.redis.prefix, cfg.station.id)
        self.last: RetentionReport | None = None

    def streams(self) -> dict[str, tuple[str, ...]]:
        """Each trimmed stream with the groups whose unread or pending entries it keeps."""
        n = self.names
        return {
            n.verdicts: (n.store_group,),
            n.events: (n.retrain_trigger_group,),
            n.review: (),
            n.parts: (n.store_group,),
        }

    def run_once(self, now: float | None = None) -> RetentionReport:
        t0 = time.monotonic()
        report = RetentionReport()
        for stream, protect in self.streams().items():
            report.stream_entries[stream.rsplit(":", 1)[-1]] = trim_stream(
                self.client, stream, self.section.stream_max_age_s, protect, now
            )
        report.verdict_rows = delete_old_verdicts(self.store, self.section, now)
        report.part_rows = delete_old_part_verdicts(self.store, self.section, now)
        report.images, report.image_bytes, report.review_items = prune_archive(
            self.store, self.archive, self.section, now
        )
        report.seconds = time.monotonic() - t0
        self.last = report
        return report

    def maybe_run(self, now: float | None = None) -> RetentionReport | None:
        """Run a pass unless another process of the station ran one within ``interval_s``."""
        ttl = max(1, int(self.section.interval_s * 0.9))
        if not self.client.set(self.names.retention_lock, str(time.time()), nx=True, ex=ttl):
            return None
        return self.run_once(now)

    def run(self, stop: threading.Event) -> None:
        """Apply retention every ``interval_s`` until ``stop``; a failed pass is logged and tried next time."""
        while not stop.is_set():
            try:
                report = self.maybe_run()
                if report is not None:
                    log.info("%s", report)
            except Exception as err:  # noqa: BLE001 - retention must never stop the recorder's process
                log.error("retention pass failed (retried in %.0f s): %s", self.section.interval_s, err)
            stop.wait(self.section.interval_s)


def start_retention(cfg: StationConfig, client: redis.Redis, store: Store) -> Callable[[], None]:
    """Start the retention thread; the returned function stops it."""
    retention = Retention(cfg, client, store, Archive.for_data_dir(cfg.data_dir))
    stop = threading.Event()
    thread = threading.Thread(target=retention.run, args=(stop,), name="retention", daemon=True)
    thread.start()

    def finish() -> None:
        stop.set()
        thread.join(10)

    finish.retention = retention  # type: ignore[attr-defined]
    return finish
