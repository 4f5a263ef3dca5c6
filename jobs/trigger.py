"""Retrain trigger: DRIFT_ALARM events from every source start at most one retraining per station.

Policy (``request_retrain``)
  The station's lock (``Names.retrain_lock``: SET NX with expiry, value = the job id) is taken before
  enqueueing, so twenty alarms in a minute start exactly one job: the first takes the lock, the rest find it
  held (or the dedupe window ``jobs.retrain_dedupe_s`` still open) and are answered with the running job's
  id. The job releases the lock (compare-and-delete) when it ends for good; a worker killed mid-job leaves
  the lock to its retry, and its expiry (job timeout + margin) frees the station if everything died.

Alarms are events (:class:`RetrainTrigger`)
  Every alarm source only publishes a ``DRIFT_ALARM`` event on the station's events stream: the drift
  monitor (``source = drift`` or ``operator_reports``), periodic validation (``source = validation``). ONE
  consumer group, ``Names.retrain_trigger_group``, reads them; every trigger process of the station joins
  it, so each alarm is handled once however many run. Why a group rather than a callback inside the
  monitor: an alarm raised while no trigger runs (validation runs in an RQ worker, the monitor may be
  restarting) waits in the stream instead of being lost; every source gets the same policy; and the
  monitor stays free of retraining code.

  For each DRIFT_ALARM the trigger, in order, acknowledges without acting when the alarm is older than
  ``jobs.alarm_max_age_s`` (a trigger starting after days must not retrain on last week's alarm), when a
  planned change suppresses drift (``Names.drift_suppressed``: the maintenance refit is already the answer,
  and a validation or operator alarm then is expected), or when the alarm is about a model that is no longer
  active (a newer package already replaced it); otherwise it calls ``request_retrain`` (dedupe + lock).
  ``condition_changed`` is True for a drift alarm whose tripped statistics include an image statistic
  (brightness, contrast, ...): the scene changed, so the job retrains on recent frames as the new normal.

Delivery
  Entries are acknowledged after they were handled: a trigger killed between the two re-reads its own
  pending entries when restarted under the same consumer name (and ``XAUTOCLAIM`` takes over those of a
  consumer gone for good). Re-acting on such an entry is harmless: the dedupe window and the lock of the
  first request answer it. Acknowledged entries are never read again. The group is created at the start of
  the stream (``0``) the first time, so alarms published before the first trigger ran are not lost (the age
  limit keeps that from acting on stale ones). A Redis outage is logged and retried with backoff; a Redis
  that restarted without its data (no group) gets the group again.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import ResponseError
from rq import Retry
from rq.job import JobStatus

from inspector.bus.streams import Entry, StationBus, decode_message
from inspector.contracts.config import StationConfig
from inspector.contracts.errors import InspectorError
from inspector.contracts.messages import Event, EventType
from inspector.contracts.statuses import AlarmOutcome, RetrainRequestStatus
from inspector.drift.reference import IMAGE_STATS
from jobs.queues import JobKeys, names_of, station_queue

log = logging.getLogger(__name__)

LOCK_MARGIN_S = 300
RETRAIN_FUNC = "jobs.pipeline.retrain"
CLAIM_IDLE_MS = 60_000  # pending longer than this with another consumer: that consumer is gone, take over

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class RetrainRequest:
    status: RetrainRequestStatus
    job_id: str | None


def lock_ttl_s(cfg: StationConfig) -> int:
    return int(cfg.jobs.job_timeout_s * (1 + cfg.jobs.retries) + LOCK_MARGIN_S)


def release_lock(client: redis.Redis, cfg: StationConfig, job_id: str) -> bool:
    """Free the station's retrain lock if ``job_id`` holds it."""
    return bool(client.eval(_RELEASE, 1, JobKeys(names_of(cfg)).lock, job_id))


def lock_holder(client: redis.Redis, cfg: StationConfig) -> str | None:
    raw = client.get(JobKeys(names_of(cfg)).lock)
    return raw.decode() if isinstance(raw, bytes) else raw


