"""Heartbeats of station processes: a key with a TTL (gone when the process dies) and an entry in the station's
process registry hash (``Names.process_registry``, no TTL) so that a dead process is listed as ``down``."""

from __future__ import annotations

import logging
import os
import socket
import time

import redis

from inspector.contracts.health import ConsumerBeat, ConsumerRole, Health, ProcessEntry, down_line
from inspector.contracts.names import Names
from inspector.progress import ConsumerHeartbeat, Progress

log = logging.getLogger(__name__)
HEARTBEAT_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OSError)


def registry_field(role: ConsumerRole, consumer: str) -> str:
    return f"{role.value}:{consumer}"


def register_beat(
    client: redis.Redis, names: Names, role: ConsumerRole, consumer: str, ttl_s: float, health: Health = Health.OK
) -> None:
    """Record a heartbeat in the process registry (the caller writes its own TTL key)."""
    entry = ProcessEntry(
        role=role,
        consumer=consumer,
        host=socket.gethostname(),
        pid=os.getpid(),
        ttl_s=ttl_s,
        ts=time.time(),
        health=health,
    )
    client.hset(names.process_registry, registry_field(role, consumer), entry.model_dump_json())


def unregister(client: redis.Redis, names: Names, role: ConsumerRole, consumer: str) -> None:
    """A clean stop: the process leaves the registry (it is stopped, not down)."""
    client.hdel(names.process_registry, registry_field(role, consumer))


class StationHeartbeat(ConsumerHeartbeat):
    """The consumer heartbeat (``Names.consumer_heartbeat``, TTL ``3 * period_s``) plus its registry entry."""

    def __init__(self, client: redis.Redis, names: Names, progress: Progress, period_s: float = 1.0) -> None:
        super().__init__(client, names, progress, period_s)
        self.names = names

    @property
    def ttl_s(self) -> float:
        return self.period_s * 3

    def publish(self) -> ConsumerBeat:
        beat = super().publish()
        try:
            register_beat(self.client, self.names, self.progress.role, self.progress.consumer, self.ttl_s, beat.health)
        except HEARTBEAT_ERRORS as err:
            log.debug("process registry entry of %s not written: %s", self.key, err)
        return beat

    def stop(self, unregister_process: bool = True) -> None:
        """Stop beating and delete the key; a clean stop also leaves the registry, a crash stays listed ``down``."""
        super().stop()
        if not unregister_process:
            return
        try:
            unregister(self.client, self.names, self.progress.role, self.progress.consumer)
        except HEARTBEAT_ERRORS:
            pass


def read_registry(client: redis.Redis, names: Names) -> list[ProcessEntry]:
    out: list[ProcessEntry] = []
    for raw in client.hgetall(names.process_registry).values():
        try:
            out.append(ProcessEntry.model_validate_json(raw))
        except ValueError:
            continue
    return out


def heartbeat_key(names: Names, entry: ProcessEntry) -> str:
    """The TTL key a registered process refreshes (workers keep their older ``hb:`` key)."""
    if entry.role is ConsumerRole.WORKER:
        return names.heartbeat(entry.consumer)
    if entry.role is ConsumerRole.CAMERA:
        return names.camera_heartbeat(entry.consumer)
    return names.consumer_heartbeat(entry.role.value, entry.consumer)


def process_rows(client: redis.Redis, names: Names, now: float | None = None) -> list[dict[str, object]]:
    """Every registered process with its heartbeat age and health (``down`` when its key expired)."""
    now = time.time() if now is None else now
    rows: list[dict[str, object]] = []
    for entry in sorted(read_registry(client, names), key=lambda e: (e.role.value, e.consumer)):
        alive = bool(client.exists(heartbeat_key(names, entry)))
        health = entry.health if alive else Health.DOWN
        rows.append(
            {
                "role": entry.role.value,
                "name": entry.consumer,
                "host": entry.host,
                "pid": entry.pid,
                "heartbeat_age_s": round(now - entry.ts, 2),
                "ttl_s": entry.ttl_s,
                "health": health.value,
                "detail": down_line(entry, now) if not alive else "",
            }
        )
    return rows
