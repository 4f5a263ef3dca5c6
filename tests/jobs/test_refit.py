"""Camera or lighting changed -> collect -> confirm -> refit job (real RQ worker, real Redis): the refit is gated.

The refit goes through the same gate as a retrained candidate (on half of its freshly confirmed frames and
on the fixed held-out set) and is registered as gated_pass / gated_fail; with jobs.auto_promote off it waits
for approval. Too few confirmed frames is refused with a clear error and queues nothing.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inspector.bus.streams import StationBus
from inspector.camera.synthetic import PartFactory
from inspector.contracts.config import StationConfig
from inspector.contracts.errors import InspectorError
from inspector.contracts.lifecycle import ModelStatus
from inspector.contracts.messages import FrameMeta
from inspector.models.decode import encode_image
from inspector.models.tiny_package import build_tiny_package
from inspector.runtime.package import load_package
from inspector.store.db import open_store
from inspector.store.records import active_model, register_model
from jobs import maintenance, registry
from jobs.queues import station_queue
from jobs.worker import make_worker


def _dark(img: np.ndarray) -> np.ndarray:
    return np.clip(img.astype(np.float32) * 0.75, 0, 255).astype(np.uint8)


def _base(folder: Path, factory: PartFactory) -> Path:
    for sub, kind, n in (
        ("train/good", "good", 40),
        ("test/good", "good", 24),
        ("test/scratch", "scratch", 24),
        ("test/spot", "spot", 24),
    ):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            Image.fromarray(factory.make(kind)).save(folder / sub / f"{kind}_{k:03d}.png")
    return folder


@pytest.fixture
def refit_station(station_config: StationConfig, redis_client, tmp_path):  # type: ignore[no-untyped-def]
    factory = PartFactory(seed=11, size=128)
    base = _base(tmp_path / "base", factory)
    cfg = station_config.model_copy(deep=True)
    cfg.jobs = cfg.jobs.model_copy(update={"base_data": base, "collect_frames": 24})
    store = open_store(cfg)
    good = [factory.make("good") for _ in range(40)]
    bad = [factory.make(k) for k in ("scratch", "spot") for _ in range(12)]
    pkg = build_tiny_package(tmp_path / "v1", good, bad, name="tiny")
    register_model(store, "v1", str(pkg), load_package(pkg).package_sha256, {}, "setup", status=ModelStatus.APPROVED)
    registry.promote(cfg, redis_client, store, "v1", "setup")
    yield cfg, store, factory
    store.close()


def _publish_dark(cfg: StationConfig, bus: StationBus, factory: PartFactory, n: int) -> None:
    for seq in range(n):
        meta = FrameMeta(
            station=cfg.station.id, camera="cam0", seq=seq, part_id=f"d{seq}", captured_at=time.time(), encoding="png"
        )
        bus.publish_frame(meta, encode_image(_dark(factory.make("good")), "png"))


def test_refit_goes_through_the_gate_and_waits_for_approval(refit_station, redis_client) -> None:  # type: ignore[no-untyped-def]
    cfg, store, factory = refit_station
    bus = StationBus(redis_client, cfg)
    maintenance.camera_changed(cfg, redis_client, store, "max", "new LED bar")
    time.sleep(0.01)
    _publish_dark(cfg, bus, factory, 30)
    state = maintenance.collect(cfg, redis_client)
    assert state["status"] == "awaiting_confirmation" and state["have"] == 24
    req = maintenance.confirm(cfg, redis_client, store, "max")
    assert req.status == "enqueued"
    worker = make_worker(cfg, redis_client, simple=True)
    worker.work(burst=True)
    job = station_queue(cfg, redis_client).fetch_job(req.job_id)
    assert job is not None and job.get_status().value == "finished", job.exc_info if job else None
    out = job.return_value()
    row = registry.get_version(store, out["version"])
    gate = registry.gate_of(row)
    assert gate is not None, "the refit was registered without a gate"
    assert row.status == (ModelStatus.GATED_PASS if gate.passed else ModelStatus.GATED_FAIL)
    assert {r.frame_set for r in gate.rows} >= {"confirmed", "heldout"}
    confirmed_ceiling = [r for r in gate.rows if r.gate == "false_reject_ceiling"]
    assert confirmed_ceiling and confirmed_ceiling[0].frame_set == "confirmed"
    assert any(r.gate == "no_regression" and r.frame_set == "heldout" and r.incumbent is not None for r in gate.rows)
    assert gate.frame_sets["confirmed"] == 12  # half of the 24 confirmed frames: never the ones fitted on
    assert not out["promoted"] and active_model(store).version == "v1", "auto_promote is off: it waits"
    manifest = load_package(out["path"]).manifest
    assert manifest.gate == gate and manifest.data["refit_from"] == "v1"


def test_refit_with_too_few_confirmed_frames_is_refused(refit_station, redis_client) -> None:  # type: ignore[no-untyped-def]
    cfg, store, factory = refit_station
    cfg = cfg.model_copy(update={"jobs": cfg.jobs.model_copy(update={"collect_frames": 8})})
    bus = StationBus(redis_client, cfg)
    maintenance.camera_changed(cfg, redis_client, store, "max")
    time.sleep(0.01)
    _publish_dark(cfg, bus, factory, 10)
    assert maintenance.collect(cfg, redis_client)["status"] == "awaiting_confirmation"
    with pytest.raises(InspectorError, match="a refit needs 20 confirmed frames"):
        maintenance.confirm(cfg, redis_client, store, "max")
    assert station_queue(cfg, redis_client).count == 0
    assert active_model(store).version == "v1"
