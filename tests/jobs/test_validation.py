"""Periodic validation on a real Redis, a real store and a real (tiny) package with recorded held-out figures.

The package is built once per module from synthetic parts; its manifest gets ``line_metrics["heldout"]``
measured with ``score_frames`` on the frozen held-out selection of a synthetic anomaly-layout folder, as the
trainer records it at build time.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from inspector.camera.synthetic import PartFactory
from inspector.contracts.config import StationConfig, parse_config
from inspector.contracts.lifecycle import ModelStatus
from inspector.contracts.names import Names
from inspector.drift.monitor import load_reference
from inspector.evaluation import line_metrics, score_frames
from inspector.models.decode import encode_image
from inspector.models.tiny_package import build_tiny_package
from inspector.runtime.package import write_manifest
from inspector.store.db import open_store
from inspector.store.models import DriftAlarmRow
from inspector.store.records import register_model
from jobs.validation import compare, run_validation
from tests.spine_helpers import label_frames
from trainer.heldout import freeze_heldout, load_images

DEFECTS = ("scratch", "spot")


def _write_base(folder: Path, seed: int) -> Path:
    """A small anomaly-layout folder: train/good, test/good, test/<defect>."""
    f = PartFactory(seed=seed, size=96)
    counts = {("train", "good"): 4, ("test", "good"): 30, ("test", "scratch"): 16, ("test", "spot"): 16}
    for (split, kind), n in counts.items():
        d = folder / split / kind
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (d / f"{kind}_{i:03d}.png").write_bytes(encode_image(f.make(kind), "png"))
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(package folder with recorded held-out figures, base data folder)."""
    root = tmp_path_factory.mktemp("validation")
    base = _write_base(root / "base", seed=11)
    f = PartFactory(seed=7, size=96)
    pkg = build_tiny_package(
        root / "pkg", [f.make("good") for _ in range(60)], [f.make(k) for k in DEFECTS for _ in range(20)], name="val"
    )
    cfg = parse_config({"station": {"id": "build", "data_dir": str(root / "build-station")}}, environ={})
    held = freeze_heldout(base, cfg.data_dir)
    scored = score_frames(pkg, load_images(held.items), cfg)
    recorded = line_metrics(scored.decisions, [i.label for i in held.items])
    assert recorded.recall_all and recorded.recall_all > 0.7, recorded  # the tiny model does find these defects
    manifest, _ = load_reference(pkg)
    write_manifest(pkg, manifest.model_copy(update={"line_metrics": {"heldout": recorded}}))
    return pkg, base


def _station(station_config: StationConfig, base: Path, pkg: Path, tmp_path: Path, **jobs: object) -> StationConfig:
    cfg = station_config.model_copy(deep=True)
    cfg.jobs = cfg.jobs.model_copy(
        update={"base_data": base, "regression_tolerance": 0.05, "validation_min_frames": 20, **jobs}
    )
    own = shutil.copytree(pkg, tmp_path / "active-pkg")
    freeze_heldout(base, cfg.data_dir)
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"package": own})})


def _activate(cfg: StationConfig, store, redis_client) -> str:  # type: ignore[no-untyped-def]
    pkg = Path(str(cfg.model.package))
    manifest, _ = load_reference(pkg)
    register_model(store, manifest.version, str(pkg), "0" * 64, status=ModelStatus.ACTIVE)
    redis_client.hset(
        Names(cfg.redis.prefix, cfg.station.id).active_model, mapping={"version": manifest.version, "path": str(pkg)}
    )
    return manifest.version


def _events(redis_client, cfg: StationConfig) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    names = Names(cfg.redis.prefix, cfg.station.id)
    return [json.loads(f[b"m"]) for _, f in redis_client.xrange(names.events)]


def _alarm_rows(store) -> list[DriftAlarmRow]:  # type: ignore[no-untyped-def]
    with store.session() as s:
        return list(s.scalars(select(DriftAlarmRow)))


