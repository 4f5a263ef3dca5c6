"""Workers die under load: kill -9 repeatedly with respawn, SIGTERM drains, a poison frame is dead-lettered.

Every test prints its figures and ends with :func:`tests.faults.reconcile.reconcile`.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from inspector.bus.streams import StationBus
from inspector.contracts.messages import Decision, FrameMeta
from inspector.contracts.names import Names
from tests.faults.harness import (
    Camera,
    WorkerProc,
    frame_pool,
    spawn_worker,
    station,
    stop_all,
    verdict_count,
    wait_for,
    wait_settled,
    write_config,
)
from tests.faults.reconcile import CameraLedger, reconcile

pytestmark = pytest.mark.faults


def _names(cfg) -> Names:  # type: ignore[no-untyped-def]
    return Names(cfg.redis.prefix, cfg.station.id)


def _kill_loop(cfg, tmp_path: Path, redis_client, tiny_package: Path, seconds: float, fps: float) -> None:  # type: ignore[no-untyped-def]
    config = write_config(cfg, tmp_path)
    StationBus(redis_client, cfg).ensure_group(_names(cfg).frames, cfg.worker.group)
    logs = tmp_path / "logs"
    workers = [spawn_worker(config, f"w{i}", logs) for i in range(3)]
    all_workers: list[WorkerProc] = list(workers)
    assert wait_for(lambda: len(redis_client.keys(_names(cfg).heartbeat_pattern)) >= 3, 60), "workers did not start"
    cam = Camera(cfg, frame_pool(), fps)
    cam.start(duration_s=seconds)
    rng = random.Random(11)
    kills = 0
    t_end = time.monotonic() + seconds
    try:
        while time.monotonic() < t_end - 1.0:
            time.sleep(rng.uniform(1.0, 2.0))
            victim = workers.pop(rng.randrange(len(workers)))
            os.kill(victim.proc.pid, signal.SIGKILL)  # mid-batch: its pending entries must be reclaimed
            victim.proc.wait(10)
            kills += 1
            fresh = spawn_worker(config, f"w{kills + 2}-respawn", logs)
            workers.append(fresh)
            all_workers.append(fresh)
        cam.join(seconds + 30)
        settled = wait_settled(redis_client, cfg, timeout=90)
    finally:
        cam.stop()
        stop_all(workers)
    lat = _latencies(redis_client, cfg)
    print(
        f"KILL9 kills={kills} sent={len(cam.ledger.sent)} fps={fps} settled={settled} "
        f"latency_ms p50={lat[0]:.1f} p99={lat[1]:.1f}"
    )
    assert settled, "frames still pending after the workers were killed: " + workers[0].tail()
    rep = reconcile(redis_client, _names(cfg), cam.ledger, deadline_s=cfg.line.deadline_ms / 1000)
    assert rep.sent >= fps * seconds * 0.5
    assert kills >= 3
    crashed = [
        (w.name, w.proc.returncode, w.tail())
        for w in all_workers
        if w.proc.returncode not in (0, -signal.SIGKILL, -signal.SIGTERM)
    ]  # SIGTERM: stopped while starting
    assert not crashed, crashed


def _latencies(client, cfg) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    from tests.faults.reconcile import read_verdict_entries

    lat = sorted(
        v.latency_ms or 0.0 for v, _ in read_verdict_entries(client, _names(cfg)) if v.decision is not Decision.ERROR
    )
    if not lat:
        return float("nan"), float("nan")
    return lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]


def test_kill_9_workers_repeatedly_under_load(redis_url, redis_client, tiny_package, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = station(redis_url, tmp_path / "st", tiny_package)
    _kill_loop(cfg, tmp_path, redis_client, tiny_package, seconds=12, fps=40)


@pytest.mark.slow
def test_kill_9_workers_repeatedly_under_load_long(redis_url, redis_client, tiny_package, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = station(redis_url, tmp_path / "st", tiny_package)
    _kill_loop(cfg, tmp_path, redis_client, tiny_package, seconds=60, fps=60)


def test_sigterm_drains_under_load(redis_url, redis_client, tiny_package, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = station(redis_url, tmp_path / "st", tiny_package)
    config = write_config(cfg, tmp_path)
    names = _names(cfg)
    StationBus(redis_client, cfg).ensure_group(names.frames, cfg.worker.group)
    workers = [spawn_worker(config, n, tmp_path / "logs") for n in ("stays", "drains")]
    cam = Camera(cfg, frame_pool(), 40)
    try:
        assert wait_for(lambda: len(redis_client.keys(names.heartbeat_pattern)) >= 2, 60)
        cam.start(duration_s=8)
        assert wait_for(lambda: verdict_count(redis_client, cfg) >= 60, 30)
        t0 = time.monotonic()
        workers[1].proc.send_signal(signal.SIGTERM)
        rc = workers[1].proc.wait(30)
        drain_s = time.monotonic() - t0
        pending = redis_client.xpending_range(names.frames, cfg.worker.group, "-", "+", 1000, consumername="drains")
        print(f"SIGTERM drain_s={drain_s:.2f} rc={rc} left_pending={len(pending)}")
        assert rc == 0, workers[1].tail()
        assert not pending, "SIGTERM left frames in hand un-answered"
        cam.join(30)
        assert wait_settled(redis_client, cfg, timeout=60)
    finally:
        cam.stop()
        stop_all(workers)
    reconcile(redis_client, names, cam.ledger, deadline_s=cfg.line.deadline_ms / 1000)


_KILLER = """
import sys, time
import redis
r = redis.Redis.from_url(sys.argv[1])
stream, group, mode = sys.argv[2], sys.argv[3], sys.argv[4]
if mode == "read":
    got = r.xreadgroup(group, "poisoned-" + sys.argv[5], {stream: ">"}, count=1)
    ids = [e[0] for _s, es in got for e in es]
