"""``kill -9`` of each consumer process (recorder, drift monitor, line runner), run with the command the supervisor
uses: ``inspector status`` shows it down within its heartbeat TTL, and its restart under the same consumer name
processes the entries left pending under it, none lost, none twice.

Each test starts the process, feeds its stream, kills it with SIGKILL while entries are in flight, and times
``station_status`` (the function behind ``inspector status``) until the process reads ``down``; ``inspector status
--json`` is then run once as a command. Whether the kill left entries pending depends on where the process was;
when it left none, entries are read under its consumer name from the stream (exactly the state a kill between
XREADGROUP and XACK leaves), so the restart always has pending entries to recover.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import func, select

from inspector.bus.streams import StationBus
from inspector.contracts.config import StationConfig
from inspector.contracts.health import ConsumerBeat, ConsumerRole
from inspector.contracts.messages import FrameMeta
from inspector.contracts.names import STREAM_FIELD_MESSAGE, Names
from inspector.status import station_status
from inspector.store import open_store
from inspector.store.fakes import make_verdict
from inspector.store.models import VerdictRow
from tests.faults.harness import REPO, station, write_config

HEARTBEAT_TTL_S = 3.0  # StreamConsumer: a beat every second, key TTL three periods
SLACK_S = 1.0  # scheduling on a loaded 2-core machine


def _spawn(argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(log, "ab") as fh:
        return subprocess.Popen([sys.executable, *argv], stdout=fh, stderr=subprocess.STDOUT, cwd=REPO, env=env)


def _wait(pred: Callable[[], object], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


def _health(cfg: StationConfig, role: ConsumerRole, name: str) -> str | None:
    rows = station_status(cfg)["processes"]
    assert isinstance(rows, list)
    for p in rows:
        if p["role"] == role.value and p["name"] == name:
            return str(p["health"])
    return None


def _beat(client: redis.Redis, names: Names, role: ConsumerRole, name: str) -> ConsumerBeat | None:
    raw = client.get(names.consumer_heartbeat(role.value, name))
    return ConsumerBeat.model_validate_json(raw) if raw else None


def _pending(client: redis.Redis, stream: str, group: str, consumer: str | None = None) -> int:
    if consumer is None:
        return int(client.xpending(stream, group)["pending"])
    return len(client.xpending_range(stream, group, min="-", max="+", count=100_000, consumername=consumer))


def _lag(client: redis.Redis, stream: str, group: str) -> int:
    """Entries after the group's last-delivered id (XINFO's ``lag`` needs Redis 7; this works on 6.2 too)."""
    for g in client.xinfo_groups(stream):
        if (g["name"].decode() if isinstance(g["name"], bytes) else g["name"]) == group:
            last = g["last-delivered-id"]
            last = last.decode() if isinstance(last, bytes) else last
            return len(client.xrange(stream, min=f"({last}", max="+"))
    return 0


def _kill_and_time_down(
    proc: subprocess.Popen[bytes], cfg: StationConfig, role: ConsumerRole, name: str, config: Path
) -> float:
    """SIGKILL the process; seconds until ``inspector status`` reads it down (asserted within the TTL)."""
    os.kill(proc.pid, signal.SIGKILL)
    t0 = time.monotonic()
    proc.wait(10)
    assert _wait(lambda: _health(cfg, role, name) == "down", HEARTBEAT_TTL_S + SLACK_S + 2, step=0.05)
    elapsed = time.monotonic() - t0
    print(f"{role.value} {name}: down in inspector status {elapsed:.2f} s after kill -9 (TTL {HEARTBEAT_TTL_S:.0f} s)")
    assert elapsed <= HEARTBEAT_TTL_S + SLACK_S, elapsed
    out = subprocess.run(
        [sys.executable, "-m", "inspector.cli", "status", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    st = json.loads(out.stdout)
    row = next(p for p in st["processes"] if p["role"] == role.value and p["name"] == name)
    assert row["health"] == "down" and not st["healthy"] and st["down"], st
    return elapsed


def _read_as(client: redis.Redis, stream: str, group: str, consumer: str, n: int) -> int:
    """Read ``n`` entries under ``consumer`` and never acknowledge them: a kill between XREADGROUP and XACK."""
    reply = client.xreadgroup(group, consumer, {stream: ">"}, count=n)
    return sum(len(entries) for _s, entries in reply or [])


def _feed(fn: Callable[[int], None], n: int, pace_s: float) -> threading.Thread:
    def run() -> None:
        for i in range(n):
            fn(i)
            time.sleep(pace_s)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _config(tmp_path: Path, redis_url: str, **sections: dict[str, Any]) -> tuple[StationConfig, Path]:
    cfg = station(redis_url, tmp_path / "data", None, **sections)
    return cfg, write_config(cfg, tmp_path)


def test_recorder_process_kill9(tmp_path: Path, redis_url: str) -> None:
    cfg, config = _config(tmp_path, redis_url, store={"reclaim_idle_ms": 600_000, "flush_ms": 200})
    client = redis.Redis.from_url(redis_url)
    names, name, n = Names(cfg.redis.prefix, cfg.station.id), f"{cfg.station.id}-recorder", 400
    argv = ["-m", "inspector.recording", "--config", str(config), "--name", name]
    proc = _spawn(argv, tmp_path / "recorder.log")
    try:
        assert _wait(lambda: _health(cfg, ConsumerRole.RECORDER, name) == "ok", 60), (
            tmp_path / "recorder.log"
        ).read_text()
        feeder = _feed(
            lambda i: client.xadd(names.verdicts, {STREAM_FIELD_MESSAGE: make_verdict(cfg.station.id, i).to_json()}),
            n,
            0.004,
        )
        time.sleep(0.8)  # mid-stream
        _kill_and_time_down(proc, cfg, ConsumerRole.RECORDER, name, config)
        feeder.join(30)
        left = by_kill = _pending(client, names.verdicts, names.store_group, name)
        if left == 0:
            left = _read_as(client, names.verdicts, names.store_group, name, 25)
        print(
            f"recorder: {left} verdicts pending under {name} at restart ({by_kill} left by the kill), "
            f"{_lag(client, names.verdicts, names.store_group)} unread"
        )
        assert left > 0
        proc = _spawn(argv, tmp_path / "recorder.log")
        store = open_store(cfg)
        try:

            def rows() -> int:
                with store.session() as s:
                    return int(s.scalar(select(func.count()).select_from(VerdictRow)))

            assert _wait(lambda: rows() >= n and _pending(client, names.verdicts, names.store_group) == 0, 60), (
                rows(),
                (tmp_path / "recorder.log").read_text()[-2000:],
            )
            with store.session() as s:
                distinct = int(s.scalar(select(func.count(func.distinct(VerdictRow.frame_id)))))
            assert rows() == n and distinct == n  # none lost, none twice
        finally:
            store.close()
    finally:
        proc.kill()
        proc.wait(10)


def test_drift_monitor_process_kill9(tmp_path: Path, redis_url: str) -> None:
    cfg, config = _config(tmp_path, redis_url)
    client = redis.Redis.from_url(redis_url)
    names, name = Names(cfg.redis.prefix, cfg.station.id), "drift-1"  # the monitor's stable consumer name
    argv = ["-m", "jobs.cli", "drift", "--config", str(config), "--no-auto-retrain"]
    role = ConsumerRole.DRIFT_MONITOR
    proc = _spawn(argv, tmp_path / "drift.log")
    try:
        assert _wait(lambda: _health(cfg, role, name) == "ok", 90), (tmp_path / "drift.log").read_text()

        def publish(i: int) -> object:
            return client.xadd(names.verdicts, {STREAM_FIELD_MESSAGE: make_verdict(cfg.station.id, i).to_json()})

        feeder = _feed(publish, 300, 0.004)
        time.sleep(0.6)
        _kill_and_time_down(proc, cfg, role, name, config)
        feeder.join(30)
        pending = by_kill = _pending(client, names.verdicts, names.drift_group, name)
        if pending == 0:
            pending = _read_as(client, names.verdicts, names.drift_group, name, 25)
        unread = _lag(client, names.verdicts, names.drift_group)
        print(
            f"drift monitor: {pending} verdicts pending under {name} at restart ({by_kill} left by the kill), "
            f"{unread} unread"
        )
        assert pending > 0
        proc = _spawn(argv, tmp_path / "drift.log")
        assert _wait(lambda: _health(cfg, role, name) == "ok", 90)
        for i in range(300, 350):
            publish(i)
        expected = pending + unread + 50

        def done() -> int:
            beat = _beat(client, names, role, name)
            return beat.done if beat else -1

        assert _wait(lambda: done() >= expected and _pending(client, names.verdicts, names.drift_group) == 0, 30), (
            done(),
            expected,
        )
        time.sleep(1.5)  # one more heartbeat: nothing handled twice
        assert done() == expected and _lag(client, names.verdicts, names.drift_group) == 0
    finally:
        proc.kill()
        proc.wait(10)


def test_line_runner_process_kill9(tmp_path: Path, redis_url: str) -> None:
    cfg, config = _config(tmp_path, redis_url)
    client = redis.Redis.from_url(redis_url)
    bus = StationBus(client, cfg)
    names, name, role = bus.names, "line", ConsumerRole.LINE_RUNNER  # the runner's stable consumer name
    argv = ["-m", "inspector.cli", "line", "--config", str(config)]
    proc = _spawn(argv, tmp_path / "line.log")

    def part(i: int) -> None:  # a frame, then its verdict
        meta = FrameMeta(
            station=cfg.station.id,
            camera=cfg.camera.id,
            seq=i,
            part_id=f"P{i:06d}",
            captured_at=time.time(),
            encoding="jpeg",
        )
        bus.publish_frame(meta, b"jpeg")
        verdict = make_verdict(cfg.station.id, i, frame_id=meta.id, part_id=meta.part_id, camera=cfg.camera.id)
        client.xadd(names.verdicts, {STREAM_FIELD_MESSAGE: verdict.to_json()})

    streams = (names.frames, names.verdicts)
    try:
        assert _wait(
            lambda: _health(cfg, role, name) == "ok" and all(_line_group_exists(client, s) for s in streams), 90
        ), (tmp_path / "line.log").read_text()
        feeder = _feed(part, 200, 0.006)
        time.sleep(0.6)
        _kill_and_time_down(proc, cfg, role, name, config)
        feeder.join(30)
        pending = by_kill = sum(_pending(client, s, names.line_group, name) for s in streams)
        if pending == 0:
            pending = sum(_read_as(client, s, names.line_group, name, 10) for s in streams)
        unread = sum(_lag(client, s, names.line_group) for s in streams)
        print(
            f"line runner: {pending} entries pending under {name} at restart ({by_kill} left by the kill), "
            f"{unread} unread"
        )
        assert pending > 0
        proc = _spawn(argv, tmp_path / "line.log")
        assert _wait(lambda: _health(cfg, role, name) == "ok", 90)
        for i in range(200, 220):
            part(i)
        expected = pending + unread + 40

        def done() -> int:
            beat = _beat(client, names, role, name)
            return beat.done if beat else -1

        assert _wait(
            lambda: done() >= expected and sum(_pending(client, s, names.line_group) for s in streams) == 0, 30
        ), (done(), expected)
        time.sleep(1.5)
        assert done() == expected and sum(_lag(client, s, names.line_group) for s in streams) == 0
    finally:
        proc.kill()
        proc.wait(10)


def _line_group_exists(client: redis.Redis, stream: str) -> bool:
    """True once the line group exists on ``stream``."""
    try:
        return any(
            (g["name"].decode() if isinstance(g["name"], bytes) else g["name"]) == "line"
            for g in client.xinfo_groups(stream)
        )
    except redis.ResponseError:
        return False
