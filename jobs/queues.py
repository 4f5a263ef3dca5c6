"""RQ plumbing of a station: the JSON-only serializer, the station's queue, job keys and the worker context.

Jobs are serialised with JSON only: :class:`StrictJSONSerializer` (``inspector.contracts.jobqueue``)
refuses anything that is not UTF-8 JSON, and names pickle payloads as such, so a pickled job is refused
before anything in it runs. Job arguments are therefore plain JSON values (station id, reason, version).

Only the station's own job functions run: :data:`JOB_FUNCTIONS` is the allow-list, and
:class:`StationJob` (the job class of the station's queue and worker) refuses any other function name
before importing anything (importing a module can run code), a job with an ``instance``, and any
success/failure/stopped callback (the station uses none). A refused job fails with the reason in
RQ's failed-job registry (its dead letters); ``jobs.worker`` also writes an audit row for it.

A job gets the station config from the worker that runs it (:func:`set_worker_config`, done by
``inspector jobs worker --config``), never from the job payload: no secrets travel through Redis.
"""

from __future__ import annotations

import redis
from rq import Queue
from rq.job import Job

from inspector.contracts.config import StationConfig
from inspector.contracts.errors import InspectorError, UnsafeInputError
from inspector.contracts.jobqueue import REQUESTED_JOB_FUNCTIONS, StrictJSONSerializer, queue_name
from inspector.contracts.names import Names

SERIALIZER = StrictJSONSerializer

#: The only functions a station's RQ worker runs (import paths, exactly as enqueued). Each ``*_FUNC``
#: constant of ``jobs.trigger``, ``jobs.maintenance`` and ``jobs.validation`` must be here (tested).
JOB_FUNCTIONS: frozenset[str] = frozenset(
    {
        "jobs.pipeline.retrain",
        "jobs.maintenance.refit",
        "jobs.validation.validate",
        *REQUESTED_JOB_FUNCTIONS,
    }
)


class JobRefused(UnsafeInputError):
    """A job outside the allow-list: nothing of it is imported or run."""


def refusal(job: Job) -> str | None:
    """Why ``job`` may not run here (None when it may). Reads the job's data only; imports nothing."""
    try:
        func_name = job.func_name
        instance = job.instance
    except Exception as err:  # noqa: BLE001 - an unreadable payload is refused, whatever broke
        return f"job {job.id} has an unreadable payload ({type(err).__name__}: {err})"
    if func_name not in JOB_FUNCTIONS:
        return f"job {job.id} names {func_name!r}, which is not a station job function"
    if instance is not None:
        return f"job {job.id} calls {func_name!r} on an instance; station jobs are plain functions"
    callbacks = {k: getattr(job, f"_{k}_callback_name", None) for k in ("success", "failure", "stopped")}
    named = {k: v for k, v in callbacks.items() if v}
    if named:
        return f"job {job.id} carries callbacks {named}; station jobs have none"
    return None


class StationJob(Job):
    """An RQ job that runs only an allow-listed function (:data:`JOB_FUNCTIONS`) and never a callback."""

    @property
    def func(self):  # type: ignore[no-untyped-def,override]
        why = refusal(self)
        if why is not None:
            raise JobRefused(
                f"refused, nothing executed: {why}", f"only {', '.join(sorted(JOB_FUNCTIONS))} run on a station's queue"
            )
        return super().func

    @property
    def success_callback(self):  # type: ignore[no-untyped-def,override]
        return None  # a callback is code named by whoever wrote the job: never imported

    @property
    def failure_callback(self):  # type: ignore[no-untyped-def,override]
        return None

    @property
    def stopped_callback(self):  # type: ignore[no-untyped-def,override]
        return None


def station_queue(cfg: StationConfig, client: redis.Redis) -> Queue:
    return Queue(
        queue_name(cfg),
        connection=client,
        serializer=SERIALIZER,
        default_timeout=cfg.jobs.job_timeout_s,
        job_class=StationJob,
    )


class JobKeys:
    """The jobs package's Redis keys, as named in ``inspector.contracts.names``."""

    def __init__(self, names: Names) -> None:
        self.names = names
        self.lock = names.retrain_lock
        self.dedupe = names.retrain_dedupe
        self.history = names.retrain_history
        self.collection = names.maintenance_collection
        self.validation_next = names.validation_next


def names_of(cfg: StationConfig) -> Names:
    return Names(cfg.redis.prefix, cfg.station.id)


_WORKER_CONFIGS: dict[str, StationConfig] = {}


def set_worker_config(cfg: StationConfig) -> None:
    """Make ``cfg`` the config jobs of its station run with in this process."""
    _WORKER_CONFIGS[cfg.station.id] = cfg


def worker_config(station: str) -> StationConfig:
    cfg = _WORKER_CONFIGS.get(station)
    if cfg is None:
        raise InspectorError(
            f"this RQ worker has no config for station {station!r}",
            "start it with `inspector jobs worker --config <station.yaml>` of that station",
        )
    return cfg
