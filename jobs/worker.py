"""Run an RQ worker for a station's queue, with the JSON serializer (and optionally RQ's scheduler)."""

from __future__ import annotations

import os

import redis
from rq import SimpleWorker, Worker

from inspector.contracts.config import StationConfig
from jobs.queues import SERIALIZER, set_worker_config, station_queue
from jobs.validation import schedule_validation


def make_worker(cfg: StationConfig, client: redis.Redis, name: str | None = None, simple: bool = False) -> Worker:
    """A worker bound to the station's queue; ``simple`` runs jobs in-process (tests, Windows)."""
    set_worker_config(cfg)
    cls = SimpleWorker if simple else Worker
    return cls([station_queue(cfg, client)], connection=client, serializer=SERIALIZER, name=name)


def run_worker(cfg: StationConfig, client: redis.Redis, burst: bool = False, with_scheduler: bool = False,
               name: str | None = None, simple: bool = False) -> bool:
    """Work the station's queue. The process lowers its own CPU priority by ``jobs.worker_nice`` first: on a
    2-core station a retraining at the line's priority starved the inspection workers until frames expired
    (5 ERROR verdicts, 5-7 s old, measured in the learning-loop acceptance test)."""
    if cfg.jobs.worker_nice and hasattr(os, "nice"):
        os.nice(cfg.jobs.worker_nice)
    w = make_worker(cfg, client, name, simple)
    if with_scheduler:
        schedule_validation(cfg, client)
    return w.work(burst=burst, with_scheduler=with_scheduler, logging_level="WARNING")
