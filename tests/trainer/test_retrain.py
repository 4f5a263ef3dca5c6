"""The trainer-owned retraining on synthetic parts (no ../shared needed beyond the backbone's ImageNet weights).

A station's first model is built by ``trainer.retrain`` from an anomaly-layout base folder (combined: two
defect classes have enough labelled frames); people then label frames; the retraining of that combined
incumbent must give a combined candidate, never train on the held-out set, write its manifest once with
line metrics and the gate, pass the INT8 checklist item by measurement, and gate candidate beside incumbent
on the same frames.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from inspector.camera.synthetic import PartFactory
from inspector.contracts.config import parse_config
from inspector.contracts.errors import DataError
from inspector.models.decode import encode_image
from inspector.runtime import package as runtime_package
from inspector.runtime.package import load_package
from inspector.store.db import open_store
from inspector.store.records import promote_model, register_model
from tests.spine_helpers import label_frames
from trainer import package as trainer_package
from trainer import retrain
from trainer.checklist import run_checklist
from trainer.heldout import file_sha256, load_heldout_set

SIZE = 96
BASE = {"train/good": 90, "test/good": 20, "test/scratch": 24, "test/spot": 24, "test/chip": 8}
RECIPE = """name: retrain-test
backbone: tf_efficientnet_lite0
head: linear
train_blocks: 0
epochs: 30
finetune_epochs: 0
patience: 5
views: 1
class_weights: false
policy: tile-anomaly
threads: 2
"""


def _write_base(root: Path) -> Path:
    factory = PartFactory(seed=7, size=SIZE)
    for sub, n in BASE.items():
        (root / sub).mkdir(parents=True)
        kind = sub.split("/")[1]
        for i in range(n):
            (root / sub / f"{kind}_{i:03d}.jpg").write_bytes(encode_image(factory.make(kind), "jpeg", 92))
    return root


class _Writes:
    """Counts manifest writes per package folder (the manifest is written once)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.folders: list[str] = []
        real = runtime_package.write_manifest

        def counting(folder, manifest):  # type: ignore[no-untyped-def]
            self.folders.append(str(Path(folder).resolve()))
            return real(folder, manifest)

        monkeypatch.setattr(trainer_package, "write_manifest", counting)
        monkeypatch.setattr(runtime_package, "write_manifest", counting)


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    mp = pytest.MonkeyPatch()
    writes = _Writes(mp)
    root = tmp_path_factory.mktemp("retrain")
    base = _write_base(root / "base")
    (root / "recipe.yaml").write_text(RECIPE)
    cfg = parse_config(
        {
            "station": {"id": "rt", "data_dir": str(root / "station")},
            "jobs": {
                "base_data": str(base),
                "anomaly_image_size": SIZE,
                "train_images": 90,
                "calibration_images": 100,
                "classifier_recipe": str(root / "recipe.yaml"),
                "min_class_frames": 10,
            },
        },
        environ={},
    )
    store = open_store(cfg)
    held = load_heldout_set(cfg.data_dir, base)
    leaked = next(i for i in held.items if i.label == "scratch")
    label_frames(
        cfg, store, [(Path(leaked.path).read_bytes(), "scratch")], ext="jpg", tag="old"
    )  # a held-out frame, labelled
    t0 = time.perf_counter()
    try:
        first = retrain.build_candidate(cfg, store, "first0", reason="first model")
    except DataError as err:
        if "weights" in str(err):
            pytest.skip(f"no ImageNet backbone weights: {err}")
        raise
    t_first = time.perf_counter() - t0
    inc = first["package"]
    register_model(store, inc["version"], inc["path"], inc["sha256"], {}, "test")
    promote_model(store, inc["version"], "test")
    since = time.time()
    time.sleep(0.01)
    factory = PartFactory(seed=99, size=SIZE)
    recent = [(encode_image(factory.make(k), "jpeg", 92), k) for k in ["good"] * 24 + ["scratch"] * 12 + ["spot"] * 12]
    label_frames(cfg, store, recent, ext="jpg", tag="new")
    n_writes_before = len(writes.folders)
    t0 = time.perf_counter()
    second = retrain.build_candidate(
        cfg, store, "second0", since=since, incumbent=inc["path"], incumbent_version=inc["version"], reason="test"
    )
    t_second = time.perf_counter() - t0
    print(f"\n[retrain] first {t_first:.1f} s, second {t_second:.1f} s")
    yield {
        "cfg": cfg,
        "store": store,
        "first": first,
        "second": second,
        "held": held,
        "leaked": leaked,
        "writes": writes.folders[n_writes_before:],
        "all_writes": list(writes.folders),
    }
    mp.undo()
    store.close()


