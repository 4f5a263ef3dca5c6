"""Acceptance of the learning loop at the PRODUCTION gate defaults: real Redis, real RQ worker, real inspection
workers, magnetic_tile images. Only ``jobs.base_data`` is set; every gate, threshold and timeout is the default.

commission (held-out set frozen by `trainer heldout freeze`; the first model, a combined package, built by the
trainer, gated, approved by quality, promoted by maintenance through the CLI)
-> steady production raises no alarm -> the lighting changes (brightness x 0.7) -> a quality engineer labels
the queued frames of the new lighting (half of the test defects, the half outside the held-out set, and good
parts) -> drift alarms reach the retrain trigger as events -> exactly one RQ job -> its candidate is a combined
package (classifier kept) that passes `trainer checklist` with its INT8 item evaluated -> its gate passes ->
`inspector jobs approve` + `promote` -> two workers hot-swap with 0 ERROR verdicts and 0 lost frames.
In the same test a degraded candidate (trained on shuffled labels) is refused by `inspector jobs promote`
with exit status 3, and the refusal is a row of `inspector audit show`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from rq.job import Job

from inspector.bus.streams import StationBus
from inspector.contracts.config import StationConfig
from inspector.contracts.lifecycle import ModelStatus
from inspector.contracts.messages import Decision, FrameMeta, ImageStats, Verdict
from inspector.drift.monitor import DriftMonitor
from inspector.evaluation import Scored, score_frames
from inspector.models.decode import encode_image
from inspector.runtime.package import load_package
from inspector.store.db import open_store
from inspector.store.records import active_model
from jobs import registry
from jobs.queues import SERIALIZER, JobKeys, names_of
from jobs.trigger import RetrainTrigger
from tests.spine_helpers import label_frames, read_verdicts
from trainer import retrain
from trainer.heldout import base_training_items, load_heldout_set, load_images

pytestmark = [
    pytest.mark.data,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("INSPECTOR_SLOW") != "1",
        reason="the learning-loop acceptance takes 13 min on 2 cores (three real trainings): "
        "run it with INSPECTOR_SLOW=1",
    ),
]


@pytest.fixture
def redis_url(embedded_redis) -> str:  # type: ignore[no-untyped-def]
    """One Redis for this long acceptance (the station's default, the embedded one): the Redis-facing paths are
    proven on both backends by the rest of the suite; three real trainings twice would double CI's time."""
    return embedded_redis.url


DARK = 0.7
JOB_WAIT_S = 1500


def _dark(img: np.ndarray) -> np.ndarray:
    return np.clip(img.astype(np.float32) * DARK, 0, 255).astype(np.uint8)


def _env() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "220"}


def _cli(module: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout, env=_env()
    )


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", *args], stdout=log.open("wb"), stderr=subprocess.STDOUT, env=_env())


def _verdicts(cfg: StationConfig, version: str, scored: Scored, order: np.ndarray, seq0: int) -> list[Verdict]:
    out = []
    for k, i in enumerate(order):
        d = Decision(scored.decisions[i])
        out.append(
            Verdict(
                station=cfg.station.id,
                frame_id=f"v{seq0 + k}",
                camera="cam0",
                seq=seq0 + k,
                part_id=f"p{seq0 + k}",
                captured_at=time.time(),
                decision=d,
                reject=d is not Decision.PASS,
                class_probs=scored.class_probs[i],
                anomaly_score=scored.anomaly_scores[i],
                model_version=version,
                image_stats=ImageStats(**scored.stats[i].model_dump()),
            )
        )
    return out


def _feed(client, bus: StationBus, mon: DriftMonitor, trigger: RetrainTrigger, verdicts: list[Verdict]) -> None:  # type: ignore[no-untyped-def]
    """Verdicts onto the stream, the monitor reads them all, the trigger reads every event."""
    pipe = client.pipeline(transaction=False)
    for v in verdicts:
        pipe.xadd(bus.names.verdicts, {b"m": v.to_json()})
    pipe.execute()
    last = client.xinfo_stream(bus.names.verdicts)["last-generated-id"]
    while True:
        mon.step(block_ms=None)
        groups = {g["name"]: g for g in client.xinfo_groups(bus.names.verdicts)}
        if groups[bus.names.drift_group.encode()]["last-delivered-id"] == last:
            break
    trigger.step(block_ms=None)


