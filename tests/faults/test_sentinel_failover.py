"""The Redis master is killed under load; Sentinel promotes the replica (issue 19 point 4, acceptance).

On 127.0.0.1 the test starts a Redis master, one replica and three Sentinels (tests/bus/sentinel_cluster.py),
a paced camera and two inspection workers, all connected through Sentinel (``redis.sentinel``), with
``WAIT`` for one replica on every verdict commit. The master is SIGKILLed mid-run; the sentinels elect the
replica; the killed host comes back as the new master's replica (so ``WAIT 1`` can be met again). Then:

- every frame has exactly one outcome (the battery's reconciliation, line replayed through the LineDecider);
- every verdict a worker was told was committed (``commit_verdicts`` returned, i.e. WAIT reached the replica)
  is on the new master, with the same verdict id: no acknowledged verdict is lost;
- the line rejected every part of the election (kill to promotion): none was accepted on a verdict committed
  before the new master answered (a part captured in its last half second may pass on the new master's PASS).

A frame whose publish the dead master acknowledged but had not yet replicated is gone with it (the camera's
publish does not WAIT): it has no verdict, so the line rejects that part; such frames are counted
(``lost_in_failover``) and allowed only within a second before the kill.

The line is the station's LineRunner (its own Sentinel client, a memory output), checked the same way: one
signal per part, ACCEPT only on a PASS, none in the election before the new master answered. The workers
are the station's Worker class, in threads of the test, so the test can keep the ledger of what
each was told was acknowledged; ``tests/bus/test_sentinel.py`` runs ``inspector worker`` as a process through
Sentinel. Figures printed: election time, time closed, parts rejected while closed, commit latency p50/p99
with and without WAIT.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import redis

from inspector.bus.connection import connect
from inspector.bus.streams import StationBus
from inspector.contracts.messages import Decision, Verdict
from inspector.contracts.names import Names
from inspector.line.outputs import MemoryOutput
from inspector.line.runner import LineRunner
from inspector.worker import Worker
from tests.bus.sentinel_cluster import SentinelCluster
from tests.faults.harness import Camera, frame_pool, station, wait_for, wait_settled
from tests.faults.reconcile import _line_accepts, read_verdict_entries, reconcile

pytestmark = pytest.mark.faults


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def commit_latency_ms(cfg, client, n: int = 1000) -> dict[int, tuple[float, float]]:  # type: ignore[no-untyped-def]
    """p50 and p99 of one-verdict commits (the worker's usual batch at line rate) without WAIT (0) and with
    WAIT 1 (1), alternated so that the machine's load weighs on both alike; on scratch stations."""
    buses = {}
    for w in (0, 1):
        st = cfg.station.model_copy(update={"id": f"lat{w}-{cfg.station.id}"})
        buses[w] = StationBus(
            client, cfg.model_copy(update={"station": st, "redis": cfg.redis.model_copy(update={"wait_replicas": w})})
        )
    out: dict[int, list[float]] = {0: [], 1: []}
    for i in range(2 * n):
        w = i % 2
        v = Verdict(
            station=buses[w].cfg.station.id,
            frame_id=f"lat-{i}",
            camera="c",
            seq=i,
            part_id=f"p{i}",
            captured_at=time.time(),
            decision=Decision.PASS,
            reject=False,
        )
        t0 = time.perf_counter()
        buses[w].commit_verdicts([(v, "")])
        out[w].append((time.perf_counter() - t0) * 1000)
    return {w: (_pct(x, 0.5), _pct(x, 0.99)) for w, x in out.items()}


class TrackedWorker:
    """The station's Worker on its own Sentinel client, in a thread; records each acknowledged verdict."""

    def __init__(self, cfg, name: str, acked: dict[str, tuple[str, float]], lock: threading.Lock) -> None:  # type: ignore[no-untyped-def]
        self.client = connect(cfg)
        self.worker = Worker(cfg, self.client, name=name)
        commit = self.worker.bus.commit_verdicts

        def tracked(items: list[tuple[Verdict, str]]) -> list[bool]:
            fresh = commit(items)  # raises when not acknowledged (NotReplicated, no master): nothing recorded
            now = time.time()
            with lock:
                for (v, _eid), new in zip(items, fresh, strict=True):
                    if new:
                        acked[v.frame_id] = (v.id, now)
            return fresh

        self.worker.bus.commit_verdicts = tracked  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self.worker.run, kwargs={"idle_exit_s": 120}, daemon=True)

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(30)
        self.client.close()


