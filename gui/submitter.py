"""The job submitter: how the maintenance view asks for retraining, a camera change, approval, promotion, rollback.

The view is given a :class:`JobSubmitter` (the app builds :class:`RqJobSubmitter`; tests may give another real
one). :class:`RqJobSubmitter` enqueues each action by dotted path (``inspector.contracts.jobqueue``) on the
station's RQ queue with the JSON serializer, so the GUI never imports the jobs package: the station's jobs worker
runs the action (``jobs.requested``) with its own config, and the submitter waits (off the GUI thread) for its
answer. Actions go to the front of the queue: they run before retraining jobs still waiting. A station without
a jobs worker (``supervisor.processes`` lacks ``jobs``) gets its action withdrawn after ``wait_s``, with the hint.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import redis
from rq import Queue, Worker
from rq.job import Job, JobStatus

from inspector.contracts.config import StationConfig
from inspector.contracts.errors import InspectorError
from inspector.contracts.jobqueue import (
    APPROVE_MODEL_FUNC,
    CAMERA_CHANGED_FUNC,
    PROMOTE_MODEL_FUNC,
    REQUEST_RETRAIN_FUNC,
    ROLLBACK_MODEL_FUNC,
    StrictJSONSerializer,
    queue_name,
)

ACTION_TIMEOUT_S = 300  # an action (promotion verifies every file of a package) that runs longer is stopped
RESULT_TTL_S = 86_400


class JobSubmitter(Protocol):
    """Actions a person asks for from the maintenance view; each returns what the view reports."""

    def request_retrain(self, actor: str, reason: str) -> str:
        """Queue retraining (deduped, one per station); the retraining job's id."""
        ...

    def camera_changed(self, actor: str, note: str) -> str:
        """Record a camera or lighting change and collect frames for the refit; the collection's id."""
        ...

    def approve_model(self, version: str, actor: str, role: str) -> str:
        """Approve a version whose gate passed; its new status."""
        ...

    def promote_model(self, version: str, actor: str, role: str) -> str:
        """Make ``version`` active (the gate and approval are enforced); the active version."""
        ...

    def rollback_model(self, actor: str, role: str) -> str:
        """Re-activate the previously active version; that version."""
        ...


class JobNotAnswered(InspectorError):
    """The action waits on the queue: the jobs worker did not run it in time (it runs when the worker is free)."""


class NoJobsWorker(InspectorError):
    """No jobs worker serves the station's queue: the action was withdrawn without running."""


def _failure(job: Job) -> str:
    """The last line of the job's exception, without the exception's module path."""
    result = job.latest_result()
    text = (result.exc_string if result is not None else None) or job.exc_info or "the job failed"
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    tail = lines[-1] if lines else "the job failed"
    for i, line in enumerate(lines):  # an InspectorError's message is followed by its hint line
        if line.lstrip().startswith("hint:") and i > 0:
            tail = f"{lines[i - 1]} ({line.strip()})"
    name, _, message = tail.partition(": ")
    return message if message and "." in name and " " not in name else tail


class RqJobSubmitter:
    """Enqueues each action by dotted path on the station's queue and waits up to ``wait_s`` for its answer."""

    def __init__(
        self,
        cfg: StationConfig,
        connect: Callable[[], redis.Redis] | None = None,
        wait_s: float = 30.0,
        poll_s: float = 0.1,
    ) -> None:
        self.cfg = cfg
        self._connect = connect or self._station_client
        self.wait_s, self.poll_s = wait_s, poll_s

    def _station_client(self) -> redis.Redis:
        from inspector.bus.connection import resolve_url
        from inspector.bus.fast import fast_client

        return fast_client(self.cfg, resolve_url(self.cfg, start_embedded=False), timeout_s=5.0)

    def enqueue(self, client: redis.Redis, func: str, *args: Any, actor: str) -> Job:
        """Put ``func(station, *args)`` at the front of the station's queue (JSON arguments only)."""
        queue = Queue(queue_name(self.cfg), connection=client, serializer=StrictJSONSerializer)
        return queue.enqueue(
            func,
            self.cfg.station.id,
            *args,
            job_timeout=ACTION_TIMEOUT_S,
            result_ttl=RESULT_TTL_S,
            failure_ttl=30 * RESULT_TTL_S,
            at_front=True,
            description=f"{func} by {actor}",
            meta={"station": self.cfg.station.id, "kind": func.rsplit(".", 1)[-1], "requested_by": actor},
        )

    def answer(self, client: redis.Redis, job_id: str) -> Any:
        """The job's return value once a worker ran it; its error as an InspectorError; on time-out JobNotAnswered
        (a busy worker will run it) or NoJobsWorker (withdrawn: no worker serves the queue)."""
        deadline = time.monotonic() + self.wait_s
        while True:
            job = Job.fetch(job_id, connection=client, serializer=StrictJSONSerializer)
            status = job.get_status(refresh=False)
            if status == JobStatus.FINISHED:
                return job.return_value()
            if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
                raise InspectorError(_failure(job), "")
            if time.monotonic() >= deadline:
                raise self._not_answered(client, job)
            time.sleep(self.poll_s)

    def _not_answered(self, client: redis.Redis, job: Job) -> InspectorError:
        """No answer in time: with a jobs worker on the queue (busy) the action stays queued and runs next; with
        none, it is withdrawn, so it never runs hours later when someone starts a worker."""
        queue = Queue(queue_name(self.cfg), connection=client, serializer=StrictJSONSerializer)
        hint = "start the station's jobs worker: inspector jobs worker --config <station.yaml>"
        if Worker.count(queue=queue) > 0:
            return JobNotAnswered(
                f"job {job.id} waits on queue {queue.name}: the jobs worker did not run it within "
                f"{self.wait_s:.0f} s (it runs as soon as the worker is free)",
                hint,
            )
        job.cancel()
        return NoJobsWorker(
            f"no jobs worker serves queue {queue.name}: the request was withdrawn, nothing was done", hint
        )

    def call(self, func: str, *args: Any, actor: str) -> str:
        """Enqueue ``func`` and wait for its answer (run this off the GUI thread)."""
        client = self._connect()
        try:
            return str(self.answer(client, self.enqueue(client, func, *args, actor=actor).id))
        finally:
            client.close()

    def request_retrain(self, actor: str, reason: str) -> str:
        return self.call(REQUEST_RETRAIN_FUNC, actor, reason, actor=actor)

    def camera_changed(self, actor: str, note: str) -> str:
        return self.call(CAMERA_CHANGED_FUNC, actor, note, actor=actor)

    def approve_model(self, version: str, actor: str, role: str) -> str:
        return self.call(APPROVE_MODEL_FUNC, version, actor, role, actor=actor)

    def promote_model(self, version: str, actor: str, role: str) -> str:
        return self.call(PROMOTE_MODEL_FUNC, version, actor, role, actor=actor)

    def rollback_model(self, actor: str, role: str) -> str:
        return self.call(ROLLBACK_MODEL_FUNC, actor, role, actor=actor)
