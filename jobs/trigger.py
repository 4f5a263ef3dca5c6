"""Retrain trigger policy: one retraining per station at a time, duplicates dropped.

``request_retrain`` takes the station's lock (``Names.retrain_lock``: SET NX with expiry, value = the job
id) before enqueueing, so twenty alarms in a minute start exactly one job: the first one takes the lock,
the rest find it held (or the dedupe window still open) and are answered with the running job's id. The
job releases the lock (compare-and-delete) when it ends for good; a worker killed mid-job leaves the lock
to its retry, and its expiry (job timeout + margin) frees the station if everything died.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import redis
from rq import Retry

from inspector.bus.streams import StationBus
from inspector.contracts.config import StationConfig
from inspector.contracts.messages import Event, EventType
from inspector.drift.monitor import DriftAlarm
from inspector.drift.reference import IMAGE_STATS
from jobs.queues import JobKeys, names_of, station_queue

LOCK_MARGIN_S = 300
RETRAIN_FUNC = "jobs.pipeline.retrain"

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class RetrainRequest:
    status: str  # enqueued | running | deduped
    job_id: str | None


def lock_ttl_s(cfg: StationConfig) -> int:
    return int(cfg.jobs.job_timeout_s * (1 + cfg.jobs.retries) + LOCK_MARGIN_S)


def release_lock(client: redis.Redis, cfg: StationConfig, job_id: str) -> bool:
    """Free the station's retrain lock if ``job_id`` holds it."""
    return bool(client.eval(_RELEASE, 1, JobKeys(names_of(cfg)).lock, job_id))


def lock_holder(client: redis.Redis, cfg: StationConfig) -> str | None:
    raw = client.get(JobKeys(names_of(cfg)).lock)
    return raw.decode() if isinstance(raw, bytes) else raw


def request_retrain(cfg: StationConfig, client: redis.Redis, reason: str, source: str = "manual",
                    actor: str = "system", condition_changed: bool = False, dedupe: bool = True,
                    data: dict[str, Any] | None = None) -> RetrainRequest:
    """Enqueue one retraining job for the station unless one runs or was just requested."""
    keys = JobKeys(names_of(cfg))
    if dedupe and cfg.jobs.retrain_dedupe_s > 0:
        fresh = client.set(keys.dedupe, reason, nx=True, px=int(cfg.jobs.retrain_dedupe_s * 1000))
        if not fresh:
            return RetrainRequest("deduped", lock_holder(client, cfg))
    job_id = f"retrain-{uuid.uuid4().hex[:12]}"
    if not client.set(keys.lock, job_id, nx=True, ex=lock_ttl_s(cfg)):
        return RetrainRequest("running", lock_holder(client, cfg))
    try:
        _enqueue(cfg, client, job_id, reason, source, actor, condition_changed, data or {})
    except BaseException:
        release_lock(client, cfg, job_id)
        raise
    return RetrainRequest("enqueued", job_id)


def _enqueue(cfg: StationConfig, client: redis.Redis, job_id: str, reason: str, source: str, actor: str,
             condition_changed: bool, data: dict[str, Any]) -> None:
    q = station_queue(cfg, client)
    retry = Retry(max=cfg.jobs.retries, interval=1) if cfg.jobs.retries else None
    q.enqueue(RETRAIN_FUNC, cfg.station.id, reason, source, actor, condition_changed,
              job_id=job_id, job_timeout=cfg.jobs.job_timeout_s, retry=retry, result_ttl=7 * 86_400,
              failure_ttl=30 * 86_400, description=f"retrain {cfg.station.id}: {reason}",
              meta={"station": cfg.station.id, "kind": "retrain", "reason": reason, "source": source,
                    "step": "queued", "progress": 0.0, "data": data})
    pipe = client.pipeline(transaction=False)
    pipe.lpush(JobKeys(names_of(cfg)).history, job_id)
    pipe.ltrim(JobKeys(names_of(cfg)).history, 0, 99)
    pipe.execute()
    StationBus(client, cfg).publish_event(Event(
        station=cfg.station.id, type=EventType.JOB, message=f"retraining queued ({source}): {reason}",
        data={"job_id": job_id, "kind": "retrain", "status": "queued", "step": "queued", "progress": 0.0,
              "requested_by": actor, "reason": reason, "source": source}))


def retrain_on_drift(cfg: StationConfig, client: redis.Redis) -> Any:
    """A DriftMonitor ``on_alarm`` callback that requests a retraining (deduped, locked)."""

    def on_alarm(alarm: DriftAlarm) -> None:
        changed = any(k in IMAGE_STATS for k in alarm.details)
        request_retrain(cfg, client, f"drift alarm: {alarm.statistic}={alarm.value:.3g}", source="drift",
                        actor="drift-monitor", condition_changed=changed,
                        data={"tripped": sorted(alarm.details), "frames_seen": alarm.frames_seen})

    return on_alarm
