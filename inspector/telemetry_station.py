"""The station view of the metrics: what every process with a station Redis client serves, read at each
scrape (``inspector.telemetry`` registers it; ``inspector status`` reads the same :func:`station_view`)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from inspector.contracts.config import StationConfig

log = logging.getLogger("inspector.telemetry")


def _scrape_client(cfg: StationConfig) -> Any:
    """A client that fails fast (1 s, no long reconnect) so that a scrape never stalls on an absent Redis."""
    from inspector.bus.connection import station_url
    from inspector.bus.fast import fast_client

    return fast_client(cfg, station_url(cfg), timeout_s=1.0)


class StationCollector(Collector):
    """The Redis-side view of the station, as `inspector status` computes it, read at every scrape."""

    def __init__(self, cfg: StationConfig) -> None:
        self.cfg = cfg
        self.client: Any = None

    def _client(self) -> Any:
        if self.client is None:  # made at the first scrape: never waits on Redis for long
            self.client = _scrape_client(self.cfg)
        return self.client

    def collect(self) -> Iterable[Any]:
        up = GaugeMetricFamily("inspector_redis_up", "1 when the station's Redis answered this scrape.")
        try:
            view = station_view(self.cfg, self._client())
        except Exception as err:  # noqa: BLE001 - Redis away: say so, nothing else
            log.debug("station metrics: %s", err)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        length = GaugeMetricFamily("inspector_stream_length", "Entries in a station stream.", labels=["stream"])
        lag = GaugeMetricFamily(
            "inspector_stream_lag",
            "Entries of the stream not yet delivered to the group "
            "(a lower bound when inspector_stream_lag_capped is 1).",
            labels=["stream", "group"],
        )
        capped = GaugeMetricFamily(
            "inspector_stream_lag_capped",
            "1 when the lag count stopped at its cap (the lag is at least that many).",
            labels=["stream", "group"],
        )
        pending = GaugeMetricFamily(
            "inspector_stream_pending",
            "Entries delivered to the group and not yet acknowledged.",
            labels=["stream", "group"],
        )
        consumers = GaugeMetricFamily(
            "inspector_stream_consumers", "Consumers of the group.", labels=["stream", "group"]
        )
        for g in view["groups"]:
            lag.add_metric([g["stream"], g["group"]], float(g["lag"]))
            capped.add_metric([g["stream"], g["group"]], 1 if g["lag_capped"] else 0)
            pending.add_metric([g["stream"], g["group"]], g["pending"])
            consumers.add_metric([g["stream"], g["group"]], g["consumers"])
        for stream, n in view["lengths"].items():
            length.add_metric([stream], n)
        yield from (length, lag, capped, pending, consumers)
        dead = GaugeMetricFamily("inspector_dead_letters", "Entries in the dead-letter stream.")
        dead.add_metric([], view["lengths"].get("dead_letter", 0))
        yield dead
        counters = CounterMetricFamily(
            "inspector_station_counter",
            "The station's counters in Redis (what `inspector status` shows as counter NAME).",
            labels=["name"],
        )
        for name, v in sorted(view["counters"].items()):
            counters.add_metric([name], v)
        yield counters
        alive = GaugeMetricFamily("inspector_workers_alive", "Live worker heartbeat keys.")
        alive.add_metric([], view["workers_alive"])
        cam = GaugeMetricFamily("inspector_camera_alive", "1 while the camera's heartbeat key is alive.")
        cam.add_metric([], 1 if view["camera_alive"] else 0)
        yield alive
        yield cam


def stream_names(cfg: StationConfig) -> dict[str, str]:
    """Every station stream by its short name (the label value)."""
    from inspector.contracts.names import Names

    n = Names(cfg.redis.prefix, cfg.station.id)
    return {
        "frames": n.frames,
        "verdicts": n.verdicts,
        "events": n.events,
        "review": n.review,
        "review_inbox": n.review_inbox,
        "dead_letter": n.dead_letter,
        "parts": n.parts,
    }


def station_view(cfg: StationConfig, client: Any) -> dict[str, Any]:
    """Lengths of the station streams, lag / pending / consumers of every consumer group on them, counters:
    one reading shared by ``inspector status`` and the metrics (so the two always agree on what they mean).
    Lag is :func:`inspector.bus.lag.group_lag` (Redis 7's own, else counted inside Redis up to a cap:
    ``lag_capped`` then says it is at least ``lag``)."""
    import redis as _redis

    from inspector.bus.lag import group_lag
    from inspector.contracts.names import Names

    n = Names(cfg.redis.prefix, cfg.station.id)
    lengths: dict[str, int] = {}
    groups: list[dict[str, Any]] = []
    for short, key in stream_names(cfg).items():
        try:
            lengths[short] = int(client.xlen(key))
            infos = client.xinfo_groups(key) if lengths[short] or client.exists(key) else []
        except _redis.ResponseError:  # no such stream
            lengths[short] = 0
            continue
        for g in infos:
            g = {(k.decode() if isinstance(k, bytes) else k): v for k, v in g.items()}
            name = g["name"].decode() if isinstance(g["name"], bytes) else str(g["name"])
            lag = group_lag(client, key, g)
            groups.append(
                {
                    "stream": short,
                    "group": name,
                    "lag": lag.entries,
                    "lag_capped": lag.capped,
                    "pending": int(g.get("pending", 0) or 0),
                    "consumers": int(g.get("consumers", 0) or 0),
                }
            )
    counters = {k.decode(): int(v) for k, v in client.hgetall(n.counters).items()}
    workers = sum(1 for _ in client.scan_iter(match=n.heartbeat_pattern, count=500))
    return {
        "lengths": lengths,
        "groups": groups,
        "counters": counters,
        "workers_alive": workers,
        "camera_alive": bool(client.exists(n.camera_heartbeat(cfg.camera.id))),
    }
