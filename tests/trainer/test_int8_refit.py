"""INT8 refit: the scorer fitted on the INT8 graph's own features, aligned to the fp32 package's raw scale."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from inspector.contracts.manifest import AnomalySpec, Preprocess
from inspector.models.preprocess import Preprocessor
from inspector.runtime.package import load_package
from trainer.anomaly import AnomalyConfig, fit_anomaly_scorer, threshold_good_quantile
from trainer.evaluate import EvalSet
from trainer.export import run_onnx
from trainer.int8_refit import AlignedScorer, QuantisedFeatures, order_by_stage, scorer_inputs, with_outputs
from trainer.network import InspectionNet
from trainer.package import PackageSpec, build_package
from trainer.pipelines import int8_scorer_refit, net_scores, split_holdout
from trainer.quantize import QuantConfig

SIZE = 64
PRE = Preprocess(size=(SIZE, SIZE), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
CFG = replace(AnomalyConfig(), image_size=(SIZE, SIZE), position_bank=16, batch_size=8, holdout_every=3)


def _images(n: int, seed: int, defect: bool = False) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = np.clip(rng.normal(128, 12, (SIZE, SIZE, 1)), 0, 255).repeat(3, 2)
        if defect:
            y, x = rng.integers(8, SIZE - 16, 2)
            img[y : y + 10, x : x + 10] = 250
        out.append(img.astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def fitted() -> dict[str, object]:
    torch.manual_seed(0)
    backbone = timm.create_model(
        "tf_efficientnet_lite0", features_only=True, out_indices=CFG.out_indices, pretrained=False
    ).eval()
    pre = Preprocessor(PRE)
    good = _images(30, 1)
    fit_idx, hold_idx = split_holdout(len(good), CFG.holdout_every)
    scorer = fit_anomaly_scorer(backbone, torch.from_numpy(pre.batch([good[i] for i in fit_idx])), CFG)
    net = InspectionNet(backbone, scorer=scorer).eval()
    hold = net_scores(net, pre, [good[i] for i in hold_idx])
    info = {
        "score_origin": float(np.median(hold)),
        "threshold_good_quantile": threshold_good_quantile(hold, CFG.target_false_reject),
    }
    return {"backbone": backbone, "pre": pre, "good": good, "net": net, "info": info}


def test_refit_int8_graph_is_gated_against_the_package_fp32(fitted: dict[str, object], tmp_path: Path) -> None:
    pre, good, info = fitted["pre"], fitted["good"], fitted["info"]
    held_images = _images(6, 7) + _images(6, 8, defect=True)
    held = EvalSet(held_images, ["good"] * 6 + ["blob"] * 6, [None] * 12, "synthetic")
    spec = PackageSpec(
        name="refit",
        task="anomaly",
        preprocess=PRE,
        class_names=None,
        anomaly=AnomalySpec(threshold=info["threshold_good_quantile"], score_origin=info["score_origin"]),  # type: ignore[arg-type]
        latency_target_ms=500.0,
        memory_budget_mb=1024.0,
    )
    refit = int8_scorer_refit(fitted["backbone"], pre, good, CFG, info, held_images[:1])  # type: ignore[arg-type]
    result = build_package(
        tmp_path / "pkg",
        fitted["net"],
        spec,
        held,
        calibration_images=good[:8],  # type: ignore[arg-type]
        quant_config=QuantConfig(allow_few_calibration=True, bench_runs=5, bench_warmup=1),
        n_canaries=2,
        int8_refit=refit,
        checklist=False,
    )
    bench = result.manifest.benchmark
    assert "report" in bench["int8_refit"], bench["int8_refit"]
    rep = bench["int8_refit"]["report"]
    assert rep["metric"] in rep["metrics_fp32"] and rep["reason"]
    if bench["int8_refit"]["used"]:  # the package's INT8 record is then the refitted graph's
        assert bench["int8"]["metrics_int8"] == rep["metrics_int8"]
    load_package(tmp_path / "pkg")


def test_scorer_inputs_are_the_backbone_features(fitted: dict[str, object], tmp_path: Path) -> None:
    from trainer.export import export_onnx

    net, pre = fitted["net"], fitted["pre"]
    x = pre.batch(fitted["good"][:2])  # type: ignore[union-attr,index]
    path = export_onnx(net, torch.from_numpy(x), tmp_path / "m.onnx")  # type: ignore[arg-type]
    names = scorer_inputs(path)
    augmented = with_outputs(path, names, tmp_path / "aug.onnx")
    channels = list(fitted["backbone"].feature_info.channels())  # type: ignore[union-attr]
    ordered = order_by_stage(augmented, names, channels, x)
    assert ordered is not None and len(ordered) == 2
    got = QuantisedFeatures(augmented, ordered, None)(torch.from_numpy(x))
    with torch.no_grad():
        ref = fitted["backbone"](torch.from_numpy(x))  # type: ignore[operator]
    for g, r in zip(got, ref, strict=True):
        assert torch.allclose(g, r, atol=1e-4)


def test_aligned_scorer_maps_origin_and_threshold() -> None:
    class Fixed(torch.nn.Module):
        def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            return feats[0].flatten(), feats[0]

    a = (10.0 - 4.0) / (3.0 - 1.0)
    s, m = AlignedScorer(Fixed(), a, 4.0 - a * 1.0)([torch.tensor([[1.0], [3.0]])])
    assert torch.allclose(s, torch.tensor([4.0, 10.0])) and torch.allclose(m.flatten(), s)
    assert run_onnx  # imported for symmetry with the package tests
