"""A worker started with ``--no-record`` (what the supervisor passes where the station runs the recorder
process) runs no recorder thread of its own, and still routes uncertain frames to the review queue."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import redis
import yaml
from sqlalchemy import func, select

from inspector.bus.streams import StationBus
from inspector.contracts.config import StationConfig
from inspector.store.db import open_store
from inspector.store.models import ReviewItemRow, VerdictRow
from tests.spine_helpers import publish_parts, wait_for_verdicts


def _rows(cfg: StationConfig, table: type) -> int:
    store = open_store(cfg)
    try:
        with store.session() as s:
            return int(s.scalar(select(func.count()).select_from(table)) or 0)
    finally:
        store.close()


def test_no_record_worker_records_nothing_and_still_routes_reviews(
    station_config: StationConfig, redis_client: redis.Redis, tiny_package: Path, tmp_path: Path
) -> None:
    cfg = station_config.model_copy(deep=True)
    cfg.review.audit_pass_one_in = 1  # every PASS is audited: review items without relying on the model's doubts
    # the parts are published before the worker starts: on a loaded machine its start took longer than the
    # frames' expiry, every verdict was an ERROR ("expired") and nothing was audited (a CI-load failure)
    cfg.worker.expire_ms = 0
    data = cfg.model_dump(mode="json")
    data["model"]["package"] = str(tiny_package)
    config = tmp_path / "station.yaml"
    config.write_text(yaml.safe_dump(data))
    bus = StationBus(redis_client, cfg)
    bus.ensure_group(bus.names.frames, cfg.worker.group)
    publish_parts(bus, 12)
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "inspector.cli",
            "worker",
            "--config",
            str(config),
            "--name",
            "w1",
            "--idle-exit",
            "3",
            "--no-record",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_verdicts(redis_client, bus, 12, timeout=60)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (
            redis_client.exists(bus.names.review) and redis_client.xlen(bus.names.review)
        ):
            time.sleep(0.1)
        _, err = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, err.decode()[-2000:]
    notices = redis_client.xlen(bus.names.review) if redis_client.exists(bus.names.review) else 0
    assert notices >= 1 and _rows(cfg, ReviewItemRow) >= 1  # routed: stored, then announced
    assert _rows(cfg, VerdictRow) == 0  # no recorder thread in this worker
    groups = {
        g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
        for g in redis_client.xinfo_groups(bus.names.verdicts)
    }
    assert bus.names.store_group not in groups  # nobody read the verdicts for the database
