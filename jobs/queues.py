"""RQ plumbing of a station: the JSON-only serializer, the station's queue, job keys and the worker context.

Jobs are serialised with JSON only: :class:`StrictJSONSerializer` (an ``rq.serializers.JSONSerializer``)
refuses anything that is not UTF-8 JSON, and names pickle payloads as such, so a pickled job is refused
before anything in it runs. Job arguments are therefore plain JSON values (station id, reason, version).

A job gets the station config from the worker that runs it (:func:`set_worker_config`, done by
``inspector jobs worker --config``), never from the job payload: no secrets travel through Redis.
"""

from __future__ import annotations

import json
from typing import Any

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from inspector.contracts.config import StationConfig
from inspector.contracts.errors import InspectorError, UnsafeInputError
from inspector.contracts.names import Names


class StrictJSONSerializer(JSONSerializer):
    """JSON in, JSON out; a pickle (or any non-JSON) payload raises instead of being loaded."""

    @staticmethod
    def dumps(obj: Any, *args: Any, **kwargs: Any) -> bytes:
        return json.dumps(obj, *args, **kwargs).encode("utf-8")

    @staticmethod
    def loads(data: bytes | str, *args: Any, **kwargs: Any) -> Any:
        raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        if raw[:1] == b"\x80":
            raise UnsafeInputError("job payload is a pickle; refused, nothing executed", "jobs are JSON only")
        try:
            return json.loads(raw.decode("utf-8"), *args, **kwargs)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise UnsafeInputError(f"job payload is not JSON ({err}); refused", "jobs are JSON only") from None


SERIALIZER = StrictJSONSerializer


def queue_name(cfg: StationConfig) -> str:
    """One queue per station, so stations sharing a Redis never run each other's jobs."""
    return f"{cfg.jobs.queue}-{cfg.station.id}"


def station_queue(cfg: StationConfig, client: redis.Redis) -> Queue:
    return Queue(queue_name(cfg), connection=client, serializer=SERIALIZER, default_timeout=cfg.jobs.job_timeout_s)


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
        raise InspectorError(f"this RQ worker has no config for station {station!r}",
                             "start it with `inspector jobs worker --config <station.yaml>` of that station")
    return cfg