def _failover(tmp_path: Path, package: Path, wait_replicas: int, before_s: float, after_s: float, fps: float) -> None:
    cluster = SentinelCluster(tmp_path / "cluster").start()
    workers: list[TrackedWorker] = []
    cam: Camera | None = None
    line: LineRunner | None = None
    try:
        cfg = station(
            "",
            tmp_path / "st",
            package,
            redis={"url": None, **cluster.redis_section(wait_replicas=wait_replicas, wait_timeout_ms=250)},
        )
        client = connect(cfg)
        names = Names(cfg.redis.prefix, cfg.station.id)
        StationBus(client, cfg).ensure_group(names.frames, cfg.worker.group)
        lat = commit_latency_ms(cfg, client)
        lat_off, lat_on = lat[0], lat[1]

        acked: dict[str, tuple[str, float]] = {}
        lock = threading.Lock()
        workers = [TrackedWorker(cfg, f"w{i}", acked, lock) for i in range(2)]
        for w in workers:
            w.thread.start()
        # the station's line runner on its own Sentinel client (fast_client, as `inspector line` makes it)
        line_out = MemoryOutput()
        line = LineRunner(cfg, outputs=[line_out])
        line._ensure_groups()  # its groups start at "$": before the first frame
        line_thread = threading.Thread(target=line.run, daemon=True)
        line_thread.start()
        assert wait_for(lambda: len(client.keys(names.heartbeat_pattern)) >= 2, 60)
        cam = Camera(cfg, frame_pool(), fps, give_up_s=1.0)
        cam.start(duration_s=before_s + after_s)

        time.sleep(before_s)
        old = cluster.master_port()
        assert old is not None
        t_kill = time.time()
        cluster.kill(cluster.server_on(old))  # SIGKILL the master: nothing flushed, nothing handed over
        new = cluster.wait_promoted(old)
        t_elected = time.time()
        cluster.restart_as_replica(cluster.server_on(old), new)  # the killed host comes back as a replica
        cluster.wait_replicas(new, 1)
        t_replica = time.time()
        cam.join(before_s + after_s + 60)
        settled = wait_settled(client, cfg, timeout=60)
        time.sleep(cfg.line.deadline_ms / 1000 + 0.5)  # the line's last deadlines pass
        line_lag = _line_groups(client, names)
        line.stop()
        line_thread.join(10)
        for w in workers:
            w.stop()
        alive = [w.worker.name for w in workers if w.thread.is_alive()]

        # frames the dead master acknowledged to the camera but never replicated: gone with it
        on_new = {f.frame_id for f, _ in read_verdict_entries(client, names)}
        dead = {meta.id for meta in _dead_letter_metas(client, names)}
        gone = [m for m in cam.ledger.sent.values() if m.id not in on_new and m.id not in dead]
        assert all(t_kill - 1.0 <= m.captured_at <= t_kill + 0.1 for m in gone), (
            f"frames lost outside the kill: {[(m.id, round(m.captured_at - t_kill, 2)) for m in gone][:5]}; "
            f"failovers: {cluster.switches()} (more than 1: the sentinels failed the new master over again)"
        )
        for m in gone:  # no verdict: the line rejects the part (fail-safe); reconciled as not sent
            cam.ledger.not_sent[m.id] = cam.ledger.sent.pop(m.id)

        assert settled, "the inspection group did not drain after the failover"
        assert not alive, f"workers still running after stop: {alive}"
        rep = reconcile(client, names, cam.ledger, deadline_s=cfg.line.deadline_ms / 1000)
        entries = read_verdict_entries(client, names)
        by_frame = {v.frame_id: v.id for v, _ in entries}
        lost_acked = [f for f, (vid, _t) in acked.items() if by_frame.get(f) != vid]
        first_ack_after = min((t for _vid, t in acked.values() if t > t_elected), default=float("nan"))
        closed = (t_kill, first_ack_after)
        accepted = _line_accepts(entries, cam.ledger.sent, cfg.line.deadline_ms / 1000)
        parts = [*cam.ledger.sent.values(), *cam.ledger.not_sent.values()]
        in_window = [m for m in parts if closed[0] <= m.captured_at <= closed[1]]
        accepted_in_window = [m.id for m in in_window if m.id in accepted]
        in_election = [m for m in parts if t_kill <= m.captured_at <= t_elected]
        committed_at = {v.frame_id: t for v, t in entries}
        # a part captured in the election's last moment may pass on a PASS the new master committed in time;
        # every other part of the election must be rejected: nothing passes while no master answers
        passed_blind = [m.id for m in in_election if m.id in accepted and committed_at[m.id] < t_elected]
        # the real line runner: one signal per part it saw, ACCEPT only on a PASS, none blind in the election
        signals: dict[str, list[str]] = {}
        for o in line_out.outcomes:
            signals.setdefault(o.part.frame_id, []).append(o.signal.value)
        line_accepted = {f for f, sig in signals.items() if sig == ["ACCEPT"]}
        passes = {v.frame_id for v, _ in entries if v.decision is Decision.PASS}
        by_decision = {v.frame_id: v.decision.value for v, _ in entries}
        line_blind = [m.id for m in in_election if m.id in line_accepted and committed_at.get(m.id, 0) < t_elected]
        hist = line_out.ready_history

        def ready_at(t: float) -> bool:
            before = [r for when, r, _why in hist if when <= t]
            return bool(before and before[-1])

        down = t_kill if not ready_at(t_kill) else next((t for t, r, _w in hist if not r and t >= t_kill), float("nan"))
        back = next((t for t, r, _w in hist if r and t > down), float("nan"))
        ready_in_election = [round(t - t_kill, 2) for t, r, _w in hist if r and down < t < t_elected]
        print(
            f"SENTINEL_LINE ready_down_after_s={down - t_kill:.2f} ready_again_after_s={back - t_kill:.2f} "
            f"parts={len(signals)} accept={line.counts['accept']} reject={line.counts['reject']} "
            f"election_parts_seen={sum(m.id in signals for m in in_election)} "
            f"election_rejected={sum(signals.get(m.id) == ['REJECT'] for m in in_election)}"
        )
        print(
            f"SENTINEL_FAILOVER wait_replicas={wait_replicas} election_s={t_elected - t_kill:.2f} "
            f"replica_back_s={t_replica - t_kill:.2f} parts_in_election={len(in_election)} "
            f"rejected_in_election={sum(m.id not in accepted for m in in_election)} "
            f"closed_s={closed[1] - closed[0]:.2f} parts_while_closed={len(in_window)} "
            f"rejected_while_closed={len(in_window) - len(accepted_in_window)} "
            f"sent={rep.sent} not_sent={rep.not_sent} lost_in_failover={len(gone)} verdicts={rep.verdicts} "
            f"acked={len(acked)} acked_lost={len(lost_acked)} accepted={rep.accepted} rejected={rep.rejected} "
            f"commit_ms_p50/p99 wait0={lat_off[0]:.2f}/{lat_off[1]:.2f} wait1={lat_on[0]:.2f}/{lat_on[1]:.2f}"
        )
        assert len(in_election) >= fps, "under a second of parts in the election: the fault was not injected"
        assert not passed_blind, f"the line accepted parts while no master answered: {passed_blind[:3]}"
        late = max(t_elected - t_kill - cfg.line.deadline_ms / 1000, 0)  # no verdict can be in time for these
        assert all(m.id not in accepted for m in in_election if m.captured_at <= t_kill + late), (
            "the line accepted a part captured with no master to commit its verdict in time"
        )
        assert rep.accepted > 0, "the line accepted nothing: the station never ran"
        assert all(len(sig) == 1 for sig in signals.values()), "the line runner signalled a part twice"
        missed = set(cam.ledger.sent) - {m.id for m in gone} - set(signals)
        assert not missed, (
            "the line runner missed parts sent: "
            + str(
                [
                    (
                        round(cam.ledger.sent[f].captured_at - t_kill, 2),
                        round(committed_at.get(f, float("nan")) - t_kill, 2),
                        by_decision.get(f),
                    )
                    for f in sorted(missed, key=lambda f: cam.ledger.sent[f].captured_at)
                ][:8]
            )
            + f" (captured, committed s after the kill; decision); line groups at stop: {line_lag}"
        )
        assert line_accepted <= passes, "the line runner accepted a part without a PASS verdict"
        assert not line_blind, f"the line runner accepted parts while no master answered: {line_blind[:3]}"
        assert line.counts["accept"] > 0
        assert down - t_kill <= 1.5 and not ready_in_election, (
            f"the line was ready with no master: {[(round(t - t_kill, 2), r, w) for t, r, w in hist]}"
        )
        assert back == back, "the line never became ready again after the failover"
        assert first_ack_after == first_ack_after, (
            "no verdict acknowledged after the election: the station never resumed"
        )
        if wait_replicas:
            assert not lost_acked, f"{len(lost_acked)} acknowledged verdicts lost in the failover: {lost_acked[:3]}"
        client.close()
    finally:
        if cam is not None:
            cam.stop()
        if line is not None:
            line.stop()
        for w in workers:
            if w.thread.is_alive():
                w.worker.stop()
                w.thread.join(10)
        cluster.stop()


