"""End to end: camera -> embedded Redis -> real worker processes -> verdicts, against the bare backend.

Throughput: a burst of frames published as fast as the camera side can, timed from the first publish to the
last verdict. Latency: frames paced at half that throughput, capture-to-verdict p50/p99 from the verdicts.
Memory: peak RSS (VmHWM) of every worker process, read just before it is stopped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from inspector.bench.timing import proc_status_kb, time_one
from inspector.contracts.config import RuntimeSection, StationConfig, parse_config
from inspector.models.decode import encode_image
from inspector.models.inference import InspectionModel
from inspector.runtime.package import ModelPackage


def bare_backend_fps(package: ModelPackage, frame: np.ndarray, threads: int, batch: int, runs: int) -> dict[str, float]:
    """Frames/s of the runner alone on preprocessed batches (the ceiling the pipeline is compared with)."""
    model = InspectionModel(package, RuntimeSection(threads=threads, precision="fp32"), max_batch=batch)
    try:
        x = np.stack([model.preprocessor(frame)] * batch)
        r = time_one(lambda: model.runner.run(x), runs)
        full = time_one(lambda: model.infer([frame] * batch), runs)
    finally:
        model.close()
    return {
        "runner_fps": round(1000 * batch / r["p50_ms"], 1),
        "infer_with_prepost_fps": round(1000 * batch / full["p50_ms"], 1),
        "batch": batch,
    }


def _config(url: str, data_dir: Path, package: Path, threads: int) -> StationConfig:
    return parse_config(
        {
            "station": {"id": f"bench{uuid.uuid4().hex[:6]}", "data_dir": str(data_dir)},
            "redis": {"url": url, "frames_maxlen": 20000},
            "model": {"package": str(package)},
            "runtime": {"threads": threads},
            "worker": {"expire_ms": 0},
        },
        environ={},
    )


def _spawn(config: Path, name: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "inspector.cli",
                "worker",
                "--config",
                str(config),
                "--name",
                name,
                "--idle-exit",
                "30",
                "--no-record",
                "--no-review",
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
        )


def _wait_verdicts(client: Any, stream: str, n: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.exists(stream) and client.xlen(stream) >= n:
            return time.perf_counter()
        time.sleep(0.005)
    raise TimeoutError(f"only {client.xlen(stream) if client.exists(stream) else 0} of {n} verdicts in {timeout:.0f} s")


def _publish(bus: Any, jpeg: bytes, seq: int) -> None:
    from inspector.contracts.messages import FrameMeta

    meta = FrameMeta(
        station=bus.cfg.station.id, camera="cam0", seq=seq, part_id=f"b{seq}", captured_at=time.time(), encoding="jpeg"
    )
    bus.publish_frame(meta, jpeg)


def run_pipeline(package: Path, frame: np.ndarray, workers: int, threads: int, frames: int) -> dict[str, Any]:
    from inspector.bus.connection import EmbeddedRedis, client_for_url
    from inspector.bus.streams import StationBus, decode_message

    jpeg = encode_image(frame, "jpeg", 90)
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis", appendfsync="always")
        url = server.start()
        cfg = _config(url, Path(tmp), package, threads)
        cfile = Path(tmp) / "station.yaml"
        cfile.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
        client = client_for_url(url, cfg.redis)
        bus = StationBus(client, cfg)
        bus.ensure_group(bus.names.frames, cfg.worker.group)
        procs = [_spawn(cfile, f"bench-{i}", Path(tmp) / f"w{i}.log") for i in range(workers)]
        try:
            _wait_ready(client, bus, workers)
            t0 = time.perf_counter()
            for seq in range(frames):
                _publish(bus, jpeg, seq)
            t_end = _wait_verdicts(client, bus.names.verdicts, frames, 120)
            fps = frames / (t_end - t0)
            n_lat = max(50, frames // 2)
            period = 2.0 / fps
            for seq in range(frames, frames + n_lat):
                _publish(bus, jpeg, seq)
                time.sleep(period)
            _wait_verdicts(client, bus.names.verdicts, frames + n_lat, 120)
            lat = [decode_message(f[b"m"]).latency_ms for _e, f in client.xrange(bus.names.verdicts)][frames:]
            mem = [proc_status_kb(p.pid) for p in procs]
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(30)
            client.close()
            server.stop()
    lat_arr = np.asarray([x for x in lat if x is not None], float)
    return {
        "workers": workers,
        "frames": frames,
        "fps": round(fps, 1),
        "paced_fps": round(fps / 2, 1),
        "latency_p50_ms": round(float(np.percentile(lat_arr, 50)), 2),
        "latency_p99_ms": round(float(np.percentile(lat_arr, 99)), 2),
        "worker_peak_rss_mb": [round(m.get("VmHWM", 0) / 1024, 1) for m in mem],
    }


def _wait_ready(client: Any, bus: Any, workers: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(client.keys(bus.names.heartbeat_pattern)) >= workers:
            return
        time.sleep(0.1)
    raise TimeoutError(f"{workers} workers did not start within {timeout:.0f} s")


def package_size(package: ModelPackage) -> dict[str, Any]:
    files = {rel: os.path.getsize(package.file(rel)) for rel in package.manifest.files}
    models = {rel: round(size / 1e6, 3) for rel, size in files.items() if rel.endswith(".onnx")}
    return {"model_files_mb": models, "package_mb": round(sum(files.values()) / 1e6, 3)}
