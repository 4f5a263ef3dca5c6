"""The GUI's job submitter on a real Redis: each action lands on the station's RQ queue by dotted path with JSON
arguments, the station's allow-listed worker runs it, and its answer (or its refusal) comes back to the GUI."""

from __future__ import annotations

import importlib
import json
import zlib

import pytest
import redis

from gui.submitter import JobNotAnswered, NoJobsWorker, RqJobSubmitter
from inspector.contracts.config import StationConfig
from inspector.contracts.errors import InspectorError
from inspector.contracts.jobqueue import (
    APPROVE_MODEL_FUNC,
    PROMOTE_MODEL_FUNC,
    REQUEST_RETRAIN_FUNC,
    REQUESTED_JOB_FUNCTIONS,
)
from jobs.queues import refusal, station_queue
from jobs.worker import make_worker


def test_every_requested_action_is_a_station_job_function() -> None:
    for name in REQUESTED_JOB_FUNCTIONS:
        module, func = name.rsplit(".", 1)
        assert callable(getattr(importlib.import_module(module), func)), name


def test_an_action_waits_on_the_station_queue_under_its_dotted_name(
    station_config: StationConfig, redis_client: redis.Redis
) -> None:
    busy = make_worker(station_config, redis_client, simple=True)
    busy.register_birth()  # a jobs worker serves the queue (busy elsewhere: it runs nothing now)
    submitter = RqJobSubmitter(station_config, wait_s=0.3)
    try:
        with pytest.raises(JobNotAnswered, match="runs as soon as the worker is free"):
            submitter.promote_model("v9", "Max Maint (maintenance)", "maintenance")
        with pytest.raises(JobNotAnswered):
            submitter.request_retrain("Max Maint (maintenance)", "scratches missed")
    finally:
        busy.register_death()
    queue = station_queue(station_config, redis_client)
    retrain, promote = queue.jobs  # a person's action goes to the front of the queue
    assert promote.func_name == PROMOTE_MODEL_FUNC == "jobs.requested.promote_model"
    assert promote.args == [station_config.station.id, "v9", "Max Maint (maintenance)", "maintenance"]
    assert retrain.func_name == REQUEST_RETRAIN_FUNC and retrain.meta["requested_by"] == "Max Maint (maintenance)"
    assert refusal(promote) is None and refusal(retrain) is None, "the station's worker runs them"
    raw = zlib.decompress(redis_client.hget(promote.key, "data") or b"")  # RQ compresses the payload
    assert json.loads(raw)[0] == PROMOTE_MODEL_FUNC, "stored as JSON, never a pickle"


def test_without_a_jobs_worker_the_action_is_withdrawn(
    station_config: StationConfig, redis_client: redis.Redis
) -> None:
    with pytest.raises(NoJobsWorker, match="no jobs worker serves queue .* nothing was done") as err:
        RqJobSubmitter(station_config, wait_s=0.2).rollback_model("Max Maint (maintenance)", "maintenance")
    assert "inspector jobs worker" in str(err.value)
    assert station_queue(station_config, redis_client).count == 0, "it never runs later by surprise"


def test_the_workers_answer_and_refusal_come_back(station_config: StationConfig, redis_client: redis.Redis) -> None:
    submitter = RqJobSubmitter(station_config, wait_s=5)
    job = submitter.enqueue(
        redis_client,
        APPROVE_MODEL_FUNC,
        "v-missing",
        "Max Maint (maintenance)",
        "maintenance",
        actor="Max Maint (maintenance)",
    )
    make_worker(station_config, redis_client, simple=True).work(burst=True, max_jobs=1, logging_level="WARNING")
    with pytest.raises(InspectorError, match="model version v-missing is not registered") as err:
        submitter.answer(redis_client, job.id)
    assert "Traceback" not in str(err.value), "one line for the person, not the worker's traceback"
    job = submitter.enqueue(redis_client, APPROVE_MODEL_FUNC, "v-missing", "Olga", "operator", actor="Olga")
    make_worker(station_config, redis_client, simple=True).work(burst=True, max_jobs=1, logging_level="WARNING")
    with pytest.raises(InspectorError, match="role 'operator' may not model.approve") as err:
        submitter.answer(redis_client, job.id)
    assert "hint: this needs one of: maintenance, quality" in str(err.value), "the refusal keeps its hint"
