"""Retention on a real Redis and a real SQLite database: streams trimmed by age but never past what the recorder
has not recorded, done-keys expiring with the verdicts stream, verdict rows by age and count, archived images by
age and size with labelled frames kept, one pass per interval across processes, and the recorder's process runs it."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from inspector.archive import Archive
from inspector.bus.streams import StationBus
from inspector.contracts.config import StationConfig
from inspector.contracts.messages import Decision, ReviewRequest, Verdict
from inspector.contracts.names import STREAM_FIELD_MESSAGE, Names
from inspector.store import open_store
from inspector.store.db import Store
from inspector.store.models import ReviewItemRow, VerdictRow
from inspector.store.records import add_review_item, record_verdicts
from inspector.store.retention import Retention, delete_old_verdicts, prune_archive, trim_stream

NOW = time.time()
HOUR = 3600.0


def _verdict(cfg: StationConfig, captured_at: float, i: int = 0) -> Verdict:
    return Verdict(
        station=cfg.station.id,
        frame_id=uuid.uuid4().hex,
        camera="cam0",
        seq=i,
        part_id=f"p{i}",
        captured_at=captured_at,
        decision=Decision.PASS,
        reject=False,
    )


@pytest.fixture
def store(station_config: StationConfig) -> Store:
    s = open_store(station_config)
    yield s
    s.close()


def _add(client, stream: str, at: float, n: int) -> list[str]:  # type: ignore[no-untyped-def]
    base = int(at * 1000)
    return [client.xadd(stream, {STREAM_FIELD_MESSAGE: b"{}"}, id=f"{base}-{k}").decode() for k in range(n)]


def test_stream_trim_never_passes_what_the_recorder_has_not_recorded(
    station_config: StationConfig, redis_client
) -> None:  # type: ignore[no-untyped-def]
    n = Names(station_config.redis.prefix, station_config.station.id)
    redis_client.xgroup_create(n.verdicts, n.store_group, id="0", mkstream=True)
    old = _add(redis_client, n.verdicts, NOW - 2 * HOUR, 10)
    new = _add(redis_client, n.verdicts, NOW - 60, 5)
    # the recorder took 6 old entries and recorded (acked) 4: entries 4..5 pending, 6..9 never read
    got = redis_client.xreadgroup(n.store_group, "rec", {n.verdicts: ">"}, count=6)[0][1]
    redis_client.xack(n.verdicts, n.store_group, *[e[0] for e in got[:4]])
    assert trim_stream(redis_client, n.verdicts, HOUR, (n.store_group,), NOW) == 4
    assert [e[0].decode() for e in redis_client.xrange(n.verdicts)] == old[4:] + new
    # once everything is recorded, only the young entries stay
    rest = redis_client.xreadgroup(n.store_group, "rec", {n.verdicts: ">"})[0][1]
    redis_client.xack(n.verdicts, n.store_group, *old[4:6], *[e[0] for e in rest])
    assert trim_stream(redis_client, n.verdicts, HOUR, (n.store_group,), NOW) == 6
    assert [e[0].decode() for e in redis_client.xrange(n.verdicts)] == new
    # a group nobody protects does not hold a stream back
    redis_client.xgroup_create(n.events, n.line_group, id="0", mkstream=True)
    _add(redis_client, n.events, NOW - 2 * HOUR, 3)
    assert trim_stream(redis_client, n.events, HOUR, (), NOW) == 3
    assert trim_stream(redis_client, n.review, HOUR, (), NOW) == 0  # no such stream: nothing to do, no error


def test_done_keys_expire_with_the_verdicts_stream(station_config: StationConfig, redis_client) -> None:  # type: ignore[no-untyped-def]
    station_config.retention.stream_max_age_s = 300
    bus = StationBus(redis_client, station_config)
    v = _verdict(station_config, NOW)
    assert bus.commit_verdicts([(v, "")]) == [True]
    ttl = redis_client.ttl(bus.names.done(v.frame_id))
    assert 290 <= ttl <= 300, ttl


def test_verdict_rows_by_age_then_count(station_config: StationConfig, store: Store) -> None:
    rows = [_verdict(station_config, NOW - 10 * HOUR + i, i) for i in range(30)]
    rows += [_verdict(station_config, NOW - 60 + i, 100 + i) for i in range(20)]
    record_verdicts(store, rows)
    section = station_config.retention.model_copy(
        update={"verdict_rows_max_age_s": 5 * HOUR, "verdict_rows_max": 0, "delete_batch": 100}
    )
    assert delete_old_verdicts(store, section, NOW) == 30
    section = section.model_copy(update={"verdict_rows_max": 12})
    assert delete_old_verdicts(store, section, NOW) == 8
    with store.session() as s:
        kept = sorted(s.scalars(select(VerdictRow.seq)))
    assert kept == list(range(108, 120))  # the newest 12


def _image(archive: Archive, k: int, age_s: float, size: int = 1000) -> str:
    sha = archive.put(bytes([k % 256]) * size + str(k).encode(), "png")
    t = NOW - age_s
    os.utime(archive.path(sha), (t, t))
    return sha


def _item(store: Store, cfg: StationConfig, sha: str, status: str = "pending") -> int:
    item = add_review_item(
        store,
        ReviewRequest(
            station=cfg.station.id,
            frame_id=uuid.uuid4().hex,
            part_id="p",
            camera="cam0",
            reasons=["test"],
            priority=1,
            image_sha256=sha,
            decision=Decision.REVIEW,
        ),
        image_ext="png",
    )
    if status != "pending":
        with store.session() as s:
            s.execute(update(ReviewItemRow).where(ReviewItemRow.id == item).values(status=status))
    return item


def test_archive_by_size_and_age_keeps_labelled_images(
    station_config: StationConfig, store: Store, tmp_path: Path
) -> None:
    archive = Archive(tmp_path / "archive")
    shas = [_image(archive, k, age_s=1000 - k) for k in range(10)]  # shas[0] oldest
    labelled = _item(store, station_config, shas[0], "labelled")
    for sha in shas[1:]:
        _item(store, station_config, sha)
    size = archive.path(shas[0]).stat().st_size
    section = station_config.retention.model_copy(update={"archive_max_bytes": 6 * size, "archive_max_age_s": 0})
    images, freed, items = prune_archive(store, archive, section, NOW)
    assert (images, freed, items) == (4, 4 * size, 4)  # the labelled oldest is kept, the next four go
    assert archive.exists(shas[0]) and not any(archive.exists(s) for s in shas[1:5])
    assert all(archive.exists(s) for s in shas[5:])
    with store.session() as s:
        assert s.scalar(select(func.count(ReviewItemRow.id))) == 6
        assert s.get(ReviewItemRow, labelled) is not None
    section = section.model_copy(update={"archive_max_bytes": 0, "archive_max_age_s": 1000 - 7.5})
    assert prune_archive(store, archive, section, NOW)[0] == 3  # ages 995..993 > 992.5 s; 992, 991 stay
    assert sorted(s for s in shas if archive.exists(s)) == sorted([shas[0], shas[8], shas[9]])


def test_one_pass_per_interval_across_processes(
    station_config: StationConfig,
    redis_client,
    store: Store,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    a = Retention(station_config, redis_client, store, Archive(tmp_path / "a"))
    b = Retention(station_config, redis_client, store, Archive(tmp_path / "a"))
    assert a.maybe_run() is not None
    assert b.maybe_run() is None
    assert redis_client.ttl(a.names.retention_lock) > 0


def test_the_recorder_process_runs_retention(station_config: StationConfig, redis_client, store: Store) -> None:  # type: ignore[no-untyped-def]
    """Wired: starting the recorder (what `inspector worker` does) applies retention within interval_s."""
    from inspector.station_sinks import start_recorder

    station_config.retention.interval_s = 1
    station_config.retention.verdict_rows_max = 5
    record_verdicts(store, [_verdict(station_config, NOW - i, i) for i in range(20)])
    finish = start_recorder(station_config, redis_client, "rec-test")
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with store.session() as s:
                if s.scalar(select(func.count(VerdictRow.id))) == 5:
                    break
            time.sleep(0.1)
    finally:
        finish()
    with store.session() as s:
        assert s.scalar(select(func.count(VerdictRow.id))) == 5
