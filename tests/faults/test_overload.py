"""Overload: frames arrive twice as fast as one worker can inspect them, then the line slows down again.

Expected: memory stays bounded (the frames stream never exceeds ``redis.frames_maxlen``, the worker's RSS
does not grow with the backlog), frames past ``worker.expire_ms`` get ERROR verdicts without inference,
frames trimmed before any worker read them are dead-lettered and counted ``not_inspected``, and latency
returns to its baseline once the rate drops.
"""

from __future__ import annotations

import statistics
import threading
import time

import pytest

from inspector.bus.streams import StationBus
from inspector.contracts.config import RuntimeSection
from inspector.contracts.messages import Decision
from inspector.contracts.names import Names
from inspector.models.decode import decode_image
from inspector.models.image_stats import image_stats
from inspector.models.inference import InspectionModel
from inspector.runtime.package import load_package
from tests.faults.harness import (
    Camera,
    frame_pool,
    proc_mem_kb,
    spawn_worker,
    station,
    stop_all,
    wait_for,
    wait_settled,
    write_config,
)
from tests.faults.reconcile import CameraLedger, read_verdict_entries, reconcile

pytestmark = pytest.mark.faults

FRAME_PX = 1600  # big frames: decode dominates, so one worker is slow enough to overload from one camera


def _service_ms(package, pool) -> float:  # type: ignore[no-untyped-def]
    """Median ms one worker spends per frame (decode, model, image statistics), measured here."""
    model = InspectionModel(load_package(package), RuntimeSection(threads=1))
    times = []
    for _truth, data in pool * 3:
        t0 = time.perf_counter()
        img = decode_image(data, "jpeg")
        model.infer([img])
        image_stats(img)
        times.append((time.perf_counter() - t0) * 1000)
    model.close()
    return statistics.median(times)


class Sampler(threading.Thread):
    def __init__(self, client, names: Names, pid: int) -> None:  # type: ignore[no-untyped-def]
        super().__init__(daemon=True)
        self.client, self.names, self.pid = client, names, pid
        self.xlen: list[int] = []
        self.rss_kb: list[int] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(0.25):
            self.xlen.append(int(self.client.xlen(self.names.frames)))
            self.rss_kb.append(proc_mem_kb(self.pid).get("VmRSS", 0))


def _phase(cfg, pool, fps: float, seconds: float, ledger: CameraLedger, start_seq: int) -> Camera:  # type: ignore[no-untyped-def]
    cam = Camera(cfg, pool, fps, ledger=ledger)
    cam.seq = start_seq
    cam.run(duration_s=seconds)
    return cam


def _latencies(entries, t_from: float, t_to: float) -> list[float]:  # type: ignore[no-untyped-def]
    return sorted(v.latency_ms or 0.0 for v, _ in entries if t_from <= v.captured_at < t_to)


def _overload(redis_url, redis_client, tiny_package, tmp_path, overload_s: float) -> None:  # type: ignore[no-untyped-def]
    cfg = station(
        redis_url,
        tmp_path / "st",
        tiny_package,
        redis={"frames_maxlen": 60},
        worker={"expire_ms": 1000, "max_batch": 4},
        runtime={"threads": 1},
    )
    names = Names(cfg.redis.prefix, cfg.station.id)
    StationBus(redis_client, cfg).ensure_group(names.frames, cfg.worker.group)
    pool = frame_pool(4, size=FRAME_PX)
    service_ms = _service_ms(tiny_package, pool)
    capacity = 1000 / service_ms
    (worker,) = [spawn_worker(write_config(cfg, tmp_path), "solo", tmp_path / "logs", idle_exit=60)]
    ledger = CameraLedger()
    sampler = Sampler(redis_client, names, worker.proc.pid)
    try:
        assert wait_for(lambda: redis_client.keys(names.heartbeat_pattern), 60), worker.tail()
        t_base = time.time()
        cam = _phase(cfg, pool, capacity * 0.3, 4, ledger, 0)
        rss_base = proc_mem_kb(worker.proc.pid).get("VmRSS", 0)
        sampler.start()
        t_over = time.time()
        cam = _phase(cfg, pool, capacity * 2, overload_s, ledger, cam.seq)
        t_rec = time.time()
        sampler.stop_event.set()
        cam = _phase(cfg, pool, capacity * 0.3, 8, ledger, cam.seq)
        t_end = time.time()
        assert wait_settled(redis_client, cfg, timeout=60), worker.tail()
    finally:
        sampler.stop_event.set()
        stop_all([worker])
    entries = read_verdict_entries(redis_client, names)
    counters = StationBus(redis_client, cfg).counters()
    base, over = _latencies(entries, t_base, t_over), _latencies(entries, t_over, t_rec)
    rec = _latencies(entries, t_end - 4, t_end)  # the last 4 s of the recovery phase
    late_errors = [v for v, _ in entries if v.captured_at >= t_end - 4 and v.decision is Decision.ERROR]
    print(
        f"OVERLOAD service_ms={service_ms:.1f} capacity_fps={capacity:.1f} camera_fps={capacity * 2:.1f} "
        f"for {overload_s:.0f}s; xlen_max={max(sampler.xlen)} (maxlen {cfg.redis.frames_maxlen}); "
        f"worker_rss_mb base={rss_base / 1024:.0f} max={max(sampler.rss_kb) / 1024:.0f}; "
        f"expired={counters.get('expired', 0)} not_inspected={counters.get('not_inspected', 0)}; "
        f"latency_ms p50 base={statistics.median(base):.0f} overload={statistics.median(over):.0f} "
        f"recovered={statistics.median(rec):.0f}"
    )
    reconcile(redis_client, names, ledger, deadline_s=cfg.line.deadline_ms / 1000)
    assert max(sampler.xlen) <= cfg.redis.frames_maxlen
    assert max(sampler.rss_kb) <= rss_base + 150 * 1024, "worker memory grew with the backlog"
    # frames past their deadline are rejected and counted: expired (ERROR verdict without inference) or trimmed
    # from the bounded stream (dead letter + not_inspected); which of the two depends on the machine's speed
    assert counters.get("expired", 0) + counters.get("not_inspected", 0) > 0
    assert not late_errors, f"{len(late_errors)} ERROR verdicts after recovery: {late_errors[0].error}"
    assert statistics.median(rec) <= max(3 * statistics.median(base), statistics.median(base) + 150)


def test_overload_twice_inference_rate(redis_url, redis_client, tiny_package, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _overload(redis_url, redis_client, tiny_package, tmp_path, overload_s=20)


@pytest.mark.slow
def test_overload_twice_inference_rate_long(redis_url, redis_client, tiny_package, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _overload(redis_url, redis_client, tiny_package, tmp_path, overload_s=60)
