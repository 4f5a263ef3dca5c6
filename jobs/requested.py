"""Actions a person asks for from the maintenance view, run by the station's RQ worker.

The GUI enqueues these by dotted path (``inspector.contracts.jobqueue``: ``REQUEST_RETRAIN_FUNC`` ...) and never
imports the jobs package: promotion, rollback and the retrain policy run here, in the worker, with the station
config of the worker (``jobs.queues.worker_config``), never one from the payload. Each action is signed by the
person (``actor``) and audited exactly as when the GUI ran it in its own process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import redis
from rq import get_current_job

from inspector.contracts.config import StationConfig
from inspector.store.db import Store, open_store
from jobs import maintenance, registry
from jobs.queues import worker_config
from jobs.trigger import request_retrain as enqueue_retrain

T = TypeVar("T")


@contextmanager
def _station(station: str) -> Iterator[tuple[StationConfig, redis.Redis, Store]]:
    job = get_current_job()
    if job is None:
        raise RuntimeError("requested actions run inside an RQ job")
    cfg = worker_config(station)
    store = open_store(cfg)
    try:
        yield cfg, job.connection, store
    finally:
        store.close()


def _run(station: str, action: Callable[[StationConfig, redis.Redis, Store], T]) -> T:
    with _station(station) as (cfg, client, store):
        return action(cfg, client, store)


def request_retrain(station: str, actor: str, reason: str) -> str:
    """Queue a retraining job (deduped, one per station); audited ``retrain.request``. Returns the job id."""

    def act(cfg: StationConfig, client: redis.Redis, store: Store) -> str:
        result = enqueue_retrain(cfg, client, reason, source="gui", actor=actor)
        job_id = result.job_id or result.status
        details: dict[str, Any] = {"kind": "retrain", "requested_by": actor, "reason": reason, "status": result.status}
        store.audit.record(actor, "retrain.request", cfg.station.id, None, {"job_id": job_id}, details)
        return job_id

    return _run(station, act)


def camera_changed(station: str, actor: str, note: str) -> str:
    """Camera or lighting changed: drift alarms suppressed, frames collected (jobs.maintenance, audited there).
    Returns the collection id."""
    return _run(
        station, lambda cfg, client, store: str(maintenance.camera_changed(cfg, client, store, actor, note)["id"])
    )


def approve_model(station: str, version: str, actor: str, role: str) -> str:
    """A person who read every gate row approves a gated_pass version (the registry enforces the rules)."""
    return _run(station, lambda _cfg, _client, store: registry.approve(store, version, actor, role).value)


def promote_model(station: str, version: str, actor: str, role: str) -> str:
    """Make ``version`` active through the registry (gate and approval enforced, package verified, audited,
    workers hot-reload). A failed or missing gate is refused; no override from here (the CLI's --force)."""
    return _run(station, lambda cfg, client, store: registry.promote(cfg, client, store, version, actor, role=role))


def rollback_model(station: str, actor: str, role: str) -> str:
    """Re-activate the previous version through the registry (audited ``model.rollback``); returns it."""
    return _run(
        station, lambda cfg, client, store: registry.rollback(cfg, client, store, actor, reason="GUI", role=role)
    )
