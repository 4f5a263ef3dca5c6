"""Packaging: the folder loads with the station's load_package, every hash verifies, figures are recorded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inspector.contracts.errors import ModelPackageError
from inspector.contracts.manifest import AnomalySpec, Preprocess
from inspector.runtime.package import hash_file, load_package
from tests.trainer.deploy_nets import rgb_images, tiny_net
from trainer.evaluate import EvalSet
from trainer.package import PackageSpec, build_package
from trainer.quantize import QuantConfig

PRE = Preprocess(size=(32, 32), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def heldout(n: int = 12) -> EvalSet:
    names = ["good" if i % 2 == 0 else "blob" for i in range(n)]
    return EvalSet(rgb_images(n, seed=5), names, [None] * n, "synthetic")


def spec(threshold: float) -> PackageSpec:
    return PackageSpec(
        name="tiny",
        task="combined",
        preprocess=PRE,
        class_names=["good", "defect"],
        temperature=1.5,
        anomaly=AnomalySpec(threshold=threshold),
        data={"snapshot": "abc123"},
        augmentation={"policy": "none"},
        architecture={"backbone": "TinyBackbone"},
        latency_target_ms=500.0,
        memory_budget_mb=1024.0,
        target_hardware="2-core AMD EPYC, AVX-512 VNNI",
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from inspector.models.preprocess import Preprocessor

    net = tiny_net(classes=2)
    held = heldout()
    raw = run_onnx_scores(net, Preprocessor(PRE).batch(held.images))
    out = tmp_path_factory.mktemp("pkg") / "tiny-pkg"
    cfg = QuantConfig(allow_few_calibration=True, bench_runs=5, bench_warmup=1)
    build_package(
        out,
        net,
        spec(float(np.quantile(raw, 0.9))),
        held,
        calibration_images=rgb_images(8, seed=9),
        quant_config=cfg,
        n_canaries=4,
    )
    return out


def run_onnx_scores(net, x: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    import torch

    with torch.no_grad():
        return net(torch.from_numpy(x))[1].numpy()


def test_package_loads_and_every_hash_verifies(built: Path) -> None:
    pkg = load_package(built)
    m = pkg.manifest
    assert set(m.files) >= {"model.onnx"} | {c.file for c in m.canaries}
    for rel, sha in m.files.items():
        assert hash_file(built / rel) == sha
    assert m.version.startswith("tiny-") and m.version.endswith(m.files["model.onnx"][:8])
    assert m.parity["passed"] and m.benchmark["fp32_ms"] > 0 and m.benchmark["torch_eager_ms"] > 0
    assert "int8" in m.benchmark and m.benchmark["int8"]["reason"]
    assert (m.model.int8 is not None) == (m.benchmark["runtime"]["precision"] == "int8")
    assert m.data == {"snapshot": "abc123"} and m.augmentation == {"policy": "none"}
    assert 1 <= len(m.canaries) <= 4


def test_manifest_records_drift_reference_metrics_and_checklist(built: Path) -> None:
    m = load_package(built).manifest
    ref = m.drift_reference
    assert set(ref["image_stats"]) == {"brightness", "contrast", "sharpness", "mean_r", "mean_g", "mean_b"}
    assert sum(ref["image_stats"]["brightness"]["counts"]) == 6  # the held-out good frames
    assert ref["classifier_confidence"]["n"] == 12 and set(ref["class_mix"]) == {"good", "defect"}
    assert ref["anomaly_score_good"]["n"] == 6
    held = m.metrics["heldout"]
    assert held["anomaly"]["n"] == 12 and held["classifier"]["n"] == 12
    assert set(m.checklist["items"]) == {
        "latency",
        "target_hardware",
        "baseline",
        "int8",
        "parity",
        "benchmark",
        "memory",
    }
    assert m.checklist["items"]["parity"]["passed"]


def test_tampered_file_is_refused(built: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    canary = next(p for p in (copy / "canary").iterdir())
    canary.write_bytes(canary.read_bytes() + b"x")
    with pytest.raises(ModelPackageError, match="sha256"):
        load_package(copy)


def test_existing_folder_is_not_overwritten(built: Path) -> None:
    from trainer.package import PackagingError

    before = json.loads((built / "manifest.json").read_text())["version"]
    with pytest.raises(PackagingError, match="not empty"):
        build_package(built, tiny_net(classes=2), spec(1.0), heldout(), evaluate=False, checklist=False)
    assert json.loads((built / "manifest.json").read_text())["version"] == before
    assert not [p for p in built.parent.iterdir() if p.name.startswith(".")], "staging folder left behind"


def test_evaluate_through_station_runtime_with_masks_and_plots(built: Path, tmp_path: Path) -> None:
    from trainer.evaluate import evaluate_package

    held = heldout()
    held.masks = [
        None if n == "good" else (img[:, :, 0] > 140) for n, img in zip(held.label_names, held.images, strict=True)
    ]
    report = evaluate_package(built, held, plots_dir=tmp_path / "plots")
    an, cl = report["anomaly"], report["classifier"]
    assert 0 <= an["image_auroc"] <= 1 and an["pixel_auroc"] is not None
    assert set(an["per_defect"]) == {"blob"} and an["false_reject_rate"] is not None and an["escape_rate"] is not None
    lo, hi = an["false_reject_rate_ci95"]
    assert lo <= an["false_reject_rate"] <= hi and hi > lo  # a rate on a few good images is known only roughly
    lo, hi = an["recall_ci95"]
    assert lo <= 1 - an["escape_rate"] <= hi
    assert cl["classes"] == ["good", "defect"] and np.array(cl["confusion_matrix"]).sum() == 12 and 0 <= cl["ece"] <= 1
    assert {Path(p).name for p in report["plots"]} == {"roc.png", "score_hist.png", "confusion.png"}
    json.dumps(report)  # one JSON object, no numpy leftovers


@pytest.mark.parametrize("n", [10, 193, 392])
def test_rate_interval_matches_the_closed_form_at_zero_and_all_events(n: int) -> None:
    from trainer.evaluate import rate_interval

    edge = 0.025 ** (1 / n)  # exact 95 % bounds when none or all of n trials are events
    assert rate_interval(0, n) == (0.0, pytest.approx(1 - edge, abs=1e-4))
    assert rate_interval(n, n) == (pytest.approx(edge, abs=1e-4), 1.0)
    lo, hi = rate_interval(n // 3, n)
    assert lo < (n // 3) / n < hi


def test_rate_interval_of_three_false_rejects_in_193_good_parts_reaches_past_four_percent() -> None:
    from trainer.evaluate import rate_interval

    lo, hi = rate_interval(3, 193)  # 1.55 %: the figure the magnetic_tile package prints
    assert lo < 0.01 and 0.04 < hi < 0.05
    assert rate_interval(0, 0) is None
