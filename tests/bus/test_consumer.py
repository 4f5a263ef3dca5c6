"""The consumer lifecycle (inspector.bus.consumer.StreamConsumer) on a real Redis: setup again after a failure,
doubling backoff with a cap, teardown whatever ended the loop, a heartbeat with its process-registry entry that a
clean stop removes, own pending entries recovered."""

from __future__ import annotations

import threading
import time
from typing import ClassVar

import redis

from inspector.bus.consumer import StreamConsumer
from inspector.bus.heartbeat import process_rows
from inspector.contracts.config import StationConfig
from inspector.contracts.health import ConsumerRole
from inspector.contracts.names import STREAM_FIELD_MESSAGE


class Flaky(StreamConsumer):
    role: ClassVar[ConsumerRole] = ConsumerRole.RECORDER
    backoff_start_s: ClassVar[float] = 0.01
    backoff_max_s: ClassVar[float] = 0.04

    def __init__(self, cfg: StationConfig, client: redis.Redis, failures: int) -> None:
        super().__init__(cfg, client, "flaky")
        self.failures, self.setups, self.steps, self.torn_down = failures, 0, 0, False
        self.waits: list[float] = []

    def setup(self) -> None:
        self.setups += 1

    def step(self) -> int:
        self.steps += 1
        if self.failures:
            self.failures -= 1
            self.waits.append(self.backoff_s)
            raise redis.ConnectionError("down")
        if self.steps > 8:
            self.stop()
        return 0

    def teardown(self) -> None:
        self.torn_down = True


def test_failures_back_off_doubling_to_the_cap_and_setup_runs_again(
    station_config: StationConfig, redis_client: redis.Redis
) -> None:
    c = Flaky(station_config, redis_client, failures=4)
    c.run()
    assert c.waits == [0.01, 0.02, 0.04, 0.04]
    assert c.setups == 5 and c.torn_down and c.progress.errors == 4


def test_other_errors_end_the_loop_after_teardown(station_config: StationConfig, redis_client: redis.Redis) -> None:
    class Broken(Flaky):
        def step(self) -> int:
            raise ValueError("a bug")

    c = Broken(station_config, redis_client, failures=0)
    try:
        c.run()
    except ValueError:
        pass
    else:
        raise AssertionError("a non-retried error must propagate")
    assert c.torn_down
    rows = process_rows(redis_client, c.bus.names)  # a crash is no clean stop: listed, and down at once
    assert [(r["name"], r["health"]) for r in rows] == [("flaky", "down")]


def test_heartbeat_registers_and_a_clean_stop_unregisters(
    station_config: StationConfig, redis_client: redis.Redis
) -> None:
    class Idle(Flaky):
        def step(self) -> int:
            self.stop_event.wait(0.05)
            return 0

    c = Idle(station_config, redis_client, failures=0)
    stop = threading.Event()
    t = threading.Thread(target=c.run, args=(stop,))
    t.start()
    names = c.bus.names
    deadline = time.monotonic() + 5
    while not process_rows(redis_client, names) and time.monotonic() < deadline:
        time.sleep(0.02)
    rows = process_rows(redis_client, names)
    assert [(r["role"], r["name"], r["health"]) for r in rows] == [("recorder", "flaky", "ok")]
    stop.set()
    t.join(5)
    assert process_rows(redis_client, names) == []  # stopped, not down
    assert not redis_client.exists(names.consumer_heartbeat("recorder", "flaky"))


def test_recover_own_returns_what_this_name_left_pending(
    station_config: StationConfig, redis_client: redis.Redis
) -> None:
    c = Flaky(station_config, redis_client, failures=0)
    stream, group = c.bus.names.verdicts, "g"
    c.bus.ensure_group(stream, group)
    ids = [redis_client.xadd(stream, {STREAM_FIELD_MESSAGE: b"{}"}).decode() for _ in range(3)]
    assert len(c.bus.read_new(stream, group, "flaky", 10, None)) == 3  # read, never acknowledged: the process died
    assert [e.entry_id for e in c.recover_own(stream, group, 10)] == ids
    assert c.recover_own(stream, "g", 10) and not c.bus.read_new(stream, group, "other", 10, None)