else:
    ids = [e[0] for e in r.xautoclaim(stream, group, "poisoned-" + sys.argv[5], 0, "0-0", count=1)[1]]
print("took", ids, flush=True)
time.sleep(60)  # 'decoding' the poison frame: SIGKILLed here, like a worker crashing in a native decoder
"""


def _deliver_to_dying_consumer(cfg, url: str, mode: str, k: int) -> None:  # type: ignore[no-untyped-def]
    names = _names(cfg)
    p = subprocess.Popen(
        [sys.executable, "-c", _KILLER, url, names.frames, cfg.worker.group, mode, str(k)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None
    line = p.stdout.readline()
    assert line.startswith("took") and "[]" not in line, line
    os.kill(p.pid, signal.SIGKILL)
    p.wait(10)


def test_poison_frame_dead_lettered_after_n_deliveries_while_rest_flows(
    redis_url,
    redis_client,
    tiny_package,  # type: ignore[no-untyped-def]
    tmp_path,
) -> None:
    cfg = station(redis_url, tmp_path / "st", tiny_package, worker={"max_deliveries": 3, "reclaim_idle_ms": 400})
    config = write_config(cfg, tmp_path)
    names = _names(cfg)
    bus = StationBus(redis_client, cfg)
    bus.ensure_group(names.frames, cfg.worker.group)
    ledger = CameraLedger()
    poison = FrameMeta(
        station=cfg.station.id, camera="cam0", seq=0, part_id="poison", captured_at=time.time(), encoding="jpeg"
    )
    bus.publish_frame(poison, frame_pool(1)[0][1])
    ledger.ok(poison)
    for k in range(cfg.worker.max_deliveries):  # every consumer that takes it dies
        _deliver_to_dying_consumer(cfg, redis_url, "read" if k == 0 else "claim", k)
    (row,) = redis_client.xpending_range(names.frames, cfg.worker.group, "-", "+", 10)
    assert row["times_delivered"] == cfg.worker.max_deliveries
    workers = [spawn_worker(config, n, tmp_path / "logs") for n in ("a", "b")]
    cam = Camera(cfg, frame_pool(), 30, ledger=ledger)
    cam.seq = 1
    try:
        cam.start(duration_s=6)
        cam.join(30)
        assert wait_settled(redis_client, cfg, timeout=60)
    finally:
        cam.stop()
        stop_all(workers)
    rep = reconcile(redis_client, names, ledger, deadline_s=cfg.line.deadline_ms / 1000)
    from tests.faults.reconcile import read_dead_letters, read_verdict_entries

    by_id = {v.frame_id: v for v, _ in read_verdict_entries(redis_client, names)}
    dead, _ = read_dead_letters(redis_client, names)
    print(f"POISON deliveries={cfg.worker.max_deliveries + 1} dead_letters={dict(dead)} flowed={rep.verdicts - 1}")
    assert by_id[poison.id].decision is Decision.ERROR and "dead-lettered" in (by_id[poison.id].error or "")
    assert dead[poison.id] == 1
    others = [v for fid, v in by_id.items() if fid != poison.id]
    assert len(others) == len(ledger.sent) - 1 and len(others) > 100
