"""The threshold from every good image (``trainer.anomaly_crossfit``): out-of-fold scores, the shipped scorer
fitted on every good image, and ``fit_anomaly``'s threshold from them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from rich.console import Console

from inspector.models.preprocess import Preprocessor
from trainer.anomaly import AnomalyConfig, fit_anomaly_scorer, threshold_good_quantile
from trainer.anomaly_crossfit import backbone_features, cross_fit, fold_rows, image_batches
from trainer.backbone import build_backbone
from trainer.network import InspectionNet
from trainer.pipelines import _anomaly_preprocess, fit_anomaly, net_scores

SIZE = (64, 64)
N_GOOD = 50
ODD = 7  # the one good image unlike the others (fold 2: the old held-out fifth, never in its bank)


def _frame(rng: np.random.Generator, odd: bool = False) -> np.ndarray:
    """A striped grey texture as uint8 RGB; the odd one carries a bright square no other image has."""
    y, x = np.mgrid[0 : SIZE[0], 0 : SIZE[1]].astype(np.float32)
    img = 0.45 + 0.08 * np.sin(x / rng.uniform(1.5, 2.0) + rng.uniform(0, 6)) + rng.normal(0, 0.01, SIZE)
    if odd:
        img[20:36, 20:36] = 0.95
    return (np.repeat(np.clip(img, 0, 1)[..., None], 3, -1) * 255).astype(np.uint8)


Setup = tuple[torch.nn.Module, Preprocessor, list[np.ndarray], AnomalyConfig]


@pytest.fixture(scope="module")
def setup() -> Setup:
    torch.manual_seed(0)
    cfg = AnomalyConfig(image_size=SIZE, out_indices=(1, 2, 3))
    backbone, bspec = build_backbone(cfg.backbone, out_indices=cfg.out_indices, allow_download=False, allow_random=True)
    rng = np.random.default_rng(0)
    good = [_frame(rng, odd=i == ODD) for i in range(N_GOOD)]
    return backbone.eval(), Preprocessor(_anomaly_preprocess(cfg, bspec)), good, cfg


def test_fold_rows_hold_out_every_image_exactly_once() -> None:
    rows = fold_rows(23, 5)
    assert len(rows) == 5
    assert sorted(np.concatenate(rows).tolist()) == list(range(23))
    assert rows[2].tolist() == [2, 7, 12, 17, 22]  # fold 2 is split_holdout's held-out fifth


def test_each_good_is_scored_by_a_scorer_that_never_saw_it(setup: Setup) -> None:
    backbone, pre, good, cfg = setup
    fitted = cross_fit(backbone, backbone_features(backbone, image_batches(pre, good)), cfg)
    shipped = net_scores(InspectionNet(backbone, scorer=fitted.scorer), pre, good)
    others = np.delete(fitted.good_scores, ODD)
    # out of fold, the odd good is far from every bank patch; the shipped scorer has it in its bank
    assert fitted.good_scores[ODD] > 2 * others.max(), (fitted.good_scores[ODD], others.max())
    assert shipped[ODD] < others.max() < fitted.good_scores[ODD]
    assert fitted.folds == 5 and np.isfinite(fitted.good_scores).all()


def test_the_fit_on_cached_features_is_the_fit_on_images(setup: Setup) -> None:
    backbone, pre, good, cfg = setup
    from trainer.anomaly_fit import fit_scorer_on_features

    feats = backbone_features(backbone, image_batches(pre, good))
    a = fit_scorer_on_features(backbone, [[f[:30] for f in feats]], cfg)
    b = fit_anomaly_scorer(backbone, image_batches(pre, good[:30], cfg.batch_size), cfg)
    probe = good[30:40]
    np.testing.assert_allclose(
        net_scores(InspectionNet(backbone, scorer=a), pre, probe),
        net_scores(InspectionNet(backbone, scorer=b), pre, probe),
        rtol=1e-4,
    )


def test_fit_anomaly_thresholds_on_every_good_image_by_default(setup: Setup) -> None:
    backbone, pre, good, cfg = setup
    quiet = Console(quiet=True)
    scorer, spec, info = fit_anomaly(backbone, pre, good, cfg, quiet)
    assert (info["fit_images"], info["threshold_images"], info["threshold_folds"]) == (N_GOOD, N_GOOD, 5)
    assert info["threshold_from"] == "cross_fit"
    oof = cross_fit(backbone, backbone_features(backbone, image_batches(pre, good)), cfg).good_scores
    assert info["threshold_good_quantile"] == pytest.approx(threshold_good_quantile(oof, cfg.target_false_reject))
    assert info["score_origin"] == pytest.approx(float(np.median(oof)))
    # the shipped scorer saw the odd good (a scorer fitted without fold 2 would flag it)
    assert net_scores(InspectionNet(backbone, scorer=scorer), pre, [good[ODD]])[0] < spec.reject_raw

    _, _, old = fit_anomaly(backbone, pre, good, replace(cfg, threshold_from="holdout"), quiet)
    assert (old["fit_images"], old["threshold_images"], old["threshold_folds"]) == (40, 10, 1)
