"""INT8 refit: the scorer fitted on the INT8 graph's own features, aligned to the fp32 package's raw scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from inspector.models.preprocess import Preprocessor
from inspector.runtime.package import load_package
from tests.trainer.refit_parts import (
    CFG,
    PRE,
    FittedTiles,
    build_refit_package,
    feature_graph,
    held_tiles,
    random_backbone,
    tiles,
)
from trainer.anomaly import fit_anomaly_scorer, threshold_good_quantile
from trainer.export import run_onnx
from trainer.int8_refit import (
    AlignedScorer,
    QuantisedFeatures,
)
from trainer.network import InspectionNet
from trainer.pipelines import int8_scorer_refit, net_scores, split_holdout


@pytest.fixture(scope="module")
def fitted() -> FittedTiles:
    backbone = random_backbone()
    pre = Preprocessor(PRE)
    good = tiles(30, 1)
    fit_idx, hold_idx = split_holdout(len(good), CFG.holdout_every)
    scorer = fit_anomaly_scorer(backbone, torch.from_numpy(pre.batch([good[i] for i in fit_idx])), CFG)
    net = InspectionNet(backbone, scorer=scorer).eval()
    hold = net_scores(net, pre, [good[i] for i in hold_idx])
    origin, threshold = float(np.median(hold)), threshold_good_quantile(hold, CFG.target_false_reject)
    return FittedTiles(backbone, pre, good, net, origin, threshold)


def test_refit_int8_graph_is_gated_against_the_package_fp32(fitted: FittedTiles, tmp_path: Path) -> None:
    held = held_tiles(6)
    refit = int8_scorer_refit(fitted.inputs(held.images[:1]))
    result = build_refit_package(tmp_path / "refit", fitted, held, int8_refit=refit)
    bench = result.manifest.benchmark
    assert "report" in bench["int8_refit"], bench["int8_refit"]
    rep = bench["int8_refit"]["report"]
    assert rep["metric"] in rep["metrics_fp32"] and rep["reason"]
    if bench["int8_refit"]["used"]:  # the package's INT8 record is then the refitted graph's
        assert bench["int8"]["metrics_int8"] == rep["metrics_int8"]
    load_package(tmp_path / "refit")


def test_scorer_inputs_are_the_backbone_features(fitted: FittedTiles, tmp_path: Path) -> None:
    augmented, ordered, x = feature_graph(fitted, tmp_path)
    got = QuantisedFeatures(augmented, ordered, None)(torch.from_numpy(x))
    with torch.no_grad():
        ref = fitted.backbone(torch.from_numpy(x))
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
