"""Per-stage figures: decode, preprocess, inference, post-processing, decision, Redis round trip, store write."""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from inspector.bench.timing import summary, time_one
from inspector.contracts.config import PolicySection, RuntimeSection, parse_config
from inspector.decision import decide
from inspector.models.decode import decode_image, encode_image
from inspector.models.inference import InspectionModel, ModelOutput
from inspector.runtime.package import ModelPackage


def sample_frame(package: ModelPackage, size: int = 256) -> np.ndarray:
    """A synthetic part at camera size (the demo camera's parts), RGB uint8."""
    from inspector.camera.synthetic import PartFactory

    return PartFactory(seed=3, size=size).make("good")


def model_stages(package: ModelPackage, frame: np.ndarray, threads: int, runs: int) -> dict[str, dict[str, float]]:
    """decode, preprocess, inference (batch 1), post-processing, decision: medians of ``runs``."""
    jpeg = encode_image(frame, "jpeg", 90)
    model = InspectionModel(package, RuntimeSection(threads=threads, precision="fp32"))
    try:
        model.warmup()
        tensor = model.preprocessor(frame)[None]
        outputs = model.runner.run(tensor)
        out = model._postprocess(outputs, 0)  # noqa: SLF001 - the post-processing stage alone
        policy = PolicySection()
        probs = out.class_probs if isinstance(out, ModelOutput) else None
        score = out.anomaly_score if isinstance(out, ModelOutput) else None
        return {
            "decode": time_one(lambda: decode_image(jpeg, "jpeg"), runs),
            "preprocess": time_one(lambda: model.preprocessor(frame), runs),
            "inference": time_one(lambda: model.runner.run(tensor), runs),
            "postprocess": time_one(lambda: model._postprocess(outputs, 0), runs),  # noqa: SLF001
            "decision": time_one(lambda: decide(probs, score, policy), runs),
            "infer_call_total": time_one(lambda: model.infer([frame]), runs),
        }
    finally:
        model.close()


def redis_round_trip(frame: np.ndarray, runs: int, appendfsync: str = "always") -> dict[str, Any]:
    """XADD (the station's publish script) -> XREADGROUP -> XACK on an embedded redis-server, one frame at a time."""
    from inspector.bus.connection import EmbeddedRedis, client_for_url
    from inspector.bus.streams import StationBus
    from inspector.contracts.messages import FrameMeta

    jpeg = encode_image(frame, "jpeg", 90)
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp), appendfsync=appendfsync)
        url = server.start()
        cfg = parse_config(
            {"station": {"id": f"bench{uuid.uuid4().hex[:6]}", "data_dir": tmp}, "redis": {"url": url}}, environ={}
        )
        client = client_for_url(url, cfg.redis)
        bus = StationBus(client, cfg)
        bus.ensure_group(bus.names.frames, cfg.worker.group, "$")
        times = []
        try:
            for seq in range(runs + 10):
                meta = FrameMeta(
                    station=cfg.station.id,
                    camera="cam0",
                    seq=seq,
                    part_id=f"b{seq}",
                    captured_at=time.time(),
                    encoding="jpeg",
                )
                t0 = time.perf_counter()
                bus.publish_frame(meta, jpeg)
                (entry,) = bus.read_new(bus.names.frames, cfg.worker.group, "bench", 1, block_ms=1000)
                bus.ack([entry.entry_id])
                if seq >= 10:
                    times.append((time.perf_counter() - t0) * 1000)
        finally:
            client.close()
            server.stop()
    return {**summary(times), "frame_bytes": len(jpeg), "appendfsync": appendfsync}


def store_write(n: int = 2000) -> dict[str, Any]:
    """Batched verdict insert rate through the store's recorder (when inspector.store is installed)."""
    try:
        from inspector.recording.bench import bench_recording
    except ImportError as err:
        return {"skipped": f"inspector.store not available: {err}"}
    try:
        rate = bench_recording(n)
    except Exception as err:  # noqa: BLE001 - a concurrent package may be mid-change; report, do not crash the bench
        return {"skipped": f"store bench failed: {type(err).__name__}: {err}"}
    return {"verdicts_per_s": round(rate, 1), "n": n, "db": "sqlite (WAL, synchronous=FULL)"}
