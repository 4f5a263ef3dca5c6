"""GUI test helpers: screenshot folder, synthetic frames and verdicts on a real Redis."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from pytestqt.qtbot import QtBot

from gui.services import Services
from gui.state import Role, UserSession
from inspector.bus.streams import StationBus
from inspector.contracts.config import StationConfig
from inspector.contracts.messages import Decision, FrameMeta, ImageStats, Verdict
from inspector.models.decode import encode_image
from inspector.models.inference import heatmap_png
from inspector.store import records

SCREENSHOT_DIR = Path(os.environ.get("GUI_SCREENSHOT_DIR", Path(__file__).parent / "screenshots-out"))


@pytest.fixture
def screenshot() -> Callable[[object, str], Path]:
    def save(widget: object, name: str) -> Path:
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOT_DIR / f"{name}.png"
        assert widget.grab().save(str(path)), f"could not save {path}"  # type: ignore[attr-defined]
        return path

    return save


def part_image(seq: int, defect: bool) -> np.ndarray:
    from inspector.camera.synthetic import PartFactory

    factory = PartFactory(seq, 320)
    return factory.make("scratch" if defect else "good")


def defect_heatmap(size: int = 64, centre: tuple[int, int] = (40, 24)) -> str:
    yy, xx = np.mgrid[0:size, 0:size]
    amap = 2.2 * np.exp(-(((xx - centre[0]) ** 2) / 40 + ((yy - centre[1]) ** 2) / 12))
    return heatmap_png(amap.astype(np.float32), size)


def publish_part(
    bus: StationBus, seq: int, decision: Decision, defect_class: str | None = None, with_verdict: bool = True
) -> tuple[FrameMeta, Verdict]:
    cfg = bus.cfg
    img = part_image(seq, decision is not Decision.PASS)
    meta = FrameMeta(
        station=cfg.station.id,
        camera=cfg.camera.id,
        seq=seq,
        part_id=f"P-{seq:05d}",
        captured_at=__import__("time").time(),
        encoding="jpeg",
        width=img.shape[1],
        height=img.shape[0],
    )
    bus.publish_frame(meta, encode_image(img, "jpeg", 90))
    probs = (
        {"good": 0.04, "scratch": 0.9, "spot": 0.03, "chip": 0.03}
        if decision is not Decision.PASS
        else {"good": 0.97, "scratch": 0.01, "spot": 0.01, "chip": 0.01}
    )
    v = Verdict(
        station=cfg.station.id,
        frame_id=meta.frame_id,
        camera=meta.camera,
        seq=seq,
        part_id=meta.part_id,
        captured_at=meta.captured_at,
        decision=decision,
        reject=decision is not Decision.PASS,
        defect_class=defect_class,
        reasons=[f"classifier {defect_class or 'good'} {max(probs.values()):.2f}"],
        class_probs=probs,
        anomaly_score=1.8 if defect_class else 0.3,
        model_version="demo-1.0",
        latency_ms=42.0,
        worker="w1",
        heatmap=defect_heatmap() if defect_class else None,
        image_stats=ImageStats(
            brightness=120 + seq % 7, contrast=40, sharpness=300 + seq, mean_r=120, mean_g=120, mean_b=120
        ),
    )
    if with_verdict:
        assert bus.commit_verdicts([(v, "")]) == [True]
    return meta, v


def queue_items(bus: StationBus, services: Services, n: int) -> list[str]:
    """``n`` review items of recorded verdicts with archived images, priorities 50, 51, ... (frame ids returned)."""
    frame_ids = []
    for seq in range(n):
        decision = Decision.REVIEW if seq % 2 else Decision.FAIL
        _, v = publish_part(bus, seq, decision, "scratch", with_verdict=False)
        records.record_verdicts(services.store, [v])
        image = encode_image(part_image(seq, True), "jpeg", 85)
        services.labelling.request_review(
            v.frame_id, "uncertain classifier", "router", priority=50 + seq, image=image, encoding="jpeg"
        )
        frame_ids.append(v.frame_id)
    return frame_ids


@pytest.fixture
def services(station_config: StationConfig) -> Iterator[Services]:
    from inspector.store import open_store

    store = open_store(station_config)
    yield Services(station_config, store=store)
    store.close()


def session(role: Role, name: str = "Alex Doe") -> UserSession:
    return UserSession(name, role)


def give_drift_reference(package: Path, brightness: list[float], version: str | None = None) -> dict:  # type: ignore[type-arg]
    """Write a drift reference (brightness, contrast, sharpness of the given brightness values) into a package
    folder's manifest, as the trainer records it; returns the reference dict."""
    from inspector.drift.monitor import load_reference
    from inspector.drift.reference import reference_from_samples
    from inspector.runtime.package import write_manifest

    stats = [
        {"brightness": b, "contrast": 10 + b / 10, "sharpness": 2 * b, "mean_r": b, "mean_g": b, "mean_b": b}
        for b in brightness
    ]
    ref = reference_from_samples(stats, decisions=["PASS"] * len(stats), frames="held-out good")
    manifest, _ = load_reference(package)
    update: dict[str, object] = {"drift_reference": ref}
    if version is not None:
        update["version"] = version
    write_manifest(package, manifest.model_copy(update=update))
    return ref


def run_requested_job(qtbot: QtBot, cfg: StationConfig, client: redis.Redis, queued_before: int) -> None:
    """Once the view's action waits on the station's queue, let the station's own RQ worker run that one job (the
    jobs worker of a station does this; in-process here, at most one job, so a retraining it queues stays queued)."""
    from jobs.queues import station_queue
    from jobs.worker import make_worker

    queue = station_queue(cfg, client)
    qtbot.waitUntil(lambda: queue.count == queued_before + 1, timeout=5000)
    make_worker(cfg, client, simple=True).work(burst=True, max_jobs=1, logging_level="WARNING")