def _workers_on(client, bus: StationBus, version: str, n: int) -> bool:  # type: ignore[no-untyped-def]
    beats = [client.get(k) for k in client.scan_iter(bus.names.heartbeat_pattern)]
    versions = [json.loads(b)["model_version"] for b in beats if b]
    return len(versions) >= n and all(v == version for v in versions)


def _publish(bus: StationBus, frames: list[bytes], seq: int) -> FrameMeta:
    meta = FrameMeta(
        station=bus.cfg.station.id, camera="cam0", seq=seq, part_id=f"s{seq}", captured_at=time.time(), encoding="jpeg"
    )
    bus.publish_frame(meta, frames[seq % len(frames)])
    return meta


def _shuffled_candidate(cfg: StationConfig, store, incumbent) -> dict:  # type: ignore[no-untyped-def,type-arg]
    """A degraded candidate: the same retraining with the training labels shuffled among the frames."""
    stage = retrain.staging_dir(cfg, "shuffled0")
    retrain.snapshot(cfg, store, stage, float(incumbent.promoted_at or 0.0), condition_changed=True)
    snap_file = stage / "work" / retrain.SNAPSHOT_FILE
    snap = json.loads(snap_file.read_text())
    labels = [i["label"] for i in snap["train"]]
    rng = np.random.default_rng(1)
    for item, label in zip(snap["train"], rng.permutation(labels), strict=True):
        item["label"] = str(label)
    snap["scorer_goods"] = [i["sha256"] for i in snap["train"] if i["label"] == "good"]
    snap_file.write_text(json.dumps(snap))
    retrain.train(cfg, stage, incumbent.package_path)
    retrain.evaluate(cfg, stage, incumbent.package_path, incumbent.version)
    pkg = retrain.package(cfg, stage, "shuffled0", "degraded on purpose: shuffled labels")
    status = registry.register_candidate(
        store, pkg["version"], pkg["path"], pkg["sha256"], retrain.gate_of(pkg["path"]), "test"
    )
    return {**pkg, "status": status}


