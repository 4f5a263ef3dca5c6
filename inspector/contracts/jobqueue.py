"""The station's RQ job contract: queue name, the JSON-only serializer, and the job functions asked for by people.

Whoever enqueues a job (the GUI by dotted path, the jobs package itself) and the worker that runs it agree on
these, so they are defined here, once, with the standard library only. The worker's allow-list of functions
(``jobs.queues.JOB_FUNCTIONS``) includes every name of :data:`REQUESTED_JOB_FUNCTIONS`.
"""

from __future__ import annotations

import json
from typing import Any

from inspector.contracts.config import StationConfig
from inspector.contracts.errors import UnsafeInputError


def queue_name(cfg: StationConfig) -> str:
    """One RQ queue per station, so stations sharing a Redis never run each other's jobs."""
    return f"{cfg.jobs.queue}-{cfg.station.id}"


class StrictJSONSerializer:
    """JSON in, JSON out; a pickle (or any non-JSON) payload raises instead of being loaded.

    RQ accepts any object with ``dumps`` and ``loads``; job arguments are therefore plain JSON values."""

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


# Actions a person asks for (maintenance view): each runs in the station's RQ worker, signed by the person.
REQUEST_RETRAIN_FUNC = "jobs.requested.request_retrain"
"""(station, actor, reason) -> the retraining job's id (deduped: the running job's id)."""
CAMERA_CHANGED_FUNC = "jobs.requested.camera_changed"
"""(station, actor, note) -> the id of the frame collection opened for the new condition."""
APPROVE_MODEL_FUNC = "jobs.requested.approve_model"
"""(station, version, actor, role) -> the version's new status."""
PROMOTE_MODEL_FUNC = "jobs.requested.promote_model"
"""(station, version, actor, role) -> the version made active (refused: the gate's reason)."""
ROLLBACK_MODEL_FUNC = "jobs.requested.rollback_model"
"""(station, actor, role) -> the version active again."""

REQUESTED_JOB_FUNCTIONS: frozenset[str] = frozenset(
    {
        REQUEST_RETRAIN_FUNC,
        CAMERA_CHANGED_FUNC,
        APPROVE_MODEL_FUNC,
        PROMOTE_MODEL_FUNC,
        ROLLBACK_MODEL_FUNC,
    }
)

__all__ = [
    "APPROVE_MODEL_FUNC",
    "CAMERA_CHANGED_FUNC",
    "PROMOTE_MODEL_FUNC",
    "REQUESTED_JOB_FUNCTIONS",
    "REQUEST_RETRAIN_FUNC",
    "ROLLBACK_MODEL_FUNC",
    "StrictJSONSerializer",
    "queue_name",
]
