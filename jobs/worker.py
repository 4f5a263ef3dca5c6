"""Run an RQ worker for a station's queue, with the JSON serializer (and optionally RQ's scheduler).

The worker runs only the station's job functions (``jobs.queues.JOB_FUNCTIONS``): a job naming anything
else fails with the reason in RQ's failed-job registry, nothing of it imported or run, and is audited
(``job.refused``, actor ``rq-worker:<name>``) in the station's audit trail.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import redis
from rq import SimpleWorker, Worker
from rq.job import Job
from rq.queue import Queue

from inspector.contracts.config import StationConfig
from jobs.queues import SERIALIZER, StationJob, refusal, set_worker_config, station_queue
from jobs.validation import schedule_validation

log = logging.getLogger(__name__)


class _Guard:
    """Refuses and audits a job outside the allow-list before RQ runs it (``StationJob`` refuses it too)."""

    station_cfg: StationConfig

    def perform_job(self, job: Job, queue: Queue, *args: Any, **kwargs: Any) -> bool:
        why = refusal(job)
        if why is not None:
            log.error("RQ worker %s refused %s", getattr(self, "name", "?"), why)
            _audit_refusal(self.station_cfg, getattr(self, "name", "?"), job, why)
        return super().perform_job(job, queue, *args, **kwargs)  # type: ignore[misc]


def _audit_refusal(cfg: StationConfig, worker: str, job: Job, why: str) -> None:
    from inspector.store.db import open_store

    try:
        store = open_store(cfg)
        try:
            store.audit.record(
                f"rq-worker:{worker}", "job.refused", job.id, None, None, {"why": why, "origin": job.origin}
            )
        finally:
            store.close()
    except Exception:  # noqa: BLE001 - the job is refused whether or not the audit row could be written
        log.exception("could not audit the refusal of job %s", job.id)


class StationWorker(_Guard, Worker):
    """RQ's forking worker, allow-listed."""


class StationSimpleWorker(_Guard, SimpleWorker):
    """RQ's in-process worker, allow-listed."""


def make_worker(cfg: StationConfig, client: redis.Redis, name: str | None = None, simple: bool = False) -> Worker:
    """A worker bound to the station's queue; ``simple`` runs jobs in-process (tests, Windows)."""
    set_worker_config(cfg)
    cls = StationSimpleWorker if simple else StationWorker
    w = cls([station_queue(cfg, client)], connection=client, serializer=SERIALIZER, name=name, job_class=StationJob)
    w.station_cfg = cfg
    return w


def run_worker(
    cfg: StationConfig,
    client: redis.Redis,
    burst: bool = False,
    with_scheduler: bool = False,
    name: str | None = None,
    simple: bool = False,
) -> bool:
    """Work the station's queue. The process lowers its own CPU priority by ``jobs.worker_nice`` first: on a
    2-core station a retraining at the line's priority starved the inspection workers until frames expired
    (5 ERROR verdicts, 5-7 s old, measured in the learning-loop acceptance test)."""
    if cfg.jobs.worker_nice and hasattr(os, "nice"):
        os.nice(cfg.jobs.worker_nice)
    w = make_worker(cfg, client, name, simple)
    if with_scheduler:
        schedule_validation(cfg, client)
    return w.work(burst=burst, with_scheduler=with_scheduler, logging_level="WARNING")
