"""The fused defect score in ONE graph (``trainer.fusion_head.FusionHead``) matches the numpy/torch feature path
it is fitted on (``trainer.learning_curve.pool_stages`` + ``anomaly_features`` -> ``FusionModel.score``), through
torch and through the exported ONNX graph; with too few labelled defects it is the good-only score.

Random-weight backbone and synthetic parts: no ../shared, no ImageNet weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from inspector.camera.synthetic import PartFactory
from inspector.contracts.manifest import Preprocess
from inspector.models.preprocess import Preprocessor
from trainer.anomaly import AnomalyConfig, export_onnx
from trainer.backbone import build_backbone
from trainer.export import run_onnx
from trainer.fusion import FusionModel
from trainer.fusion_head import FusionHead, extract, fit_fused_scorer, numpy_features
from trainer.network import OUTPUT_MAP, OUTPUT_SCORE, InspectionNet
from trainer.pipelines import split_holdout

SIZE = 64
CFG = AnomalyConfig(image_size=(SIZE, SIZE), position_bank=24, batch_size=16)


@pytest.fixture(scope="module")
def parts() -> dict[str, object]:
    torch.manual_seed(0)
    backbone, spec = build_backbone("tf_efficientnet_lite0", allow_download=False, allow_random=True)
    backbone.eval()
    pre = Preprocessor(Preprocess(size=(SIZE, SIZE), mean=spec.mean, std=spec.std))
    f = PartFactory(seed=3, size=96)  # parts drawn at 96 px, the network sees 64
    good = [f.make("good") for _ in range(60)]
    defects = [f.make(k) for k in ["scratch"] * 12 + ["spot"] * 12]
    probe = [f.make(k) for k in ["good"] * 6 + ["scratch"] * 3 + ["spot"] * 3]
    out = {"backbone": backbone, "pre": pre, "good": good, "defects": defects, "probe": probe}
    out["fallback"] = fit_fused_scorer(backbone, pre, good, defects[:5], CFG, 0.1)  # fewer than min_defects
    return out


def _numpy_scores(head: FusionHead, model: FusionModel, p: dict, images: list) -> np.ndarray:
    pooled, emb = extract(p["backbone"], head.wknn.embed, head.pool_take, p["pre"], images)
    x = numpy_features(head.wknn, pooled, emb)
    return model.score(x, x[:, pooled.shape[1]]) + float(head.consts[8])


def _graph(head: FusionHead, p: dict, images: list, tmp: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    net = InspectionNet(p["backbone"], scorer=head).eval()
    x = torch.from_numpy(p["pre"].batch(images))
    with torch.inference_mode():
        t_score = net(x)[0].numpy()
    path = export_onnx(net, tmp / "fused.onnx", (SIZE, SIZE), net.output_names)
    outs = run_onnx(path, x.numpy())
    return t_score, outs[OUTPUT_SCORE], outs


def test_graph_matches_numpy_path_with_a_probe(parts: dict, tmp_path: Path) -> None:
    """A probe on every feature (random weights, so every one of the 1,7xx inputs matters)."""
    p = parts
    head0, _, info = p["fallback"]
    d = info["features"]
    rng = np.random.default_rng(0)
    pooled, emb = extract(p["backbone"], head0.wknn.embed, head0.pool_take, p["pre"], p["good"][:20])
    x = numpy_features(head0.wknn, pooled, emb)
    model = FusionModel(
        x.mean(0),
        np.maximum(x.std(0), 1e-6),
        rng.normal(0, 0.05, d),
        0.7,
        0.1,
        float(x[:, pooled.shape[1]].mean()),
        0.2,
        alpha=1.0,
        origin=0.3,
        spread=1.7,
    )
    head = FusionHead(head0.wknn, head0.pool_take, model, 2.0, -0.5, 0.25).eval()
    want = _numpy_scores(head, model, p, p["probe"])
    t_score, o_score, outs = _graph(head, p, p["probe"], tmp_path)
    scale = max(1.0, float(np.abs(want).max()))
    assert np.abs(t_score - want).max() / scale < 1e-3
    assert np.abs(o_score - want).max() / scale < 1e-3
    assert spearmanr(o_score, want)[0] > 0.999
    assert outs[OUTPUT_MAP].shape == (len(p["probe"]), 1, 4, 4)


def test_fit_with_labels_places_the_threshold_on_unseen_goods(parts: dict, tmp_path: Path) -> None:
    p = parts
    head, spec, info = fit_fused_scorer(
        p["backbone"], p["pre"], p["good"], p["defects"], CFG, 0.1, threshold_folds=1
    )  # the package's fold only (5 folds: 25 fits)
    _, hold = split_holdout(len(p["good"]), CFG.holdout_every)
    assert info["threshold_images"] == len(hold) == 12 and info["labelled_defects"] == 24
    assert info["inner_folds"] == 4 and info["threshold_rule"].startswith("upper_bound")
    want = _numpy_scores(head, head_model(head), p, [p["good"][i] for i in hold])
    # 12 goods: a 2 % Clopper-Pearson bound is out of reach, the rule keeps the highest held-out good
    assert info["threshold_good_quantile"] == pytest.approx(float(want.max()), rel=1e-4, abs=1e-4)
    assert spec.reject_raw == pytest.approx(info["threshold_good_quantile"], rel=1e-6)
    assert spec.origin == pytest.approx(1.0) and spec.threshold > 1.0  # median held-out good at 1
    t_score, o_score, _ = _graph(head, p, p["probe"], tmp_path)
    ref = _numpy_scores(head, head_model(head), p, p["probe"])
    assert np.abs(o_score - ref).max() / max(1.0, float(np.abs(ref).max())) < 1e-3


def head_model(head: FusionHead) -> FusionModel:
    """The FusionModel a head applies (rebuilt from its buffers)."""
    c = head.consts.numpy()
    return FusionModel(
        head.x_mean.numpy().astype(np.float64),
        head.x_scale.numpy().astype(np.float64),
        head.coef.numpy().astype(np.float64) if head.uses_probe else np.zeros(len(head.coef)),
        float(c[0]),
        float(c[1]),
        float(c[2]),
        float(c[3]),
        1.0 if head.uses_probe else 0.0,
        float(c[4]),
        float(c[5]),
    )


def test_too_few_defects_fall_back_to_the_good_only_score(parts: dict, tmp_path: Path) -> None:
    p = parts
    head, spec, info = p["fallback"]
    # the fused wknn is the learning curve's scorer whatever the package default (FUSED_WKNN): row neighbours, no
    # local-density radius (CFG carries the good-only package's defaults, own cell and lof_k 5)
    assert (CFG.neighbours, CFG.lof_k) == ("own", 5)
    assert len(head.wknn.offsets) == 3 and not head.wknn.local_density
    assert not info["uses_probe"] and not head.uses_probe and info["inner_folds"] == 0
    # default: 5 folds, every good scored once by a fold model that never saw it, all of them set the threshold
    assert info["threshold_folds"] == 5 and info["threshold_images"] == len(p["good"])
    t_score, o_score, outs = _graph(head, p, p["probe"], tmp_path)
    with torch.inference_mode():
        wknn = InspectionNet(p["backbone"], scorer=head.wknn).eval()(torch.from_numpy(p["pre"].batch(p["probe"])))
    assert spearmanr(o_score, wknn[0].numpy())[0] > 0.999  # monotone in the good-only score
    # the map output, normalised by the fused spec, is the wknn map in good-only units
    w = info["wknn_map_units"]
    norm = (outs[OUTPUT_MAP] - spec.origin) / (spec.threshold - spec.origin)
    want = (wknn[1].numpy() - w["origin"]) / (w["threshold"] - w["origin"])
    assert np.abs(norm - want).max() < 1e-3


def test_nearest_patches_matches_the_scorer_map(parts: dict) -> None:
    p = parts
    head, _, _ = p["fallback"]
    with torch.inference_mode():
        feats = p["backbone"](torch.from_numpy(p["pre"].batch(p["probe"])))
        score, amap = head.wknn(feats)
        _, d2, _ = head.wknn.nearest_patches(head.wknn.embed(feats))
        mine = head.wknn.blur(d2.clamp_min(0).sqrt())
    assert torch.allclose(mine, amap, rtol=1e-4, atol=1e-4)