def test_fires_when_recent_labels_disagree_with_the_model(built, station_config, redis_client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    pkg, base = built
    cfg = _station(station_config, base, pkg, tmp_path)
    store = open_store(cfg)
    version = _activate(cfg, store, redis_client)
    f = PartFactory(seed=99, size=96)
    passed = [f.make("good") for _ in range(30)]  # frames the model passes ...
    label_frames(
        cfg, store, [(encode_image(img, "png"), "scratch") for img in passed]
    )  # ... that people say are scratched
    report = run_validation(cfg, redis_client, store)
    assert report.check("heldout").drops == []  # the package itself is unchanged
    recent = report.check("recent")
    assert recent.skipped is None and recent.n == 30
    assert {d.metric for d in recent.drops} >= {"recall:scratch", "recall_all"}, recent.drops
    alarms = [e for e in _events(redis_client, cfg) if e["type"] == "drift_alarm"]
    assert len(alarms) == 1 and alarms[0]["data"]["source"] == "validation" and alarms[0]["model_version"] == version
    assert "recent:recall:scratch" in alarms[0]["data"]["tripped"]
    rows = _alarm_rows(store)
    assert len(rows) == 1 and rows[0].statistic.startswith("validation:recent:") and rows[0].value < rows[0].threshold
    store.close()


def test_quiet_when_recent_labels_agree_and_heldout_unchanged(built, station_config, redis_client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    pkg, base = built
    cfg = _station(station_config, base, pkg, tmp_path)
    store = open_store(cfg)
    _activate(cfg, store, redis_client)
    # the labelled half of every defect folder (not held out) and fresh good parts, labelled correctly
    defects = [(p, p.parent.name) for d in DEFECTS for p in sorted((base / "test" / d).glob("*.png"))]
    from trainer.heldout import load_rgb

    f = PartFactory(seed=5, size=96)
    frames = [(f.make("good"), "good") for _ in range(24)] + [(load_rgb(p), lab) for p, lab in defects]
    label_frames(cfg, store, [(encode_image(img, "png"), label) for img, label in frames])
    report = run_validation(cfg, redis_client, store)
    held = report.check("heldout")
    assert held.skipped is None and held.metrics == report.recorded  # same package, same frames, same figures
    assert report.check("recent").skipped is None and not report.fired, [d.as_dict() for d in report.drops]
    events = _events(redis_client, cfg)
    assert [e["type"] for e in events] == ["job"] and "no drop" in events[0]["message"]
    assert _alarm_rows(store) == []
    store.close()


def test_small_window_is_skipped_and_says_so(built, station_config, redis_client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    pkg, base = built
    cfg = _station(station_config, base, pkg, tmp_path, validation_min_frames=10)
    store = open_store(cfg)
    _activate(cfg, store, redis_client)
    f = PartFactory(seed=3, size=96)
    label_frames(
        cfg, store, [(encode_image(f.make("good"), "png"), "scratch") for _ in range(4)]
    )  # disagree, but too few to judge
    report = run_validation(cfg, redis_client, store)
    recent = report.check("recent")
    assert recent.n == 4 and recent.skipped and "validation_min_frames" in recent.skipped and not report.fired
    (event,) = _events(redis_client, cfg)
    assert event["type"] == "job" and "recent skipped: only 4 frames" in event["message"]
    store.close()


def test_noise_allowance_is_one_frame_of_each_metric() -> None:
    from inspector.contracts.lifecycle import LineMetrics

    rec = LineMetrics(
        n=200,
        n_good=100,
        n_defect=100,
        false_reject_rate=0.0,
        recall={"a": 1.0},
        n_per_class={"a": 100},
        recall_all=1.0,
        balanced_accuracy=1.0,
    )
    one_miss = LineMetrics(
        n=20,
        n_good=10,
        n_defect=10,
        false_reject_rate=0.0,
        recall={"a": 0.9},
        n_per_class={"a": 10},
        recall_all=0.9,
        balanced_accuracy=0.95,
    )
    assert compare(one_miss, rec, 0.0, "recent") == []  # one frame of ten: sampling noise
    two_miss = one_miss.model_copy(update={"recall": {"a": 0.8}, "recall_all": 0.8, "balanced_accuracy": 0.9})
    assert {d.metric for d in compare(two_miss, rec, 0.0, "recent")} == {"recall:a", "recall_all", "balanced_accuracy"}
