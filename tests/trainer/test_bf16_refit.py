"""bf16 refit: the scorer cross-fitted on OpenVINO's bf16 features, on the fp32 package's raw scale, is one more
candidate of the precision gate and, when kept, the package's bf16 graph (``model.bf16``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from inspector.models.inference import choose_model_file
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
from trainer.anomaly import threshold_good_quantile
from trainer.anomaly_crossfit import backbone_features, cross_fit
from trainer.bf16_refit import BackendFeatures, bf16_available, bf16_scorer_refit
from trainer.export import export_onnx
from trainer.int8_refit import AlignedScorer
from trainer.network import InspectionNet
from trainer.pipelines import holdout_fit

pytestmark = pytest.mark.skipif(not bf16_available(), reason="this CPU has no bf16 in OpenVINO (AVX512-BF16 or AMX)")


@pytest.fixture(scope="module")
def fitted() -> FittedTiles:
    backbone = random_backbone()
    pre = Preprocessor(PRE)
    good = tiles(30, 1)
    fit = cross_fit(backbone, backbone_features(backbone, [torch.from_numpy(pre.batch(good))]), CFG)
    origin = float(np.median(fit.good_scores))
    threshold = threshold_good_quantile(fit.good_scores, CFG.target_false_reject)
    return FittedTiles(backbone, pre, good, InspectionNet(backbone, scorer=fit.scorer).eval(), origin, threshold)


def test_backend_features_are_the_graphs_backbone_outputs(fitted: FittedTiles, tmp_path: Path) -> None:
    augmented, ordered, x = feature_graph(fitted, tmp_path)
    with torch.no_grad():
        ref = fitted.backbone(torch.from_numpy(x))
    f32 = BackendFeatures(augmented, ordered, None, precision="fp32")(torch.from_numpy(x))
    bf16 = BackendFeatures(augmented, ordered, None)(torch.from_numpy(x))
    for a, b, r in zip(f32, bf16, ref, strict=True):
        assert torch.allclose(a, r, atol=1e-3)
        err = float((b - r).norm() / r.norm())
        assert 0 < err < 0.2, f"bf16 features differ from fp32 by {err:.3%}: not computed in bf16, or broken"


def test_bf16_refit_is_gated_and_kept_as_the_packages_bf16_graph(fitted: FittedTiles, tmp_path: Path) -> None:
    held = held_tiles(8)
    hook = bf16_scorer_refit(fitted.inputs(held.images[:1]))
    assert hook is not None
    result = build_refit_package(tmp_path / "bf16refit", fitted, held, bf16_refit=hook)
    runtime = result.manifest.benchmark["runtime"]
    [refit] = [c for c in runtime["candidates"] if c["file"] == "bf16"]
    assert "scorer fitted on bf16 features" in refit["reason"] and refit["metric"] in refit["metrics"]
    pkg = load_package(tmp_path / "bf16refit")
    if runtime["file"] == "bf16":  # kept and fastest: the package carries the graph and bf16 runs it
        assert pkg.manifest.model.bf16 == "model.bf16.onnx" and pkg.file("model.bf16.onnx").is_file()
        assert choose_model_file(pkg.manifest, "auto", "openvino") == ("model.bf16.onnx", "bf16")
    else:
        assert pkg.manifest.model.bf16 is None and not (tmp_path / "bf16refit" / "model.bf16.onnx").exists()
    assert choose_model_file(pkg.manifest, "fp32", "openvino") == ("model.onnx", "fp32")


def test_a_holdout_package_refits_by_its_own_threshold_rule(fitted: FittedTiles, tmp_path: Path) -> None:
    """``--threshold-from holdout``: the bf16 scorer's threshold rests on the same held-out fifth as fp32's."""
    inputs = fitted.inputs(tiles(1, 7))
    rule, calls = holdout_fit(inputs), []

    def counted(features: torch.nn.Module) -> tuple[torch.nn.Module, float, float]:
        calls.append(features)
        return rule(features)

    hook = bf16_scorer_refit(inputs, counted)
    assert hook is not None
    graph = export_onnx(fitted.net, torch.from_numpy(inputs.sample), tmp_path / "m.onnx")
    net = hook(graph, tmp_path)
    assert len(calls) == 1 and isinstance(calls[0], BackendFeatures)  # fitted on the bf16 features, once
    assert net is not None and isinstance(net.scorer, AlignedScorer)
