"""``inspector status``: health of a station read from Redis (workers, camera, background consumers, lag and
pending of every consumer group on every station stream, dead letters; the same reading the Prometheus
metrics serve, :func:`inspector.telemetry.station_view`). Unhealthy when no worker or no camera is alive, or when a consumer (verdict recorder,
review router) reports itself stalled: its database or disk has not let it make progress for ``store.stall_s``."""

from __future__ import annotations

import json
import time

from rich.table import Table

from inspector.bus.connection import connect
from inspector.bus.streams import StationBus
from inspector.contracts.config import StationConfig
from inspector.contracts.health import ConsumerBeat, Health, stall_line
from inspector.telemetry import station_view


def station_status(cfg: StationConfig) -> dict[str, object]:
    client = connect(cfg, start_embedded=False)
    bus = StationBus(client, cfg)
    n = bus.names
    workers = []
    for key in client.scan_iter(match=n.heartbeat_pattern, count=100):
        raw = client.get(key)
        if raw:
            workers.append(json.loads(raw))
    consumers = []
    for key in client.scan_iter(match=n.consumer_heartbeat_pattern, count=100):
        raw = client.get(key)
        if raw:
            consumers.append(ConsumerBeat.model_validate_json(raw))
    stalled = [stall_line(c) for c in consumers if c.health is Health.STALLED]
    groups = {g["name"].decode() if isinstance(g["name"], bytes) else g["name"]: g for g in bus.group_info(n.frames)}
    g = groups.get(cfg.worker.group, {})
    counters = bus.counters()
    view = station_view(cfg, client)
    return {
        "station": cfg.station.id,
        "time": time.time(),
        "workers": workers,
        "workers_alive": len(workers),
        "camera_alive": bool(client.exists(n.camera_heartbeat(cfg.camera.id))),
        "frames_in_stream": client.xlen(n.frames) if client.exists(n.frames) else 0,
        "pending": int(g.get("pending", 0) or 0),
        "lag": g.get("lag"),
        "groups": view["groups"],
        "dead_letters": client.xlen(n.dead_letter) if client.exists(n.dead_letter) else 0,
        "counters": counters,
        "not_inspected": max(0, counters.get("published", 0) - counters.get("verdicts", 0) - int(g.get("pending", 0) or 0)),
        "consumers": [c.model_dump(mode="json") for c in consumers],
        "stalled": stalled,
        "review_inbox": client.xlen(n.review_inbox) if client.exists(n.review_inbox) else 0,
        "healthy": bool(workers) and bool(client.exists(n.camera_heartbeat(cfg.camera.id))) and not stalled,
    }


def render_status(st: dict[str, object]) -> Table:
    t = Table(title=f"station {st['station']} — {'HEALTHY' if st['healthy'] else 'NOT HEALTHY (line rejecting)'}")
    t.add_column("item")
    t.add_column("value", justify="right")
    for key in ("workers_alive", "camera_alive", "frames_in_stream", "pending", "lag", "dead_letters", "not_inspected",
                "review_inbox"):
        t.add_row(key, str(st[key]))
    for g in st.get("groups", []):  # type: ignore[union-attr]
        t.add_row(f"group {g['stream']}/{g['group']}",
                  f"lag {g['lag'] if g['lag'] is not None else '-'}  pending {g['pending']}  consumers {g['consumers']}")
    for c in st["consumers"]:  # type: ignore[union-attr]
        t.add_row(f"{c['role']} {c['consumer']}", f"{c['health'].upper()}  {c['done']} done, {c['errors']} errors")
    for line in st["stalled"]:  # type: ignore[union-attr]
        t.add_row("[red]stalled[/red]", line)
    for k, v in sorted(st["counters"].items()):  # type: ignore[union-attr]
        t.add_row(f"counter {k}", str(v))
    for w in st["workers"]:  # type: ignore[union-attr]
        lat = w.get("latency_ms", {}).get("end_to_end", {})
        t.add_row(f"worker {w['worker']}", f"{w['model_version']}  e2e p50 {lat.get('p50', '-')} ms p99 {lat.get('p99', '-')} ms")
    return t
