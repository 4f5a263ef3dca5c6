"""RetrainTrigger on a real Redis: alarms are events; one consumer group; dedupe, lock, suppression, restart."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import redis

from inspector.bus.connection import EmbeddedRedis, client_for_url
from inspector.bus.streams import StationBus
from inspector.contracts.config import StationConfig
from inspector.contracts.messages import Event, EventType
from inspector.contracts.names import Names
from jobs.queues import JobKeys, names_of, station_queue
from jobs.trigger import RetrainTrigger, release_lock

SOURCES = ("drift", "validation", "operator_reports")


def _alarm(
    cfg: StationConfig,
    source: str,
    tripped: dict | None = None,
    version: str | None = None,  # type: ignore[type-arg]
    ts: float | None = None,
) -> Event:
    extra = {"ts": ts} if ts is not None else {}
    return Event(
        station=cfg.station.id,
        type=EventType.DRIFT_ALARM,
        severity="warning",
        message=f"{source} alarm",
        model_version=version,
        data={"source": source, "tripped": tripped or {"x": {}}},
        **extra,
    )


def _publish(bus: StationBus, events: list[Event]) -> None:
    for e in events:
        bus.publish_event(e)


def _drain(trig: RetrainTrigger) -> list:  # type: ignore[type-arg]
    out = []
    while batch := trig.step(block_ms=None):
        out += batch
    return out


def _jobs(cfg: StationConfig, client: redis.Redis) -> tuple[int, list[bytes]]:
    return station_queue(cfg, client).count, client.lrange(JobKeys(names_of(cfg)).history, 0, -1)


def test_twenty_mixed_alarms_enqueue_exactly_one_job(station_config: StationConfig, redis_client: redis.Redis) -> None:
    bus = StationBus(redis_client, station_config)
    trig = RetrainTrigger(station_config, redis_client)
    bus.publish_event(Event(station=station_config.station.id, type=EventType.JOB, message="not an alarm"))
    _publish(bus, [_alarm(station_config, SOURCES[i % 3], {"brightness": {}} if i == 0 else None) for i in range(20)])
    outcomes = _drain(trig)
    assert len(outcomes) == 20 and {o.source for o in outcomes} == set(SOURCES)
    assert [o.status for o in outcomes].count("enqueued") == 1
    assert {o.status for o in outcomes[1:]} <= {"deduped", "running"}
    count, history = _jobs(station_config, redis_client)
    assert count == 1 and len(history) == 1
    job = station_queue(station_config, redis_client).jobs[0]
    assert job.args[2] == "drift" and job.args[4] is True  # source, condition_changed (brightness tripped)
    names = Names(station_config.redis.prefix, station_config.station.id)
    assert redis_client.xpending(names.events, names.retrain_trigger_group)["pending"] == 0


def test_suppressed_deduped_stale_alarms_do_not_enqueue(
    station_config: StationConfig, redis_client: redis.Redis
) -> None:
    cfg = station_config
    names = Names(cfg.redis.prefix, cfg.station.id)
    bus = StationBus(redis_client, cfg)
    trig = RetrainTrigger(cfg, redis_client)
    redis_client.set(names.drift_suppressed, json.dumps({"since": time.time(), "by": "maint"}))
    _publish(bus, [_alarm(cfg, "validation"), _alarm(cfg, "operator_reports")])
    assert [o.status for o in _drain(trig)] == ["suppressed", "suppressed"]
    redis_client.delete(names.drift_suppressed)
    redis_client.hset(names.active_model, mapping={"version": "v2", "path": "/nowhere"})
    _publish(
        bus, [_alarm(cfg, "drift", version="v1"), _alarm(cfg, "drift", ts=time.time() - 2 * cfg.jobs.alarm_max_age_s)]
    )
    assert [o.status for o in _drain(trig)] == ["stale_model", "stale"]
    assert _jobs(cfg, redis_client)[0] == 0
    # one request goes through; the lock is freed (job ended), but the dedupe window still holds the next
    _publish(bus, [_alarm(cfg, "validation", version="v2")])
    (first,) = _drain(trig)
    assert first.status == "enqueued" and first.job_id
    assert release_lock(redis_client, cfg, first.job_id)
    _publish(bus, [_alarm(cfg, "drift", version="v2")])
    assert [o.status for o in _drain(trig)] == ["deduped"]
    count, history = _jobs(cfg, redis_client)
    assert count == 1 and len(history) == 1
    job = station_queue(cfg, redis_client).jobs[0]
    assert job.args[2] == "validation" and job.args[4] is False  # a validation alarm is no condition change


def test_restart_resumes_without_reacting_on_acknowledged(
    station_config: StationConfig, redis_client: redis.Redis
) -> None:
    cfg = station_config.model_copy(deep=True)
    cfg.jobs = cfg.jobs.model_copy(update={"retrain_dedupe_s": 0})  # only the lock stands between alarms
    names = Names(cfg.redis.prefix, cfg.station.id)
    bus = StationBus(redis_client, cfg)
    _publish(bus, [_alarm(cfg, "drift")])  # raised before any trigger ran: waits in the stream
    trig = RetrainTrigger(cfg, redis_client, consumer="t1")
    (first,) = _drain(trig)
    assert first.status == "enqueued"
    assert release_lock(redis_client, cfg, first.job_id or "")  # that job ended
    # the trigger dies after reading (not acknowledging) the next alarm
    _publish(bus, [_alarm(cfg, "validation")])
    redis_client.xreadgroup(names.retrain_trigger_group, "t1", {names.events: ">"}, count=10)
    del trig
    restarted = RetrainTrigger(cfg, redis_client, consumer="t1")
    again = _drain(restarted)
    assert [(o.source, o.status) for o in again] == [("validation", "enqueued")]  # its pending entry, once
    assert release_lock(redis_client, cfg, again[0].job_id or "")
    assert _drain(RetrainTrigger(cfg, redis_client, consumer="t1")) == []  # acknowledged entries never again
    count, history = _jobs(cfg, redis_client)
    assert count == 2 and len(history) == 2


def test_run_thread_survives_redis_outage(station_config: StationConfig, tmp_path: Path) -> None:
    """A real outage (redis-server killed, started again), then a Redis that lost the group: the consumer
    thread keeps going, recreates its group and acts on the alarm published once Redis is back."""
    server = EmbeddedRedis(tmp_path / "own-redis")
    url = server.start()
    cfg = station_config.model_copy(update={"redis": station_config.redis.model_copy(update={"url": url})})
    names = Names(cfg.redis.prefix, cfg.station.id)
    client = client_for_url(url, cfg.redis)
    stop = threading.Event()
    t: threading.Thread | None = None
    try:
        trig = RetrainTrigger(cfg, client)
        t = threading.Thread(target=trig.run, args=(stop, 50), daemon=True)
        t.start()
        server.kill()
        time.sleep(1.0)
        server.start()  # same port and data folder
        other = client_for_url(url, cfg.redis)
        other.xgroup_destroy(names.events, names.retrain_trigger_group)  # as if it came back empty
        deadline = time.monotonic() + 15
        while not other.exists(names.events) or not StationBus(other, cfg).group_info(names.events):
            assert time.monotonic() < deadline, "the trigger never recreated its group"
            time.sleep(0.05)
        StationBus(other, cfg).publish_event(_alarm(cfg, "operator_reports"))
        while not trig.outcomes and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [(o.source, o.status) for o in trig.outcomes] == [("operator_reports", "enqueued")]
        assert t.is_alive()
        other.close()
    finally:
        stop.set()
        if t is not None:
            t.join(5)
        client.close()
        server.stop()
