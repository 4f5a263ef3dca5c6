"""Acceptance scenario on a real Redis, real RQ and inspection worker processes, and magnetic_tile images.

steady state (>= 2,000 good frames, no alarm) -> lighting change (brightness x 0.7) -> drift alarm ->
repeated alarms start exactly one retraining job (RQ worker subprocess, JSON serializer) -> it trains,
evaluates and promotes -> two inspection workers hot-swap with zero failed and zero untagged verdicts ->
rollback restores the previous version -> the audit trail shows each step.

Speed: the drift part feeds verdicts (computed once per image with the real package) through the verdicts
stream into the DriftMonitor; the swap part runs real worker processes on real frames.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from rq.job import Job

from inspector.archive import Archive
from inspector.bus.streams import StationBus
from inspector.contracts.config import StationConfig
from inspector.contracts.messages import Decision, FrameMeta, ImageStats, ReviewRequest, Verdict
from inspector.drift.monitor import DriftMonitor
from inspector.evaluation import Scored
from inspector.evaluation import score_frames as score_package
from inspector.models.decode import encode_image
from inspector.review.labelling import LabellingService
from inspector.store.db import open_store
from inspector.store.records import add_review_item
from jobs import registry
from jobs.queues import SERIALIZER
from jobs.trigger import retrain_on_drift
from tests.spine_helpers import read_verdicts
from trainer import retrain
from trainer.heldout import load_rgb

pytestmark = pytest.mark.data
DARK = 0.7


def _dark(img: np.ndarray) -> np.ndarray:
    return np.clip(img.astype(np.float32) * DARK, 0, 255).astype(np.uint8)


def _config(station_config: StationConfig, data: Path) -> StationConfig:
    cfg = station_config.model_copy(deep=True)
    cfg.jobs = cfg.jobs.model_copy(update=dict(
        base_data=data, train_images=60, heldout_limit=80, anomaly_image_size=160, auto_promote=True, recall_floor=0.0, regression_tolerance=0.1,
        false_reject_ceiling=0.2, min_gate_frames=10, retries=1, retrain_dedupe_s=120, job_timeout_s=300))
    cfg.drift = cfg.drift.model_copy(update=dict(window=100, check_every=10, hysteresis=3, cooldown_s=0))
    cfg.worker = cfg.worker.model_copy(update=dict(reload_poll_s=0.2, expire_ms=30_000, max_batch=8))
    cfg.policy = cfg.policy.model_copy(update=dict(anomaly_review_margin=0.05))
    return cfg


def _drain(mon: DriftMonitor, client, bus: StationBus) -> None:  # type: ignore[no-untyped-def]
    """Feed the monitor until it has read every verdict on the stream."""
    last = client.xinfo_stream(bus.names.verdicts)["last-generated-id"]
    while True:
        mon.step(block_ms=None)
        groups = {g["name"]: g for g in client.xinfo_groups(bus.names.verdicts)}
        if groups[bus.names.drift_group.encode()]["last-delivered-id"] == last:
            return


def _write_yaml(cfg: StationConfig, folder: Path) -> Path:
    f = folder / "station.yaml"
    f.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return f


def _first_package(cfg: StationConfig, client, store) -> str:  # type: ignore[no-untyped-def]
    """v1: the station's first model through the trainer's own retraining (no incumbent, no labels yet:
    train/good + the non-held-out half of the test defects), registered with its gate and promoted."""
    out = retrain.build_candidate(cfg, store, "initial0", reason="first model")
    pkg = out["package"]
    gate = retrain.gate_of(pkg["path"])
    registry.register_candidate(store, pkg["version"], pkg["path"], pkg["sha256"], gate, "test")
    return registry.promote(cfg, client, store, pkg["version"], "test", force=not (gate and gate.passed),
                            reason="first model of the station")


def _base_goods(data: Path) -> list:  # type: ignore[type-arg]
    return sorted((data / "train" / "good").glob("*.jpg"))


def _verdicts(cfg: StationConfig, version: str, scored: Scored, order: np.ndarray, seq0: int) -> list[Verdict]:
    out = []
    for k, i in enumerate(order):
        d = Decision(scored.decisions[i])
        out.append(Verdict(station=cfg.station.id, frame_id=f"v{seq0 + k}", camera="cam0", seq=seq0 + k,
                           part_id=f"p{seq0 + k}", captured_at=time.time(), decision=d, reject=d is not Decision.PASS,
                           class_probs=scored.class_probs[i], anomaly_score=scored.anomaly_scores[i],
                           model_version=version, image_stats=ImageStats(**scored.stats[i].model_dump())))
    return out


def _label_recent(cfg: StationConfig, store, goods: list[np.ndarray], defects: list[tuple[np.ndarray, str]]) -> None:  # type: ignore[no-untyped-def]
    """Reviewers label frames taken under the new lighting (archived images + review items + labels)."""
    archive = Archive.for_data_dir(cfg.data_dir)
    svc = LabellingService(store, archive)
    for k, (img, label) in enumerate([(g, "good") for g in goods] + defects):
        sha = archive.put(encode_image(img, "png"), "png")
        add_review_item(store, ReviewRequest(station=cfg.station.id, frame_id=f"lab{k}", part_id=f"lab{k}",
                                             camera="cam0", reasons=["test"], priority=1, image_sha256=sha,
                                             decision=Decision.FAIL), image_ext="png")
        item = svc.lease_next("reviewer")
        assert item is not None
        svc.label(item.id, "reviewer", label)


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", *args], stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _publish(bus: StationBus, frames: list[bytes], seq: int) -> FrameMeta:
    meta = FrameMeta(station=bus.cfg.station.id, camera="cam0", seq=seq, part_id=f"s{seq}", captured_at=time.time(),
                     encoding="jpeg", truth="good")
    bus.publish_frame(meta, frames[seq % len(frames)])
    return meta


def _workers_on(client, bus: StationBus, version: str, n: int) -> bool:  # type: ignore[no-untyped-def]
    beats = [client.get(k) for k in client.scan_iter(bus.names.heartbeat_pattern)]
    versions = [json.loads(b)["model_version"] for b in beats if b]
    return len(versions) >= n and all(v == version for v in versions)


def test_drift_alarm_retrains_promotes_swaps_and_rolls_back(station_config, redis_client, magnetic_tile, tmp_path) -> None:  # type: ignore[no-untyped-def]
    t_start = time.perf_counter()
    cfg = _config(station_config, magnetic_tile)
    config_file = _write_yaml(cfg, tmp_path)
    store = open_store(cfg)
    bus = StationBus(redis_client, cfg)
    v1 = _first_package(cfg, redis_client, store)
    v1_path = Path(redis_client.hget(bus.names.active_model, "path").decode())

    # -- steady state: >= 2,000 good frames (train/good replayed, shuffled, 3 passes) raise no alarm --------
    good_imgs = [load_rgb(p) for p in _base_goods(magnetic_tile)]
    scored_good = score_package(v1_path, good_imgs, cfg)
    mon = DriftMonitor(cfg, redis_client, store, on_alarm=retrain_on_drift(cfg, redis_client))
    rng = np.random.default_rng(0)
    order = np.concatenate([rng.permutation(len(good_imgs)) for _ in range(3)])
    steady = _verdicts(cfg, v1, scored_good, order, 0)
    assert len(steady) >= 2000
    pipe = redis_client.pipeline(transaction=False)
    for v in steady:
        pipe.xadd(bus.names.verdicts, {b"m": v.to_json()})
    pipe.execute()
    _drain(mon, redis_client, bus)
    false_alarms = len(mon.alarms)
    for a in mon.alarms:
        print(f"[drift] steady-state alarm: {a.statistic}={a.value:.3g} (threshold {a.threshold:.3g}) {a.details}")
    print(f"\n[t] steady done {time.perf_counter() - t_start:.1f}s")

    # -- reviewers label frames under the new lighting (these feed the retraining) ------------------------
    rest = [load_rgb(p) for p in sorted((magnetic_tile / "test").glob("*/*.jpg"))[1::2]]
    defect_paths = [p for p in sorted((magnetic_tile / "test").iterdir()) if p.name != "good"]
    defects = [(_dark(load_rgb(p)), d.name) for d in defect_paths for p in sorted(d.glob("*.jpg"))[1::2][:6]]
    _label_recent(cfg, store, [_dark(img) for img in good_imgs[::5][:130]], defects)
    del rest
    print(f"[t] labelled {time.perf_counter() - t_start:.1f}s")

    # -- lighting change: brightness x 0.7 -> alarm within 150 frames; repeats start exactly one job ------
    dark_imgs = [_dark(good_imgs[i]) for i in rng.permutation(len(good_imgs))[:400]]
    scored_dark = score_package(v1_path, dark_imgs, cfg)
    changed = _verdicts(cfg, v1, scored_dark, np.arange(len(dark_imgs)), len(steady))
    first_alarm_at = None
    for start in range(0, len(changed), 10):
        for v in changed[start:start + 10]:
            redis_client.xadd(bus.names.verdicts, {b"m": v.to_json()})
        _drain(mon, redis_client, bus)
        if first_alarm_at is None and len(mon.alarms) > false_alarms:
            first_alarm_at = min(start + 10, len(changed))  # changed frames fed when the first alarm rose
    alarms_after = len(mon.alarms) - false_alarms
    print(f"\n[drift] first alarm: {mon.alarms[false_alarms].statistic if alarms_after else None}, "
          f"skipped: {dict(mon.skipped)}")
    print(f"[drift] steady frames={len(steady)} false_alarms={false_alarms} "
          f"detection_delay_frames={first_alarm_at} alarms_after_change={alarms_after}")
    assert false_alarms == 0
    assert first_alarm_at is not None and first_alarm_at <= 150
    assert alarms_after >= 5
    history = [j.decode() for j in redis_client.lrange(f"{bus.names.base}:retrain:history", 0, -1)]
    assert len(history) == 1, f"{alarms_after} alarms started {len(history)} jobs"
    job_id = history[0]
    print(f"[t] drift done {time.perf_counter() - t_start:.1f}s")

    # -- real inspection workers serve v1 on dark frames while the job runs -------------------------------
    frames = [encode_image(img, "jpeg", 90) for img in dark_imgs[:40]]
    workers = [_spawn(["inspector.cli", "worker", "--config", str(config_file), "--name", f"w{k}", "--no-record"],
                      tmp_path / f"w{k}.log") for k in range(2)]
    rq_worker = _spawn(["jobs.cli", "worker", "--config", str(config_file), "--burst"], tmp_path / "rq.log")
    published: list[FrameMeta] = []
    try:
        deadline = time.monotonic() + 240
        v2 = None
        while time.monotonic() < deadline:
            published.append(_publish(bus, frames, len(published)))
            time.sleep(0.04)
            job = Job.fetch(job_id, connection=redis_client, serializer=SERIALIZER)
            if v2 is None and job.get_status().value in ("finished", "failed"):
                assert job.get_status().value == "finished", (tmp_path / "rq.log").read_text()[-3000:]
                v2 = job.return_value()["version"]
                if not job.return_value()["promoted"]:
                    break
            if v2 and _workers_on(redis_client, bus, v2, 2):
                break
        assert v2 is not None, f"job did not finish: {job.meta}"
        print(f"[job] {time.perf_counter() - t_start:.1f}s steps:", {k: v.get("seconds") for k, v in job.meta["steps"].items()})
        print("[job] register:", job.meta["steps"]["register"].get("info"))
        assert job.return_value()["promoted"], job.return_value()
        for _ in range(25):  # a few more frames on the new version
            published.append(_publish(bus, frames, len(published)))
            time.sleep(0.04)
        verdicts = _wait_verdicts(redis_client, bus, len(steady) + len(changed) + len(published))
        live = [v for v in verdicts if v.frame_id in {m.id for m in published}]
        assert {v.frame_id for v in live} == {m.id for m in published}, "frames lost during the swap"
        assert not [v for v in live if v.decision is Decision.ERROR], "failed verdicts during the swap"
        assert all(v.model_version in (v1, v2) for v in live), "untagged verdicts"
        assert {v.model_version for v in live} == {v1, v2}
        print(f"[swap] live frames={len(live)} on v1={sum(v.model_version == v1 for v in live)} "
              f"on v2={sum(v.model_version == v2 for v in live)} errors=0 job steps={job.meta['steps'].keys()}")

        # -- rollback through the CLI restores v1; workers follow -----------------------------------------
        out = subprocess.run([sys.executable, "-m", "jobs.cli", "rollback", cfg.station.id, "--config", str(config_file),
                              "--reason", "scenario"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert redis_client.hget(bus.names.active_model, "version").decode() == v1
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _workers_on(redis_client, bus, v1, 2):
            published.append(_publish(bus, frames, len(published)))
            time.sleep(0.05)
        assert _workers_on(redis_client, bus, v1, 2)
    finally:
        for p in [*workers, rq_worker]:
            if p.poll() is None:
                p.terminate()
                p.wait(20)

    actions = [e.action for e in reversed(store.audit.entries(limit=200))]
    for needed in ("drift.alarm", "retrain.started", "retrain.snapshot", "retrain.train", "retrain.evaluate",
                   "retrain.package", "model.register", "retrain.register", "retrain.promote",
                   "model.promote", "model.rollback"):
        assert needed in actions, f"audit trail lacks {needed}: {actions}"
    assert store.audit.verify().ok
    store.close()
    print(f"[scenario] {time.perf_counter() - t_start:.1f} s")


def _wait_verdicts(client, bus: StationBus, n: int, timeout: float = 60) -> list[Verdict]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and client.xlen(bus.names.verdicts) < n:
        time.sleep(0.1)
    return read_verdicts(client, bus)
