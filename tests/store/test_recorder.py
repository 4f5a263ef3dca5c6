from __future__ import annotations

import threading
import time

import redis
from sqlalchemy import func, select

from inspector.contracts.config import StationConfig
from inspector.contracts.names import STREAM_FIELD_MESSAGE, Names
from inspector.recording.recorder import VerdictRecorder
from inspector.store import Store
from inspector.store.fakes import make_verdict
from inspector.store.models import VerdictRow


def rows(store: Store) -> int:
    with store.session() as s:
        return int(s.scalar(select(func.count()).select_from(VerdictRow)))


def publish(client: redis.Redis, stream: str, payloads: list[bytes]) -> None:
    pipe = client.pipeline(transaction=False)
    for p in payloads:
        pipe.xadd(stream, {STREAM_FIELD_MESSAGE: p})
    pipe.execute()


def test_5000_verdicts_exactly_once_and_replay_is_ignored(
    station_config: StationConfig, redis_client: redis.Redis, store: Store
) -> None:
    names = Names(station_config.redis.prefix, station_config.station.id)
    payloads = [make_verdict(station_config.station.id, i).to_json() for i in range(5000)]
    publish(redis_client, names.verdicts, payloads)
    rec = VerdictRecorder(station_config, redis_client, store, "rec-1")
    assert rec.drain() == 5000
    assert rows(store) == 5000
    assert redis_client.xpending(names.verdicts, names.store_group)["pending"] == 0
    publish(redis_client, names.verdicts, payloads[:1000])  # the same messages again (redelivery, replay)
    redis_client.xadd(names.verdicts, {STREAM_FIELD_MESSAGE: b"\x80not json"})
    assert rec.drain() == 1001
    assert rows(store) == 5000 and rec.stats["bad_entries"] == 1


def test_dead_recorder_entries_are_reclaimed(
    station_config: StationConfig, redis_client: redis.Redis, store: Store
) -> None:
    cfg = station_config.model_copy(deep=True)
    cfg.store.reclaim_idle_ms = 100
    names = Names(cfg.redis.prefix, cfg.station.id)
    publish(redis_client, names.verdicts, [make_verdict(cfg.station.id, i).to_json() for i in range(50)])
    dead = VerdictRecorder(cfg, redis_client, store, "dead")
    dead.ensure_group()
    dead._read(">", None)  # read, never written nor acknowledged: then the process "dies"
    assert redis_client.xpending(names.verdicts, names.store_group)["pending"] == 50
    time.sleep(0.15)
    alive = VerdictRecorder(cfg, redis_client, store, "alive")
    alive.drain()
    assert rows(store) == 50 and alive.stats["reclaimed"] == 50
    assert redis_client.xpending(names.verdicts, names.store_group)["pending"] == 0


def test_run_in_a_thread_flushes_partial_batches(
    station_config: StationConfig, redis_client: redis.Redis, store: Store
) -> None:
    cfg = station_config.model_copy(deep=True)
    cfg.store.flush_ms = 20
    names = Names(cfg.redis.prefix, cfg.station.id)
    rec = VerdictRecorder(cfg, redis_client, store, "rec-t")
    stop = threading.Event()
    thread = threading.Thread(target=rec.run, args=(stop,))
    thread.start()
    publish(redis_client, names.verdicts, [make_verdict(cfg.station.id, i).to_json() for i in range(7)])
    deadline = time.monotonic() + 10
    while rows(store) < 7 and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    thread.join(10)
    assert rows(store) == 7 and not thread.is_alive()
