"""``inspector status``: health of a station read from Redis.

- every process: each inspection worker, verdict / part recorder, review router, drift monitor, line runner
  and shadow process that ever wrote a heartbeat is in the station's process registry
  (``Names.process_registry``); it shows ``ok``, ``stalled`` (no progress for ``store.stall_s``) or ``down``
  (its heartbeat key expired: the process died or hangs; a clean stop removes it from the registry); the
  camera by its own heartbeat key, and the station's RQ workers by the keys RQ keeps for them;
- lag and pending of every consumer group on every station stream, dead letters, counters: the same reading
  the Prometheus metrics serve (:func:`inspector.telemetry_station.station_view`). Lag is what ``XINFO GROUPS``
  reports on Redis 7; on Redis 6.2 (the embedded server) it is counted inside Redis (:mod:`inspector.bus.lag`),
  shown as ``>=N`` where the count stopped at its cap.

Unhealthy when no worker or no camera is alive, when a consumer reports itself stalled, or when a registered
process is down. A process down for longer than ``FORGET_AFTER_S`` is forgotten (removed from the registry
by this reading): a consumer name that will not come back does not keep the station unhealthy forever.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import redis
from rich.table import Table

from inspector.bus.connection import connect
from inspector.bus.heartbeat import process_rows, registry_field
from inspector.bus.lag import Lag
from inspector.bus.streams import StationBus
from inspector.contracts.config import StationConfig
from inspector.contracts.health import ConsumerBeat, ConsumerRole, Health, stall_line
from inspector.contracts.jobqueue import queue_name
from inspector.contracts.names import Names
from inspector.telemetry_station import station_view

FORGET_AFTER_S = 3600.0
RQ_WORKERS_BY_QUEUE = "rq:workers:{queue}"  # RQ's own registry (rq.worker_registration.WORKERS_BY_QUEUE_KEY)


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _camera_row(client: redis.Redis, n: Names, camera: str) -> dict[str, object]:
    ttl_ms = int(client.pttl(n.camera_heartbeat(camera)))
    return {
        "role": ConsumerRole.CAMERA.value,
        "name": camera,
        "host": "",
        "pid": 0,
        "heartbeat_age_s": None,
        "ttl_s": None,
        "health": (Health.OK if ttl_ms != -2 else Health.DOWN).value,
        "detail": "" if ttl_ms != -2 else f"camera {camera}: no heartbeat",
    }


def _rq_rows(client: redis.Redis, queue: str, now: float) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for key in sorted(_text(k) for k in client.smembers(RQ_WORKERS_BY_QUEUE.format(queue=queue))):
        beat = client.hget(key, "last_heartbeat")
        age = None
        if beat:
            try:
                at = datetime.strptime(_text(beat)[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
                age = round(now - at, 2)
            except ValueError:
                age = None
        alive = bool(client.exists(key))
        rows.append(
            {
                "role": ConsumerRole.RQ_WORKER.value,
                "name": key.rsplit(":", 1)[-1],
                "host": "",
                "pid": 0,
                "heartbeat_age_s": age,
                "ttl_s": None,
                "health": (Health.OK if alive else Health.DOWN).value,
                "detail": "" if alive else f"RQ worker {key}: its key expired",
            }
        )
    return rows


def process_table(
    cfg: StationConfig, client: redis.Redis, n: Names, now: float | None = None
) -> list[dict[str, object]]:
    """Every known process of the station with its heartbeat age and health; forgets long-dead entries."""
    now = time.time() if now is None else now
    rows = process_rows(client, n, now)
    for row in rows:
        age = row["heartbeat_age_s"]
        if row["health"] == Health.DOWN.value and isinstance(age, float) and age > FORGET_AFTER_S:
            client.hdel(n.process_registry, registry_field(ConsumerRole(str(row["role"])), str(row["name"])))
    rows = [
        r
        for r in rows
        if not (
            r["health"] == Health.DOWN.value
            and isinstance(r["heartbeat_age_s"], float)
            and r["heartbeat_age_s"] > FORGET_AFTER_S
        )
    ]
    rows.append(_camera_row(client, n, cfg.camera.id))
    return rows + _rq_rows(client, queue_name(cfg), now)


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
    processes = process_table(cfg, client, n)
    down = [
        str(p["detail"])
        for p in processes
        if p["health"] == Health.DOWN.value and p["role"] not in (ConsumerRole.CAMERA.value,)
    ]
    groups = {g["name"].decode() if isinstance(g["name"], bytes) else g["name"]: g for g in bus.group_info(n.frames)}
    g = groups.get(cfg.worker.group, {})
    counters = bus.counters()
    view = station_view(cfg, client)
    frames_group = next((v for v in view["groups"] if v["stream"] == "frames" and v["group"] == cfg.worker.group), None)
    camera_alive = bool(client.exists(n.camera_heartbeat(cfg.camera.id)))
    return {
        "station": cfg.station.id,
        "time": time.time(),
        "workers": workers,
        "workers_alive": len(workers),
        "camera_alive": camera_alive,
        "frames_in_stream": client.xlen(n.frames) if client.exists(n.frames) else 0,
        "pending": int(g.get("pending", 0) or 0),
        "lag": None if frames_group is None else str(Lag(frames_group["lag"], frames_group["lag_capped"])),
        "groups": view["groups"],
        "dead_letters": client.xlen(n.dead_letter) if client.exists(n.dead_letter) else 0,
        "counters": counters,
        "not_inspected": max(
            0, counters.get("published", 0) - counters.get("verdicts", 0) - int(g.get("pending", 0) or 0)
        ),
        "processes": processes,
        "down": down,
        "consumers": [c.model_dump(mode="json") for c in consumers],
        "stalled": stalled,
        "review_inbox": client.xlen(n.review_inbox) if client.exists(n.review_inbox) else 0,
        "healthy": bool(workers) and camera_alive and not stalled and not down,
    }


def render_status(st: dict[str, Any]) -> Table:
    t = Table(title=f"station {st['station']} — {'HEALTHY' if st['healthy'] else 'NOT HEALTHY (line rejecting)'}")
    t.add_column("item")
    t.add_column("value", justify="right")
    for key in (
        "workers_alive",
        "camera_alive",
        "frames_in_stream",
        "pending",
        "lag",
        "dead_letters",
        "not_inspected",
        "review_inbox",
    ):
        t.add_row(key, str(st[key]))
    for p in st.get("processes", []):
        age = p["heartbeat_age_s"]
        health = str(p["health"]).upper()
        colour = "green" if p["health"] == Health.OK.value else "red"
        t.add_row(
            f"process {p['role']} {p['name']}",
            f"[{colour}]{health}[/{colour}]  heartbeat {f'{age:.1f} s ago' if age is not None else '-'}"
            + (f"  pid {p['pid']}" if p["pid"] else ""),
        )
    for g in st.get("groups", []):
        t.add_row(
            f"group {g['stream']}/{g['group']}",
            f"lag {Lag(g['lag'], g['lag_capped'])}  pending {g['pending']}  consumers {g['consumers']}",
        )
    for c in st["consumers"]:
        t.add_row(f"{c['role']} {c['consumer']}", f"{c['health'].upper()}  {c['done']} done, {c['errors']} errors")
    for line in st["stalled"]:
        t.add_row("[red]stalled[/red]", line)
    for line in st["down"]:
        t.add_row("[red]down[/red]", line)
    for k, v in sorted(st["counters"].items()):
        t.add_row(f"counter {k}", str(v))
    for w in st["workers"]:
        lat = w.get("latency_ms", {}).get("end_to_end", {})
        t.add_row(
            f"worker {w['worker']}",
            f"{w['model_version']}  e2e p50 {lat.get('p50', '-')} ms p99 {lat.get('p99', '-')} ms",
        )
    return t
