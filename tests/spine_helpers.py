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
        meta = FrameMeta(station=bus.cfg.station.id, camera=camera, seq=seq, part_id=f"p{seq}",
                         captured_at=time.time(), encoding="jpeg", truth=kind)
        bus.publish_frame(meta, encode_image(f.make(kind), "jpeg", 90))
        metas.append(meta)
    return metas


def publish_raw(bus: StationBus, data: bytes, seq: int, encoding: str = "jpeg") -> FrameMeta:
    meta = FrameMeta(station=bus.cfg.station.id, camera="cam0", seq=seq, part_id=f"raw{seq}",
                     captured_at=time.time(), encoding=encoding)
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
