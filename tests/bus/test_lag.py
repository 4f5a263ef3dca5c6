"""Consumer-group lag on the embedded Redis (6.2, no ``lag`` in XINFO GROUPS): counted inside Redis, the same
number in ``inspector status`` and in the Prometheus metrics."""

from __future__ import annotations

import redis

from inspector.bus.lag import Lag, group_lag
from inspector.bus.streams import StationBus
from inspector.contracts.config import StationConfig
from inspector.status import station_status
from inspector.telemetry_station import StationCollector, station_view


def _xinfo(client: redis.Redis, stream: str, group: str) -> dict[str, object]:
    for g in client.xinfo_groups(stream):
        g = {(k.decode() if isinstance(k, bytes) else k): v for k, v in g.items()}
        if g["name"] in (group, group.encode()):
            return g
    raise AssertionError(f"no group {group} on {stream}")


def _metric(cfg: StationConfig, name: str, stream: str, group: str) -> float:
    for family in StationCollector(cfg).collect():
        for sample in family.samples:
            if sample.name == name and sample.labels == {"stream": stream, "group": group}:
                return float(sample.value)
    raise AssertionError(f"no {name} for {stream}/{group}")


def test_lag_of_a_group_that_read_3_of_10_entries_is_7_in_status_and_metrics(
    station_config: StationConfig, redis_client: redis.Redis
) -> None:
    cfg = station_config
    events = StationBus(redis_client, cfg).names.events
    redis_client.xgroup_create(events, "readers", id="0", mkstream=True)
    for i in range(10):
        redis_client.xadd(events, {"m": f"{i}", "img": b"x" * 10_000})
    redis_client.xreadgroup("readers", "r1", {events: ">"}, count=3)

    assert group_lag(redis_client, events, _xinfo(redis_client, events, "readers")) == Lag(7)
    view = {(g["stream"], g["group"]): g for g in station_view(cfg, redis_client)["groups"]}
    assert view[("events", "readers")]["lag"] == 7 and view[("events", "readers")]["pending"] == 3
    status = {(g["stream"], g["group"]): g for g in station_status(cfg)["groups"]}  # type: ignore[attr-defined]  # status() returns a plain JSON dict
    assert status[("events", "readers")]["lag"] == 7
    assert _metric(cfg, "inspector_stream_lag", "events", "readers") == 7

    redis_client.xreadgroup("readers", "r1", {events: ">"}, count=100)
    status = {(g["stream"], g["group"]): g for g in station_status(cfg)["groups"]}  # type: ignore[attr-defined]  # status() returns a plain JSON dict
    assert status[("events", "readers")]["lag"] == 0
    assert _metric(cfg, "inspector_stream_lag", "events", "readers") == 0


def test_the_count_stops_at_its_cap_and_says_so(station_config: StationConfig, redis_client: redis.Redis) -> None:
    events = StationBus(redis_client, station_config).names.events
    redis_client.xgroup_create(events, "readers", id="0", mkstream=True)
    for i in range(250):  # more than one batch of the script
        redis_client.xadd(events, {"m": f"{i}"})
    info = _xinfo(redis_client, events, "readers")
    info.pop("lag", None)  # as Redis 6.2 (or Redis 7 after deletions) gives it: counted by the script
    assert group_lag(redis_client, events, info) == Lag(250)
    capped = group_lag(redis_client, events, info, cap=120)
    assert capped == Lag(120, capped=True) and str(capped) == ">=120"


def test_the_servers_own_lag_is_used_when_it_gives_one(redis_client: redis.Redis) -> None:
    assert group_lag(redis_client, "no-such-stream", {"lag": 4, "last-delivered-id": b"0-0"}) == Lag(4)