def request_retrain(
    cfg: StationConfig,
    client: redis.Redis,
    reason: str,
    source: str = "manual",
    actor: str = "system",
    condition_changed: bool = False,
    dedupe: bool = True,
    data: dict[str, Any] | None = None,
) -> RetrainRequest:
    """Enqueue one retraining job for the station unless one runs or was just requested."""
    keys = JobKeys(names_of(cfg))
    if dedupe and cfg.jobs.retrain_dedupe_s > 0:
        fresh = client.set(keys.dedupe, reason, nx=True, px=int(cfg.jobs.retrain_dedupe_s * 1000))
        if not fresh:
            return RetrainRequest(RetrainRequestStatus.DEDUPED, lock_holder(client, cfg))
    job_id = f"retrain-{uuid.uuid4().hex[:12]}"
    if not client.set(keys.lock, job_id, nx=True, ex=lock_ttl_s(cfg)):
        return RetrainRequest(RetrainRequestStatus.RUNNING, lock_holder(client, cfg))
    try:
        _enqueue(cfg, client, job_id, reason, source, actor, condition_changed, data or {})
    except BaseException:
        release_lock(client, cfg, job_id)
        raise
    return RetrainRequest(RetrainRequestStatus.ENQUEUED, job_id)


def _enqueue(
    cfg: StationConfig,
    client: redis.Redis,
    job_id: str,
    reason: str,
    source: str,
    actor: str,
    condition_changed: bool,
    data: dict[str, Any],
) -> None:
    q = station_queue(cfg, client)
    retry = Retry(max=cfg.jobs.retries, interval=1) if cfg.jobs.retries else None
    q.enqueue(
        RETRAIN_FUNC,
        cfg.station.id,
        reason,
        source,
        actor,
        condition_changed,
        job_id=job_id,
        job_timeout=cfg.jobs.job_timeout_s,
        retry=retry,
        result_ttl=7 * 86_400,
        failure_ttl=30 * 86_400,
        description=f"retrain {cfg.station.id}: {reason}",
        meta={
            "station": cfg.station.id,
            "kind": "retrain",
            "reason": reason,
            "source": source,
            "step": "queued",
            "progress": 0.0,
            "data": data,
        },
    )
    pipe = client.pipeline(transaction=False)
    pipe.lpush(JobKeys(names_of(cfg)).history, job_id)
    pipe.ltrim(JobKeys(names_of(cfg)).history, 0, 99)
    pipe.execute()
    StationBus(client, cfg).publish_event(
        Event(
            station=cfg.station.id,
            type=EventType.JOB,
            message=f"retraining queued ({source}): {reason}",
            data={
                "job_id": job_id,
                "kind": "retrain",
                "status": JobStatus.QUEUED.value,
                "step": "queued",
                "progress": 0.0,
                "requested_by": actor,
                "reason": reason,
                "source": source,
            },
        )
    )


# --------------------------------------------------------------------------- the consumer

SOURCE_DRIFT = "drift"


def alarm_source(event: Event) -> str:
    """The source an alarm names (``drift`` for events that predate the field)."""
    return str(event.data.get("source") or SOURCE_DRIFT)


def condition_changed(event: Event) -> bool:
    """A drift alarm that tripped an image statistic means the scene changed (light, camera, product)."""
    tripped = event.data.get("tripped") or {}
    return alarm_source(event) == SOURCE_DRIFT and any(k in IMAGE_STATS for k in tripped)


@dataclass(frozen=True)
class TriggerOutcome:
    """What the trigger did with one DRIFT_ALARM event."""

    entry_id: str
    event_id: str
    source: str
    status: RetrainRequestStatus | AlarmOutcome
    job_id: str | None = None