@pytest.mark.timeout(3600)  # the test harness limit: three real trainings on 2 cores
def test_learning_loop_at_production_gate_defaults(station_config, redis_client, magnetic_tile, tmp_path) -> None:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    cfg = station_config.model_copy(deep=True)
    cfg.jobs = cfg.jobs.model_copy(update={"base_data": magnetic_tile})  # everything else: the defaults
    cfg_file = tmp_path / "station.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    conf = ["--config", str(cfg_file)]
    store = open_store(cfg)
    bus = StationBus(redis_client, cfg)

    # -- commissioning: the held-out set, the first model (combined), its gate, approval, promotion ------------
    out = _cli("trainer.cli", "heldout", "freeze", *conf)
    assert out.returncode == 0, out.stdout + out.stderr
    held = load_heldout_set(cfg.data_dir)
    first = retrain.build_candidate(cfg, store, "commission0", reason="commissioning")["package"]
    print("\n".join(r.line() for r in retrain.gate_of(first["path"]).rows))
    assert first["task"] == "combined", first
    registry.register_candidate(
        store, first["version"], first["path"], first["sha256"], retrain.gate_of(first["path"]), "commissioning"
    )
    assert _cli("jobs.cli", "approve", first["version"], "--role", "quality", *conf).returncode == 0
    out = _cli("jobs.cli", "promote", first["version"], "--role", "maintenance", *conf)
    assert out.returncode == 0, out.stderr
    v1, v1_path = first["version"], first["path"]
    print(f"\n[t] commissioned {v1} in {time.perf_counter() - t0:.0f} s")

    # -- steady production: no alarm -------------------------------------------------------------------------
    train_goods = [i for i in base_training_items(magnetic_tile, held) if i.label == "good"]
    goods = load_images(train_goods[::2])
    scored_good = score_frames(v1_path, goods, cfg)
    mon = DriftMonitor(cfg, redis_client, store)
    trigger = RetrainTrigger(cfg, redis_client, "trigger-test")
    rng = np.random.default_rng(0)
    steady = _verdicts(cfg, v1, scored_good, rng.permutation(len(goods)), 0)
    _feed(redis_client, bus, mon, trigger, steady)
    assert mon.alarms == [], [a.as_dict() for a in mon.alarms]

    # -- the lighting changes; the quality engineer labels the new lighting's queued frames -------------------
    items = [i for i in base_training_items(magnetic_tile, held) if i.label != "good"]
    defects = [(_dark(img), i.label) for i, img in zip(items, load_images(items), strict=True)]
    dark_goods = [_dark(img) for img in load_images(train_goods[1::2])]
    label_frames(
        cfg,
        store,
        [(encode_image(img, "jpeg", 92), label) for img, label in [(g, "good") for g in dark_goods[:150]] + defects],
        ext="jpg",
        user="quality-1",
    )
    n_labelled_defects = len(defects)
    assert not {i.sha256 for i in items} & held.hashes, "labels come from the half outside the held-out set"

    dark_stream = dark_goods[150:] + dark_goods[:150]
    scored_dark = score_frames(v1_path, dark_stream, cfg)
    changed = _verdicts(cfg, v1, scored_dark, np.arange(len(dark_stream)), len(steady))
    first_alarm_at = None
    for start in range(0, len(changed), 10):
        _feed(redis_client, bus, mon, trigger, changed[start : start + 10])
        if first_alarm_at is None and mon.alarms:
            first_alarm_at = start + 10
    history = [j.decode() for j in redis_client.lrange(JobKeys(names_of(cfg)).history, 0, -1)]
    print(f"[drift] alarm after {first_alarm_at} changed frames; {len(mon.alarms)} alarms -> {len(history)} job(s)")
    assert first_alarm_at is not None
    assert len(history) == 1, f"{len(mon.alarms)} alarms started {len(history)} jobs"
    job_id = history[0]

    # -- workers serve v1 on the new lighting while the RQ worker retrains -------------------------------------
    frames = [encode_image(img, "jpeg", 90) for img in dark_stream[:40]]
    workers = [
        _spawn(
            ["inspector.cli", "worker", *conf, "--name", f"w{k}", "--no-record", "--no-review"], tmp_path / f"w{k}.log"
        )
        for k in range(2)
    ]
    rq_worker = _spawn(["jobs.cli", "worker", *conf, "--burst"], tmp_path / "rq.log")
    published: list[FrameMeta] = []
    try:
        deadline = time.monotonic() + JOB_WAIT_S
        job = Job.fetch(job_id, connection=redis_client, serializer=SERIALIZER)
        while time.monotonic() < deadline and job.get_status().value not in ("finished", "failed"):
            published.append(_publish(bus, frames, len(published)))
            time.sleep(0.5)
            job = Job.fetch(job_id, connection=redis_client, serializer=SERIALIZER)
        assert job.get_status().value == "finished", (tmp_path / "rq.log").read_text()[-4000:]
        result = job.return_value()
        v2, v2_path = result["version"], result["path"]
        print(f"[job] {time.perf_counter() - t0:.0f} s: {result}")
        print("[job] steps:", {k: v.get("seconds") for k, v in job.meta["steps"].items()})

        # the candidate is the same kind (classifier kept), passes the checklist with INT8 evaluated
        manifest = load_package(v2_path).manifest
        assert manifest.task == "combined" and manifest.model.outputs.class_probs and manifest.class_names
        assert set(manifest.class_names) - {"good"}, "the retrained model lost its classifier"
        gate = manifest.gate
        assert gate is not None and gate.passed, "\n".join(r.line() for r in (gate.failed if gate else []))
        assert registry.get_version(store, v2).status == ModelStatus.GATED_PASS
        assert active_model(store).version == v1, "auto_promote is off by default: it waits for approval"
        shown = _cli("jobs.cli", "gate", v2, *conf)
        print(shown.stdout)

        # approve (quality) and promote (maintenance) through the CLI; workers swap
        assert _cli("jobs.cli", "approve", v2, "--role", "quality", *conf).returncode == 0
        out = _cli("jobs.cli", "promote", v2, "--role", "maintenance", *conf)
        assert out.returncode == 0, out.stderr
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _workers_on(redis_client, bus, v2, 2):
            published.append(_publish(bus, frames, len(published)))
            time.sleep(0.1)
        assert _workers_on(redis_client, bus, v2, 2)
        for _ in range(20):
            published.append(_publish(bus, frames, len(published)))
            time.sleep(0.05)
        ids = {m.id for m in published}
        deadline = time.monotonic() + 120
        live: list[Verdict] = []
        while time.monotonic() < deadline:
            live = [v for v in read_verdicts(redis_client, bus) if v.frame_id in ids]
            if len(live) >= len(ids):
                break
            time.sleep(0.2)
        assert {v.frame_id for v in live} == ids, f"{len(ids) - len(live)} frames lost"
        assert len(live) == len(ids), "duplicate verdicts"
        errors = [v for v in live if v.decision is Decision.ERROR]
        assert not errors, f"{len(errors)} ERROR verdicts: {errors[0].error}"
        assert {v.model_version for v in live} == {v1, v2}
    finally:
        for p in [*workers, rq_worker]:
            if p.poll() is None:
                p.terminate()
                p.wait(30)

    # -- the candidate passes `trainer checklist` (measured with the line's workers stopped: a benchmark on
    #    a machine busy with other work measures the other work), its INT8 item evaluated, not skipped ---------
    out = _cli("trainer.cli", "checklist", v2_path, "--json")
    report = json.loads(out.stdout)
    print({k: (v["passed"], v["figure"]) for k, v in report["items"].items()})
    failed = sorted(k for k, v in report["items"].items() if not v["passed"])
    print(f"[checklist] latency: {report['items']['latency']['figure']}")
    assert failed == [], failed  # every item, latency included (the fused package's 25 ms target)
    int8 = report["items"]["int8"]
    assert int8["passed"] and "never evaluated" not in int8["figure"], int8

    # -- a degraded candidate is refused by `inspector jobs promote` with exit status 3, and audited -----------
    bad = _shuffled_candidate(cfg, store, active_model(store))
    assert bad["status"] == ModelStatus.GATED_FAIL
    out = _cli("jobs.cli", "promote", bad["version"], "--role", "maintenance", *conf)
    assert out.returncode == 3, out.stdout + out.stderr
    assert "FAIL" in out.stderr
    print(out.stderr)
    shown = _cli("inspector.cli", "audit", "show", "--limit", "30", *conf)
    assert shown.returncode == 0 and "model.promote_refused" in shown.stdout
    assert active_model(store).version == v2

    # -- rollback through the CLI restores v1; v2 is marked rolled back --------------------------------------
    out = _cli("jobs.cli", "rollback", cfg.station.id, "--role", "maintenance", "--reason", "scenario", *conf)
    assert out.returncode == 0, out.stderr
    assert active_model(store).version == v1
    assert registry.get_version(store, v2).status == ModelStatus.ROLLED_BACK
    assert redis_client.hget(bus.names.active_model, "version").decode() == v1
    assert store.audit.verify().ok
    print(
        f"[loop] labelled defects {n_labelled_defects}, jobs {len(history)}, v1 {v1} -> v2 {v2}, "
        f"live frames {len(live)}, {time.perf_counter() - t0:.0f} s"
    )
    store.close()