def test_first_model_is_combined_on_the_labelled_classes(station: dict[str, Any]) -> None:
    first = station["first"]
    assert first["train"]["kind"] == "combined"
    m = load_package(first["package"]["path"]).manifest
    assert m.task == "combined" and m.model.outputs.class_probs and m.model.outputs.anomaly_score
    assert m.class_names == ["good", "scratch", "spot"]  # chip: 4 non-held-out frames < min_class_frames
    assert "heldout" in m.line_metrics and m.line_metrics["heldout"].n == len(station["held"].items)


def test_combined_incumbent_yields_combined_candidate(station: dict[str, Any]) -> None:
    second = station["second"]
    m = load_package(second["package"]["path"]).manifest
    assert second["train"]["kind"] == "combined" and m.task == "combined"
    assert m.model.outputs.class_probs == "class_probs" and m.model.outputs.anomaly_score
    counts = second["snapshot"]["counts"]["train"]
    assert m.class_names == retrain.classifier_classes(counts, station["cfg"].jobs.min_class_frames)
    assert m.class_names == ["good", "scratch", "spot"]


def test_no_heldout_image_is_trained_on(station: dict[str, Any]) -> None:
    held = station["held"].hashes
    for build in ("first", "second"):
        m = load_package(station[build]["package"]["path"]).manifest
        trained = set(m.data["train_sha256"])
        assert trained and not trained & held
        assert m.data["dropped_heldout"] >= 1  # the labelled held-out frame, and base test images
        assert station["leaked"].sha256 not in trained
    snap = station["second"]["snapshot"]
    assert snap["labels"]["since_incumbent"] == 48 and snap["counts"]["recent"] == {"good": 12, "scratch": 6, "spot": 6}


def test_manifest_written_once_with_line_metrics_and_gate(station: dict[str, Any]) -> None:
    final = str(Path(station["second"]["package"]["path"]).resolve())
    writes = station["writes"]
    assert len(writes) == 1, writes  # one write for the whole retraining (in the staging package folder)
    assert Path(writes[0]).name == "package"
    m = load_package(final).manifest
    assert set(m.line_metrics) == {"heldout", "recent"}
    assert m.gate is not None and m.gate.rows and m.gate.incumbent_version == station["first"]["package"]["version"]
    assert m.drift_reference and m.checklist and m.data["snapshot_sha256"] == station["second"]["snapshot"]["hash"]
    assert m.data["dataset_version"] == station["second"]["snapshot"]["dataset_version"]
    assert not Path(retrain.staging_dir(station["cfg"], "second0")).exists()


def test_int8_checklist_item_evaluated(station: dict[str, Any]) -> None:
    path = station["second"]["package"]["path"]
    m = load_package(path).manifest
    q = m.benchmark["int8"]
    assert q["n_calibration"] >= 100 and "metric_int8" in q and q["reason"]
    report = run_checklist(path, runs=5).to_dict()
    int8 = report["items"]["int8"]
    assert int8["passed"], int8
    assert ("kept" in int8["figure"]) or ("declined" in int8["figure"])
    assert bool(m.model.int8) == (m.benchmark["runtime"]["precision"] == "int8")


def test_gate_rows_compare_candidate_and_incumbent_on_same_frames(station: dict[str, Any]) -> None:
    m = load_package(station["second"]["package"]["path"]).manifest
    assert m.gate is not None
    inc_lm = m.metrics["incumbent_line_metrics"]
    for name, lm in m.line_metrics.items():
        assert inc_lm[name]["n"] == lm.n and inc_lm[name]["n_per_class"] == lm.n_per_class
        assert m.gate.frame_sets[name] == lm.n
    regress = [r for r in m.gate.rows if r.gate == "no_regression"]
    assert {r.frame_set for r in regress} == {"heldout", "recent"}
    assert all(r.incumbent is not None and r.candidate is not None for r in regress)
    frr = next(r for r in regress if r.metric == "false_reject_rate" and r.frame_set == "heldout")
    assert frr.incumbent == pytest.approx(inc_lm["heldout"]["false_reject_rate"])
    assert frr.candidate == pytest.approx(m.line_metrics["heldout"].false_reject_rate)


def test_heldout_list_is_frozen_with_the_station(station: dict[str, Any]) -> None:
    cfg = station["cfg"]
    body = json.loads((Path(cfg.data_dir) / "heldout.json").read_text())
    assert {i["sha256"] for i in body["items"]} == station["held"].hashes
    assert all(file_sha256(i.path) == i.sha256 for i in station["held"].items[:5])
