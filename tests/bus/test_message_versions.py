"""Rolling upgrades: a newer producer's extra fields are ignored, a message of a newer major schema version is
refused by decode_message and dead-lettered by the worker (the line rejects the part: no verdict)."""

from __future__ import annotations

import json
import time

import pytest

from inspector.bus.streams import StationBus, decode_message
from inspector.contracts.errors import UnsafeInputError
from inspector.contracts.messages import SCHEMA_VERSION, FrameMeta, Verdict
from inspector.models.decode import encode_image
from inspector.worker import Worker, load_model


def _verdict_doc(**extra: object) -> dict:
    v = Verdict(
        station="s", frame_id="f1", camera="c", seq=0, part_id="p", captured_at=1.0, decision="PASS", reject=False
    )  # type: ignore[arg-type]
    return {**json.loads(v.to_json()), **extra}


def test_fields_of_a_newer_minor_revision_are_ignored() -> None:
    doc = _verdict_doc(
        confidence_interval=[0.1, 0.2],
        image_stats={"brightness": 1, "contrast": 2, "sharpness": 3, "mean_r": 1, "mean_g": 1, "mean_b": 1, "hue": 7},
    )
    v = decode_message(json.dumps(doc).encode())
    assert isinstance(v, Verdict) and v.frame_id == "f1" and v.image_stats is not None


def test_a_newer_major_version_is_refused_naming_both_versions() -> None:
    with pytest.raises(
        UnsafeInputError, match=f"schema version {SCHEMA_VERSION + 1}, newer than this process's {SCHEMA_VERSION}"
    ):
        decode_message(json.dumps(_verdict_doc(v=SCHEMA_VERSION + 1)).encode())


def test_the_worker_dead_letters_a_frame_of_a_newer_major_version(station_config, redis_client, tiny_package) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    bus = StationBus(redis_client, station_config)
    worker = Worker(station_config, redis_client, model=load_model(station_config, tiny_package), name="w1")
    meta = FrameMeta(station=station_config.station.id, camera="cam0", seq=0, part_id="p0", captured_at=time.time())
    doc = {**json.loads(meta.to_json()), "v": SCHEMA_VERSION + 1}
    image = encode_image(np.zeros((64, 64, 3), np.uint8), "jpeg", 90)
    redis_client.xadd(bus.names.frames, {b"m": json.dumps(doc).encode(), b"img": image})
    worker.step()
    dead = redis_client.xrange(bus.names.dead_letter)
    assert len(dead) == 1 and b"newer than this process" in dead[0][1][b"reason"]
    assert not redis_client.exists(bus.names.verdicts) or redis_client.xlen(bus.names.verdicts) == 0
