"""1,000 two-view parts through two worker processes, one of them SIGKILLed in the middle: every part gets
exactly one part verdict (the parts stream, the line outputs and the part_verdicts table), none is lost, and
the killed worker's pending frames are reclaimed by the other. Prints its figures, then reconciles the frames.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from redis import Redis

from inspector.bus.streams import StationBus
from inspector.camera.publisher import CameraPublisher, part_id_of
from inspector.camera.sources import Capture, FrameSource
from inspector.contracts.config import StationConfig, parse_config
from inspector.contracts.messages import Decision, FrameMeta
from inspector.contracts.names import Names
from inspector.line import LineRunner, MemoryOutput
from inspector.line.parts import read_part_verdicts
from inspector.store import open_store
from inspector.store.models import PartVerdictRow
from tests.faults.harness import (
    REPO,
    WorkerProc,
    frame_pool,
    spawn_worker,
    station,
    stop_all,
    wait_for,
    wait_settled,
    write_config,
)
from tests.faults.reconcile import CameraLedger, read_verdict_entries, reconcile

pytestmark = pytest.mark.faults

VIEWS = ["top", "side"]
PARTS = 1000


class _Pool(FrameSource):
    def __init__(self, pool: list[tuple[str, bytes]], offset: int) -> None:
        self.pool, self.i = pool, offset

    def read(self) -> Capture:
        truth, data = self.pool[self.i % len(self.pool)]
        self.i += 1
        return Capture(encoded=data, encoding="jpeg", truth=truth)


def _camera(cfg: StationConfig, client, camera: str, offset: int) -> CameraPublisher:  # type: ignore[no-untyped-def]
    data = cfg.model_dump(mode="json")
    data["camera"]["id"] = camera
    return CameraPublisher(StationBus(client, parse_config(data, environ={})), _Pool(frame_pool(), offset))


def _frame_id(client, names: Names, entry_id: bytes | str) -> str:  # type: ignore[no-untyped-def]
    [(_eid, fields)] = client.xrange(names.frames, entry_id, entry_id)
    return FrameMeta.from_json(fields[b"m"]).frame_id


def _kill_holding(worker: WorkerProc, client: Redis, names: Names, group: str, force: bool) -> list[str] | None:
    """SIGKILL the worker if it holds frames (read, not yet acknowledged) and return their frame ids; else None.

    The worker is frozen (SIGSTOP) while its pending list is read, so it cannot acknowledge the frames between the
    look and the kill: a frozen worker with nothing in hand is let go (SIGCONT) and asked again at the next part,
    unless `force` (late in the run) kills it anyway.
    """
    os.kill(worker.proc.pid, signal.SIGSTOP)
    in_hand = client.xpending_range(names.frames, group, "-", "+", 1000, consumername=worker.name)
    if not in_hand and not force:
        os.kill(worker.proc.pid, signal.SIGCONT)
        return None
    os.kill(worker.proc.pid, signal.SIGKILL)
    worker.proc.wait(10)
    return [_frame_id(client, names, e["message_id"]) for e in in_hand]


def test_1000_two_view_parts_kill_9_a_worker(redis_url, redis_client, tiny_package, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = station(
        redis_url,
        tmp_path / "station",
        tiny_package,
        parts={"views": VIEWS},
        camera={"id": "top"},
        line={"deadline_ms": 4000},
        store={"reclaim_idle_ms": 1000},
    )
    names = Names(cfg.redis.prefix, cfg.station.id)
    config = write_config(cfg, tmp_path)
    StationBus(redis_client, cfg).ensure_group(names.frames, cfg.worker.group)
    workers = [spawn_worker(config, name, tmp_path / "logs", idle_exit=60, record=True) for name in ("wa", "wb")]
    out = MemoryOutput()
    line = LineRunner(cfg, outputs=[out])
    line._ensure_groups()
    line_thread = threading.Thread(target=line.run, daemon=True)
    line_thread.start()
    cams = {"top": _camera(cfg, redis_client, "top", 0), "side": _camera(cfg, redis_client, "side", 7)}
    ledger = CameraLedger()
    fps = 40.0  # parts per second, two frames each
    killed_at: float | None = None
    held: list[str] = []
    try:
        assert wait_for(lambda: len(redis_client.keys(names.heartbeat_pattern)) >= 2, 90), workers[0].tail()
        t0 = time.monotonic()
        for n in range(PARTS):
            for view in VIEWS:
                cam = cams[view]
                ledger.ok(cam.publish(cam.source.read()))
            if n >= PARTS // 2 and killed_at is None:  # mid-run: SIGKILL worker wa once it has frames in hand
                in_hand = _kill_holding(workers[0], redis_client, names, cfg.worker.group, force=n >= PARTS * 3 // 4)
                if in_hand is not None:
                    killed_at, held = time.monotonic() - t0, in_hand
            delay = t0 + (n + 1) / fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        publish_s = time.monotonic() - t0
        settled = wait_settled(redis_client, cfg, timeout=90)
        assert wait_for(lambda: redis_client.xlen(names.parts) >= PARTS and line.decider.pending == 0, 30)
        time.sleep(0.5)
        store = open_store(cfg)

        def recorded() -> int:
            with store.session() as s:
                return s.query(PartVerdictRow).count()

        assert wait_for(lambda: recorded() >= PARTS, 60), f"part_verdicts rows: {recorded()}"  # survivor's recorder
    finally:
        line.stop()
        line_thread.join(5)
        stop_all(workers)
    parts = read_part_verdicts(redis_client, names)
    per_part = Counter(p.part_id for p in parts)
    expected = {part_id_of(n) for n in range(1, PARTS + 1)}
    lost = expected - set(per_part)
    dup = [p for p, k in per_part.items() if k > 1]
    signals = Counter(o.part.part_id for o in out.outcomes)
    frames = {v.frame_id: v for v, _ in read_verdict_entries(redis_client, names)}
    by_reason = Counter(p.reason for p in parts)
    with store.session() as s:
        rows = {r.part_id: r for r in s.query(PartVerdictRow)}
    store.close()
    reclaimed = [fid for fid in held if fid in frames and frames[fid].worker == "wb"]
    print(
        f"MULTIVIEW parts={PARTS} frames={len(ledger.sent)} part_verdicts={len(parts)} lost={len(lost)} "
        f"dup={len(dup)} line_signals={len(out.outcomes)} rows={len(rows)} kill_at_s={killed_at:.1f} "
        f"of publish_s={publish_s:.1f} held_at_kill={len(held)} reclaimed_by_wb={len(reclaimed)} settled={settled} "
        f"reasons={dict(by_reason)} decisions={dict(Counter(p.decision.value for p in parts))}"
    )
    assert settled, workers[1].tail()
    assert not lost and not dup, f"lost {sorted(lost)[:3]}, duplicates {dup[:3]}"
    assert set(per_part) == expected
    assert len(out.outcomes) == PARTS and max(signals.values()) == 1, "one line signal per part"
    assert set(rows) == expected, "one part_verdicts row per part"
    assert held, "worker wa held no frames when it was killed: the kill proved nothing"
    assert len(reclaimed) == len(held), "the killed worker's frames were judged by the survivor"
    for p in parts:  # each part verdict follows from its views' frame verdicts
        views = {view: frames[r.frame_id] for view, r in p.views.items()}
        assert set(views) | set(p.missing) == set(VIEWS)
        decisions = {v.decision for v in views.values()}
        if Decision.FAIL in decisions:
            assert p.decision is Decision.FAIL and views[p.failed_view].decision is Decision.FAIL
        elif Decision.REVIEW in decisions:
            assert p.decision is Decision.REVIEW
        elif Decision.ERROR in decisions or p.missing:
            assert p.reject and p.decision is Decision.ERROR
        else:
            assert p.decision is Decision.PASS and (p.signal == "ACCEPT") == (p.reason == "pass")
        assert p.reject == (p.signal == "REJECT") and (p.signal == "ACCEPT") == (p.reason == "pass")
    rep = reconcile(redis_client, names, ledger, deadline_s=cfg.line.deadline_ms / 1000)
    assert rep.sent == 2 * PARTS and not rep.lost


def _spawn_line(config, logs, name: str) -> WorkerProc:  # type: ignore[no-untyped-def]
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    with open(log, "ab") as fh:
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = subprocess.Popen(
            [sys.executable, "-m", "inspector.cli", "line", "--config", str(config)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
        )
    return WorkerProc(name, proc, log)


def _line_group_ready(client, names: Names) -> bool:  # type: ignore[no-untyped-def]
    try:
        return any(g["name"] in (b"line", "line") for g in client.xinfo_groups(names.verdicts))
    except Exception:  # noqa: BLE001 - no stream yet
        return False


def test_kill_9_the_line_process_no_part_lost_or_doubled(redis_url, redis_client, tiny_package, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``inspector line`` SIGKILLed mid-run and started again: every part still gets exactly one part verdict
    (the new process replays what the dead one held; its done keys refuse a second verdict)."""
    parts_n = 300
    cfg = station(
        redis_url,
        tmp_path / "station",
        tiny_package,
        parts={"views": VIEWS},
        camera={"id": "top"},
        line={"deadline_ms": 4000},
    )
    names = Names(cfg.redis.prefix, cfg.station.id)
    config = write_config(cfg, tmp_path)
    StationBus(redis_client, cfg).ensure_group(names.frames, cfg.worker.group)
    logs = tmp_path / "logs"
    workers = [spawn_worker(config, "w1", logs, idle_exit=60)]
    lines = [_spawn_line(config, logs, "line-1")]
    cams = {"top": _camera(cfg, redis_client, "top", 0), "side": _camera(cfg, redis_client, "side", 3)}
    killed_at = decided_before = None
    try:
        assert wait_for(
            lambda: redis_client.keys(names.heartbeat_pattern) and _line_group_ready(redis_client, names), 90
        ), workers[0].tail() + lines[0].tail()
        t0 = time.monotonic()
        for n in range(parts_n):
            for view in VIEWS:
                cams[view].publish(cams[view].source.read())
            if n == parts_n // 2:
                os.kill(lines[0].proc.pid, signal.SIGKILL)
                lines[0].proc.wait(10)
                killed_at = time.monotonic() - t0
                decided_before = redis_client.xlen(names.parts)
                lines.append(_spawn_line(config, logs, "line-2"))
            delay = t0 + (n + 1) / 20.0 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        assert wait_settled(redis_client, cfg, timeout=90), workers[0].tail()
        assert wait_for(lambda: redis_client.xlen(names.parts) >= parts_n, 30), lines[-1].tail()
        time.sleep(1.0)  # anything doubled would show now
    finally:
        for p in lines:
            if p.proc.poll() is None:
                p.proc.terminate()
                p.proc.wait(10)
        stop_all(workers)
    parts = read_part_verdicts(redis_client, names)
    per_part = Counter(p.part_id for p in parts)
    expected = {part_id_of(n) for n in range(1, parts_n + 1)}
    lost, dup = expected - set(per_part), [p for p, k in per_part.items() if k > 1]
    print(
        f"MULTIVIEW_LINE_KILL parts={parts_n} part_verdicts={len(parts)} lost={len(lost)} dup={len(dup)} "
        f"line_killed_at_s={killed_at:.1f} decided_before_kill={decided_before} "
        f"reasons={dict(Counter(p.reason for p in parts))}"
    )
    assert not lost and not dup, f"lost {sorted(lost)[:3]}, duplicates {dup[:3]}"
    assert set(per_part) == expected