def _line_groups(client: redis.Redis, names: Names) -> dict[str, tuple[int, str, str]]:
    """The line group's pending count, last delivered id and the stream's last id, per stream."""
    out = {}
    for stream in (names.frames, names.verdicts):
        g = {x["name"]: x for x in client.xinfo_groups(stream)}.get(names.line_group.encode(), {})
        last = client.xinfo_stream(stream)["last-generated-id"]
        out[stream.rsplit(":", 1)[-1]] = (g.get("pending", -1), str(g.get("last-delivered-id")), str(last))
    return out


def _dead_letter_metas(client, names: Names):  # type: ignore[no-untyped-def]
    from inspector.bus.streams import decode_message

    for _eid, fields in client.xrange(names.dead_letter):
        try:
            yield decode_message(fields.get(b"m"))
        except Exception:  # noqa: BLE001, S112 - unreadable dead letters have no frame id
            continue


def test_master_killed_sentinel_promotes_replica_with_wait(tmp_path: Path, tiny_package: Path) -> None:
    _failover(tmp_path, tiny_package, wait_replicas=1, before_s=5, after_s=10, fps=20)


@pytest.mark.slow
def test_master_killed_sentinel_promotes_replica_without_wait(tmp_path: Path, tiny_package: Path) -> None:
    """The same without WAIT: the station resumes as soon as the replica is promoted; a verdict acknowledged in
    the last moment before the kill may be missing (printed as acked_lost, not asserted: replication on
    127.0.0.1 usually wins the race)."""
    _failover(tmp_path, tiny_package, wait_replicas=0, before_s=5, after_s=10, fps=20)
