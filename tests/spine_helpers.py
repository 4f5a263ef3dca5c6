"""Helpers the spine tests share: a tiny real package, frame publishing, verdict reading."""

from __future__ import annotations

import time
from pathlib import Path

import redis

from inspector.bus.streams import StationBus, decode_message
from inspector.camera.synthetic import PartFactory
from inspector.contracts.messages import FrameMeta, Verdict
from inspector.models.decode import encode_image
from inspector.models.tiny_package import build_tiny_package


def make_tiny_package(folder: Path) -> Path:
    f = PartFactory(seed=7)
    good = [f.make("good") for _ in range(60)]
    bad = [f.make(k) for k in ("scratch", "spot", "chip") for _ in range(15)]
    return build_tiny_package(folder, good, bad)


def publish_parts(bus: StationBus, n: int, seed: int = 3, camera: str = "cam0") -> list[FrameMeta]:
    f = PartFactory(seed=seed)
    metas = []
    for seq in range(n):
        kind = f.sample_kind(0.3)
        meta = FrameMeta(
            station=bus.cfg.station.id,
            camera=camera,
            seq=seq,
            part_id=f"p{seq}",
            captured_at=time.time(),
            encoding="jpeg",
            truth=kind,
        )
        bus.publish_frame(meta, encode_image(f.make(kind), "jpeg", 90))
        metas.append(meta)
    return metas


def publish_raw(bus: StationBus, data: bytes, seq: int, encoding: str = "jpeg") -> FrameMeta:
    meta = FrameMeta(
        station=bus.cfg.station.id,
        camera="cam0",
        seq=seq,
        part_id=f"raw{seq}",
        captured_at=time.time(),
        encoding=encoding,
    )
    bus.publish_frame(meta, data)
    return meta


def read_verdicts(client: redis.Redis, bus: StationBus) -> list[Verdict]:
    out = []
    for _eid, fields in client.xrange(bus.names.verdicts):
        v = decode_message(fields[b"m"])
        assert isinstance(v, Verdict)
        out.append(v)
    return out


def wait_for_verdicts(client: redis.Redis, bus: StationBus, n: int, timeout: float = 60) -> list[Verdict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.exists(bus.names.verdicts) and client.xlen(bus.names.verdicts) >= n:
            break
        time.sleep(0.05)
    return read_verdicts(client, bus)


def label_frames(
    cfg,
    store,
    frames: list[tuple[bytes, str]],
    ext: str = "png",
    tag: str = "lab",  # type: ignore[no-untyped-def]
    user: str = "reviewer",
) -> None:
    """People label frames as the quality view does: archived image, review item, lease, current label.

    ``frames``: (encoded image bytes, label) pairs; ``tag`` prefixes the frame ids (unique per call site)."""
    from inspector.archive import Archive
    from inspector.contracts.messages import Decision, ReviewRequest
    from inspector.review.labelling import LabellingService
    from inspector.store.records import add_review_item

    archive = Archive.for_data_dir(cfg.data_dir)
    svc = LabellingService(store, archive)
    for k, (data, label) in enumerate(frames):
        sha = archive.put(data, ext)
        add_review_item(
            store,
            ReviewRequest(
                station=cfg.station.id,
                frame_id=f"{tag}{k}",
                part_id=f"{tag}{k}",
                camera="cam0",
                reasons=["uncertain"],
                priority=1,
                image_sha256=sha,
                decision=Decision.REVIEW,
            ),
            image_ext=ext,
        )
        item = svc.lease_next(user)
        assert item is not None
        svc.label(item.id, user, label)
