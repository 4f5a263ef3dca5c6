"""JSON-only jobs, one retraining per station (lock + dedupe), and the promotion gates."""

from __future__ import annotations

import pickle
import zlib
from pathlib import Path

import pytest
from rq.exceptions import DeserializationError
from rq.job import Job

from inspector.contracts.errors import UnsafeInputError
from jobs.queues import SERIALIZER, StrictJSONSerializer, station_queue
from jobs.trigger import lock_holder, release_lock, request_retrain
from jobs.worker import make_worker

MARKER = Path("/tmp") / "inspector-pickle-marker"


class Boom:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (MARKER.touch, ())


def test_serializer_refuses_pickle_and_non_json() -> None:
    assert StrictJSONSerializer.loads(StrictJSONSerializer.dumps({"a": [1, "b"]})) == {"a": [1, "b"]}
    with pytest.raises(UnsafeInputError, match="pickle"):
        StrictJSONSerializer.loads(pickle.dumps(Boom()))
    with pytest.raises(UnsafeInputError):
        StrictJSONSerializer.loads(b"\x00\x01not json")


def test_a_pickled_job_payload_is_refused_and_never_runs(station_config, redis_client) -> None:  # type: ignore[no-untyped-def]
    MARKER.unlink(missing_ok=True)
    q = station_queue(station_config, redis_client)
    job = q.enqueue("builtins.print", "hello")
    assert job.serializer is SERIALIZER
    # an attacker with Redis access swaps the job's payload for a pickle that runs code when loaded
    redis_client.hset(job.key, "data", zlib.compress(pickle.dumps(("builtins.print", None, (Boom(),), {}))))
    with pytest.raises(DeserializationError):
        Job.fetch(job.id, connection=redis_client, serializer=SERIALIZER).args  # noqa: B018
    make_worker(station_config, redis_client, simple=True).work(burst=True)
    assert not MARKER.exists(), "the pickle payload was executed"
    assert Job.fetch(job.id, connection=redis_client, serializer=SERIALIZER).get_status().value == "failed"


def test_twenty_alarms_start_exactly_one_job(station_config, redis_client) -> None:  # type: ignore[no-untyped-def]
    answers = [request_retrain(station_config, redis_client, f"alarm {i}", source="drift") for i in range(20)]
    enqueued = [a for a in answers if a.status == "enqueued"]
    assert len(enqueued) == 1 and len(station_queue(station_config, redis_client)) == 1
    assert {a.job_id for a in answers} == {enqueued[0].job_id}
    # while the job holds the lock even an un-deduped request is refused
    again = request_retrain(station_config, redis_client, "manual", dedupe=False)
    assert again.status == "running" and again.job_id == enqueued[0].job_id
    assert not release_lock(redis_client, station_config, "someone-else")
    assert (
        release_lock(redis_client, station_config, enqueued[0].job_id)
        and lock_holder(redis_client, station_config) is None
    )
    assert request_retrain(station_config, redis_client, "after", dedupe=False).status == "enqueued"
