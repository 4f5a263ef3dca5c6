"""The worker on a real Redis: every frame gets exactly one verdict, whatever happens to workers or Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml

from inspector.bus.connection import EmbeddedRedis, client_for_url
from inspector.bus.streams import StationBus
from inspector.contracts.config import StationConfig, parse_config
from inspector.contracts.messages import Decision
from inspector.models.decode import encode_image
from inspector.worker import Worker, load_model
from tests.spine_helpers import publish_parts, publish_raw, read_verdicts, wait_for_verdicts


def _worker(cfg: StationConfig, client, package: Path, name: str = "w1") -> Worker:  # type: ignore[no-untyped-def]
    return Worker(cfg, client, load_model(cfg, package), name=name)


def _assert_exactly_once(verdicts, metas) -> None:  # type: ignore[no-untyped-def]
    ids = [v.frame_id for v in verdicts]
    assert len(ids) == len(set(ids)), "a frame got two verdicts"
    assert set(ids) == {m.id for m in metas}, f"lost {len({m.id for m in metas} - set(ids))} frames"


def test_n_frames_in_n_verdicts_out(station_config, redis_client, tiny_package) -> None:  # type: ignore[no-untyped-def]
    bus = StationBus(redis_client, station_config)
    w = _worker(station_config, redis_client, tiny_package)
    metas = publish_parts(bus, 120)
    w.run(max_frames=120, idle_exit_s=5)
    verdicts = read_verdicts(redis_client, bus)
    _assert_exactly_once(verdicts, metas)
    assert all(v.model_version == w.model.version for v in verdicts)
    assert bus.counters()["verdicts"] == 120
    assert {v.decision for v in verdicts} >= {Decision.PASS, Decision.FAIL}


def test_replayed_frame_never_gets_a_second_verdict(station_config, redis_client, tiny_package) -> None:  # type: ignore[no-untyped-def]
    bus = StationBus(redis_client, station_config)
    w = _worker(station_config, redis_client, tiny_package)
    metas = publish_parts(bus, 10)
    w.run(max_frames=10, idle_exit_s=3)
    for m in metas[:5]:  # the same frames (same frame ids) arrive again
        bus.publish_frame(m, encode_image(__import__("numpy").zeros((64, 64, 3), "uint8"), "png"))
    w.run(max_frames=15, idle_exit_s=2)
    verdicts = read_verdicts(redis_client, bus)
    _assert_exactly_once(verdicts, metas)
    assert w.counts["duplicates"] == 5
    pending = redis_client.xpending(bus.names.frames, station_config.worker.group)
    assert pending["pending"] == 0


def test_corrupt_and_empty_frames_become_error_verdicts(station_config, redis_client, tiny_package) -> None:  # type: ignore[no-untyped-def]
    bus = StationBus(redis_client, station_config)
    w = _worker(station_config, redis_client, tiny_package)
    good = encode_image(__import__("numpy").full((80, 80, 3), 128, "uint8"), "jpeg")
    metas = [
        publish_raw(bus, b"", 0),
        publish_raw(bus, good[: len(good) // 2], 1),
        publish_raw(bus, b"\xff\xd8\xff\xe0garbage" * 10, 2),
        publish_raw(bus, good, 3),
    ]
    w.run(max_frames=4, idle_exit_s=3)
    by_id = {v.frame_id: v for v in read_verdicts(redis_client, bus)}
    for m in metas[:3]:
        v = by_id[m.id]
        assert v.decision is Decision.ERROR and v.reject and v.error
    assert by_id[metas[3].id].decision is not Decision.ERROR


def test_poison_frame_is_dead_lettered_after_max_deliveries(station_config, redis_client, tiny_package) -> None:  # type: ignore[no-untyped-def]
    cfg = station_config.model_copy(deep=True)
    cfg.worker.max_deliveries = 2
    cfg.worker.reclaim_idle_ms = 100
    bus = StationBus(redis_client, cfg)
    bus.ensure_group(bus.names.frames, cfg.worker.group)
    metas = publish_parts(bus, 1)
    for _ in range(2):  # two workers that took the frame and died before answering
        bus.read_new(bus.names.frames, cfg.worker.group, f"dead-{uuid.uuid4().hex[:4]}", 1, None)
        time.sleep(0.15)
        bus.reclaim(bus.names.frames, cfg.worker.group, "dead-again", 100, 10)
        time.sleep(0.15)
    w = _worker(cfg, redis_client, tiny_package)
    w.run(idle_exit_s=1.5)
    (v,) = read_verdicts(redis_client, bus)
    assert v.frame_id == metas[0].id and v.decision is Decision.ERROR and "dead-lettered" in (v.error or "")
    assert redis_client.xlen(bus.names.dead_letter) == 1


def _config_file(cfg: StationConfig, folder: Path, package: Path) -> Path:
    data = cfg.model_dump(mode="json")
    data["model"]["package"] = str(package)
    f = folder / "station.yaml"
    f.write_text(yaml.safe_dump(data))
    return f


def _spawn_worker(config: Path, name: str) -> subprocess.Popen[bytes]:
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
            "6",
            "--no-record",
            "--no-review",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_kill_9_of_one_of_two_workers_loses_nothing(station_config, redis_client, tiny_package, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = station_config.model_copy(deep=True)
    cfg.worker.reclaim_idle_ms = 500
    cfg.worker.max_batch = 4
    config = _config_file(cfg, tmp_path, tiny_package)
    bus = StationBus(redis_client, cfg)
    bus.ensure_group(bus.names.frames, cfg.worker.group)
    metas = publish_parts(bus, 200)
    victim, survivor = _spawn_worker(config, "victim"), _spawn_worker(config, "survivor")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (
            not redis_client.exists(bus.names.verdicts) or redis_client.xlen(bus.names.verdicts) < 40
        ):
            time.sleep(0.02)
        os.kill(victim.pid, signal.SIGKILL)  # mid-batch: its pending entries must be reclaimed
        victim.wait(10)
        verdicts = wait_for_verdicts(redis_client, bus, 200, timeout=90)
    finally:
        for p in (victim, survivor):
            if p.poll() is None:
                p.terminate()
                p.wait(20)
    _assert_exactly_once(verdicts, metas)
    assert survivor.returncode == 0, survivor.stderr.read().decode()[-2000:] if survivor.stderr else ""


def test_sigterm_drains_and_exits(station_config, redis_client, tiny_package, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = _config_file(station_config, tmp_path, tiny_package)
    bus = StationBus(redis_client, station_config)
    bus.ensure_group(bus.names.frames, station_config.worker.group)
    publish_parts(bus, 60)
    p = _spawn_worker(config, "drainer")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not redis_client.exists(bus.names.verdicts):
        time.sleep(0.02)
    p.send_signal(signal.SIGTERM)
    assert p.wait(30) == 0
    info = redis_client.xpending(bus.names.frames, station_config.worker.group)
    assert info["pending"] == 0, "SIGTERM left frames in hand un-answered"


def test_redis_restart_mid_stream(tmp_path, tiny_package) -> None:  # type: ignore[no-untyped-def]
    server = EmbeddedRedis(tmp_path / "redis-data", appendfsync="always")
    server.start()
    cfg = parse_config(
        {
            "station": {"id": "restart", "data_dir": str(tmp_path)},
            "redis": {"url": server.url, "reconnect": {"give_up_s": 30}},
        },
        environ={},
    )
    client = client_for_url(server.url, cfg.redis)
    bus = StationBus(client, cfg)
    w = _worker(cfg, client, tiny_package)
    t = threading.Thread(target=w.run, kwargs={"max_frames": 80, "idle_exit_s": 20}, daemon=True)
    t.start()
    try:
        metas = publish_parts(bus, 40, seed=1)
        wait_for_verdicts(client, bus, 20)
        server.stop()  # Redis goes away mid-stream ...
        time.sleep(1.0)
        server.start()  # ... and comes back from its append-only file
        metas += publish_parts(bus, 40, seed=2)
        t.join(60)
        verdicts = wait_for_verdicts(client, bus, 80, timeout=30)
        _assert_exactly_once(verdicts, metas)
    finally:
        w.stop()
        server.stop()


@pytest.mark.parametrize("n", [1])
def test_trimmed_pending_entry_is_counted_not_inspected(station_config, redis_client, tiny_package, n) -> None:  # type: ignore[no-untyped-def]
    bus = StationBus(redis_client, station_config)
    bus.ensure_group(bus.names.frames, station_config.worker.group)
    publish_parts(bus, n)
    (entry,) = bus.read_new(bus.names.frames, station_config.worker.group, "gone", 1, None)
    redis_client.xdel(bus.names.frames, entry.entry_id)  # trimmed while pending
    time.sleep(0.2)
    cfg = station_config.model_copy(deep=True)
    cfg.worker.reclaim_idle_ms = 100
    w = _worker(cfg, redis_client, tiny_package)
    w.run(idle_exit_s=1)
    assert bus.counters().get("not_inspected") == 1
