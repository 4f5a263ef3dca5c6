"""Redis SIGKILLed and restarted under load, append-only file with ``appendfsync always``.

Frames the camera could not publish while Redis was down are counted on the camera side ("not sent": the
line rejects those parts); every frame that was sent has exactly one outcome once Redis is back.
"""

from __future__ import annotations

import time

import pytest

from inspector.bus.connection import EmbeddedRedis, client_for_url
from inspector.bus.streams import StationBus
from inspector.contracts.names import Names
from tests.faults.harness import (
    Camera,
    frame_pool,
    spawn_worker,
    station,
    stop_all,
    wait_for,
    wait_settled,
    write_config,
)
from tests.faults.reconcile import reconcile

pytestmark = pytest.mark.faults


def _redis_kill_cycle(tmp_path, tiny_package, seconds: float, outages: int, down_s: float, fps: float) -> None:  # type: ignore[no-untyped-def]
    server = EmbeddedRedis(tmp_path / "redis-data", appendfsync="always")
    url = server.start()
    cfg = station(url, tmp_path / "st", tiny_package)
    client = client_for_url(url, cfg.redis)
    names = Names(cfg.redis.prefix, cfg.station.id)
    StationBus(client, cfg).ensure_group(names.frames, cfg.worker.group)
    config = write_config(cfg, tmp_path)
    workers = [spawn_worker(config, f"w{i}", tmp_path / "logs", idle_exit=60) for i in range(2)]
    cam = Camera(cfg, frame_pool(), fps, give_up_s=0.3)
    downtime = 0.0
    try:
        assert wait_for(lambda: len(client.keys(names.heartbeat_pattern)) >= 2, 60), workers[0].tail()
        cam.start(duration_s=seconds)
        gap = seconds / (outages + 1)
        for _ in range(outages):
            time.sleep(gap - down_s)
            t0 = time.monotonic()
            server.kill()  # SIGKILL: no shutdown, no final fsync
            time.sleep(down_s)
            server.start()  # same port, replays the append-only file
            downtime += time.monotonic() - t0
        cam.join(seconds + 60)
        settled = wait_settled(client, cfg, timeout=90)
        alive = [w.name for w in workers if w.proc.poll() is None]
    finally:
        cam.stop()
        stop_all(workers)
    print(
        f"REDIS_KILL outages={outages} downtime_s={downtime:.1f} sent={len(cam.ledger.sent)} "
        f"not_sent={len(cam.ledger.not_sent)} (missed while stalled {cam.missed}) camera_errors={sorted(set(cam.errors))} workers_alive={alive}"
    )
    try:
        assert settled, workers[0].tail()
        assert len(alive) == 2, [w.tail() for w in workers]
        rep = reconcile(client, names, cam.ledger, deadline_s=cfg.line.deadline_ms / 1000)
        assert rep.not_sent > 0, "the camera never saw Redis down: the fault was not injected"
        assert rep.counters["published"] >= rep.sent  # published counts every entry Redis kept
    finally:
        client.close()
        server.stop()


def test_redis_sigkill_and_restart_under_load(tmp_path, tiny_package) -> None:  # type: ignore[no-untyped-def]
    _redis_kill_cycle(tmp_path, tiny_package, seconds=12, outages=2, down_s=1.5, fps=30)


@pytest.mark.slow
def test_redis_sigkill_and_restart_under_load_long(tmp_path, tiny_package) -> None:  # type: ignore[no-untyped-def]
    _redis_kill_cycle(tmp_path, tiny_package, seconds=60, outages=6, down_s=3.0, fps=40)