class RetrainTrigger:
    """Consumes DRIFT_ALARM events of one station with ``Names.retrain_trigger_group`` (see the module doc).

    ``consumer``: this process's name in the group; restart under the same name to pick up its own pending
    entries. ``clock``: wall time (injectable for tests of the age limit)."""

    def __init__(
        self,
        cfg: StationConfig,
        client: redis.Redis,
        consumer: str = "trigger-1",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.bus = StationBus(client, cfg)
        self.names = self.bus.names
        self.group = self.names.retrain_trigger_group
        self.consumer = consumer
        self.clock = clock
        self.outcomes: list[TriggerOutcome] = []
        self.counts = Counter[str]()
        self._own_pending_done = False
        self._ensure_group()

    def _ensure_group(self) -> None:
        self.bus.ensure_group(self.names.events, self.group, start="0")

    # -- loop -------------------------------------------------------------------------------------
    def step(self, block_ms: int | None = 100, count: int = 100) -> list[TriggerOutcome]:
        """Handle one batch: this consumer's own unacknowledged entries first (after a restart), then entries
        abandoned by dead consumers, then new ones. Returns what was done with each DRIFT_ALARM."""
        try:
            entries = self._read(block_ms, count)
        except ResponseError as err:
            if "NOGROUP" not in str(err):
                raise
            log.warning("retrain trigger: the group is gone (Redis restarted empty?); creating it again")
            self._ensure_group()
            self._own_pending_done = False
            return []
        out: list[TriggerOutcome] = []
        for entry in entries:
            try:
                outcome = self._handle(entry)
            except (redis.ConnectionError, redis.TimeoutError):
                raise  # not acknowledged: handled again once Redis is back
            except Exception:  # noqa: BLE001 - a bug on one alarm must not spin the consumer on it forever
                log.exception("retrain trigger: handling entry %s failed; acknowledged", entry.entry_id)
                self.counts[AlarmOutcome.FAILED] += 1
                outcome = TriggerOutcome(entry.entry_id, "", "", AlarmOutcome.FAILED)
            if outcome is not None:
                out.append(outcome)
            self.bus.r.xack(self.names.events, self.group, entry.entry_id)
        self.outcomes += out
        return out

    def _read(self, block_ms: int | None, count: int) -> list[Entry]:
        if not self._own_pending_done:
            resp = self.bus.r.xreadgroup(self.group, self.consumer, {self.names.events: "0"}, count=count)
            own = [Entry(e.decode() if isinstance(e, bytes) else e, f or None) for _s, es in resp or [] for e, f in es]
            if own:
                return own
            self._own_pending_done = True
        claimed = self.bus.reclaim(self.names.events, self.group, self.consumer, CLAIM_IDLE_MS, count)
        if claimed:
            return claimed
        return self.bus.read_new(self.names.events, self.group, self.consumer, count, block_ms)

    def run(self, stop: threading.Event, block_ms: int = 500) -> None:
        """Until ``stop``: survives Redis outages (logged once per outage, retried with backoff up to 5 s)."""
        delay = 0.5
        down = False
        while not stop.is_set():
            try:
                self.step(block_ms)
                if down:
                    log.info("retrain trigger: Redis is back")
                down, delay = False, 0.5
            except (redis.ConnectionError, redis.TimeoutError, OSError) as err:
                if not down:
                    log.warning("retrain trigger: Redis unavailable (%s); retrying", err)
                down = True
                self._own_pending_done = False  # re-read our pending entries once back
                stop.wait(delay)
                delay = min(5.0, delay * 2)

    # -- one alarm --------------------------------------------------------------------------------
    def _handle(self, entry: Entry) -> TriggerOutcome | None:
        try:
            msg = decode_message(entry.message_raw)
        except InspectorError:
            self.counts[AlarmOutcome.UNREADABLE] += 1
            return None
        if not isinstance(msg, Event) or msg.type is not EventType.DRIFT_ALARM:
            return None
        source = alarm_source(msg)
        status, job_id = self._decide(msg, source)
        self.counts[status] += 1
        log.info("retrain trigger: %s alarm %s -> %s %s", source, msg.id, status, job_id or "")
        return TriggerOutcome(entry.entry_id, msg.id, source, status, job_id)

    def _decide(self, event: Event, source: str) -> tuple[RetrainRequestStatus | AlarmOutcome, str | None]:
        if self.clock() - event.ts > self.cfg.jobs.alarm_max_age_s:
            return AlarmOutcome.STALE, None
        if self.bus.r.exists(self.names.drift_suppressed):
            return AlarmOutcome.SUPPRESSED, None
        if event.data.get("product"):  # a product's own drift: its model is not the one a retraining rebuilds
            log.warning(
                "retrain trigger: drift of product %s (%s) is recorded; retrain that product's package by hand",
                event.data["product"],
                event.model_version,
            )
            return AlarmOutcome.PRODUCT_ALARM, None
        active = self.bus.r.hget(self.names.active_model, "version")
        active_version = active.decode() if isinstance(active, bytes) else active
        if event.model_version and active_version and event.model_version != active_version:
            return AlarmOutcome.STALE_MODEL, None
        req = request_retrain(
            self.cfg,
            self.bus.r,
            f"{source} alarm: {event.message}"[:500],
            source=source,
            actor=f"{source}-alarm",
            condition_changed=condition_changed(event),
            data={
                "alarm_event": event.id,
                "model_version": event.model_version,
                "tripped": sorted(event.data.get("tripped") or {}),
                "statistic": event.data.get("statistic"),
            },
        )
        return req.status, req.job_id


def run_trigger_thread(
    cfg: StationConfig, client: redis.Redis, stop: threading.Event, consumer: str = "trigger-1"
) -> threading.Thread:
    """Start a :class:`RetrainTrigger` on a daemon thread (beside the drift monitor in ``jobs drift``)."""
    trigger = RetrainTrigger(cfg, client, consumer)
    t = threading.Thread(target=trigger.run, args=(stop,), name="retrain-trigger", daemon=True)
    t.start()
    return t
