"""The learning-curve experiment: recall at a good-only false-reject budget as labelled defects grow.

``trainer learning-curve DATA`` on an anomaly-layout folder (train/good, test/good, test/<defect>):

1. Features, once per image (cached as .npy when a cache folder is given): the frozen EfficientNet-Lite0
   (``trainer.backbone.build_backbone``) at the anomaly model's preprocessing; the ``wknn`` embedding (stages 2+3)
   and pooled stages 2-4 (mean, max, std over positions).
2. Good images are cross-fitted: train/good is split into ``good_folds`` folds. For fold k, the ``wknn`` anomaly
   scorer (``trainer.anomaly.fit_whitened_knn``, the project's default model) is fitted on the other folds and
   scores fold k, test/ and the defects; inside the other folds an inner cross-fit gives every TRAINING good image
   anomaly features from a scorer that never saw it. Fold k's good images are used only to set the threshold.
3. test/good is split like the station's held-out set (``trainer.heldout.select_heldout``): images ordered by
   sha256, even positions are half 0 (the station's held-out goods), odd positions half 1. In good rotation h,
   half h is scored and the other half joins the held-out train/good images as threshold goods, so threshold
   goods come from both populations (test/good scores higher than train/good even for the good-only model).
   Nothing is ever fitted on test/good, so both good rotations share the same models; over the two, every
   test/good image is scored exactly once (per defect rotation).
4. Defects are cross-fitted per class: for a labelled fraction f, each class is split into round(1/f) folds; one
   fold is labelled (training), the rest are scored; ``rotations`` different folds are labelled in turn.
5. For every (fraction, defect rotation, good fold) ``trainer.fusion.fit_fusion`` is fitted on the fold's training
   goods and the labelled defects. Scored images and the test/good threshold half get the mean of the good folds'
   normalised scores; each held-out train/good image is scored by the one model that did not see it. The
   threshold comes from these threshold goods (``threshold_rule``: by default the stricter of each good population's
   Clopper-Pearson threshold, ``per_population_threshold``). Recall and false-reject rate are measured on
   the scored test/good half plus the defects not labelled in that rotation (each defect is judged at both good
   rotations' thresholds, counted half each); image AUROC on all of test/good plus those defects. No scored or
   threshold image was ever fitted on, and the threshold never sees a defect.

Fraction 0 is the good-only ``wknn`` scorer through the same cross-fit (threshold from held-out good images).

Modules: ``learning_curve_folds`` (the bookkeeping of steps 2-4), ``learning_curve_features`` (step 1 and the
anomaly cross-fit), ``learning_curve_thresholds`` (threshold rules, intervals), ``learning_curve_report`` (points,
table, plot), ``learning_curve_config`` (CurveConfig); this module holds step 5 and is the experiment's one import path.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress

from trainer.fusion import fit_fusion
from trainer.learning_curve_config import CurveConfig
from trainer.learning_curve_features import (
    CACHE_VERSION,
    AnomalyCrossFit,
    ImageTable,
    anomaly_features,
    crossfit_anomaly,
    extract_table,
    fit_scorer,
    list_images,
    pool_stages,
    test_good_hashes,
)
from trainer.learning_curve_folds import (
    FoldFit,
    check_plan,
    crossfit_plan,
    defect_rotations,
    good_fold_ids,
    split_test_good,
)
from trainer.learning_curve_report import curve_point, plot_curve, print_curve
from trainer.learning_curve_thresholds import (
    image_auroc,
    oracle_recall,
    per_population_threshold,
    threshold_upper_bound,
)

__all__ = [
    "CACHE_VERSION",
    "AnomalyCrossFit",
    "CurveConfig",
    "FoldFit",
    "ImageTable",
    "anomaly_features",
    "check_plan",
    "crossfit_anomaly",
    "crossfit_plan",
    "curve_from_features",
    "defect_rotations",
    "evaluate_rotation",
    "extract_table",
    "fit_scorer",
    "good_fold_ids",
    "list_images",
    "per_population_threshold",
    "plot_curve",
    "pool_stages",
    "print_curve",
    "run_learning_curve",
    "split_test_good",
    "test_good_hashes",
    "threshold_upper_bound",
]


# ----------------------------------------------------------------------------------------------- the curve
def evaluate_rotation(
    table: ImageTable, anom: AnomalyCrossFit, labelled: np.ndarray, cfg: CurveConfig, plan: Sequence[FoldFit]
) -> dict[str, Any]:
    """Fit the good folds' fusion models for one labelled set (once: the good rotations share them), then for each
    good rotation set the threshold on its threshold goods and measure the operating point on its scored images."""
    score, models = _fused_scores(table, anom, cfg, plan)
    rot: dict[int, list[FoldFit]] = {}
    for p in plan:
        rot.setdefault(p.good_rotation, []).append(p)
    per_class: dict[str, list[int]] = {}
    per_rot = [_good_rotation_point(table, score, h, fits, cfg, per_class) for h, fits in sorted(rot.items())]
    # threshold-free figures on every test/good image (scored once over the good rotations) and the defects
    defects = np.array(sorted({i for p in plan for i in p.scored.tolist() if table.defect_class[i] is not None}))
    test_good = np.flatnonzero(table.is_test_good)
    assert sum(r["goods"] for r in per_rot) == len(test_good), "every test/good image is scored exactly once"
    rows = np.concatenate([test_good, defects])
    is_def = np.r_[np.zeros(len(test_good), bool), np.ones(len(defects), bool)]
    sum_ = lambda key: sum(r[key] for r in per_rot)  # noqa: E731
    return {
        "detected": sum_("detected"),
        "defects": sum_("defects"),
        "good_rotations": len(per_rot),
        "false_rejects": sum_("false_rejects"),
        "goods": sum_("goods"),
        "auroc": image_auroc(score[rows], is_def),
        "threshold": float(np.mean([r["threshold"] for r in per_rot])),
        "per_class": per_class,
        "plain_quantile": {
            "threshold": float(np.mean([r["plain_threshold"] for r in per_rot])),
            "detected": sum_("plain_detected"),
            "false_rejects": sum_("plain_false_rejects"),
        },
        "pooled_upper_bound": {"detected": sum_("pooled_detected"), "false_rejects": sum_("pooled_false_rejects")},
        "oracle_recall": oracle_recall(score[rows], is_def, cfg.target_false_reject),
        "median_good_score": {
            "train_good_heldout": float(np.median(score[table.is_train_good])),
            "test_good": float(np.median(score[test_good])),
        },
        "labelled": int(labelled.sum()),
        "models": models,
        "by_good_rotation": per_rot,
        "scored_defect_ids": defects.tolist(),
        "test_goods": len(test_good),
        "probe_models": sum(1 for m in models if m["uses_probe"]),
    }


def _fused_scores(
    table: ImageTable, anom: AnomalyCrossFit, cfg: CurveConfig, plan: Sequence[FoldFit]
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Every image's fused score from models that never saw it, and each good fold's model summary.

    A held-out train/good image is scored by the one model that did not see it; every other image gets the mean
    over the good folds' models."""
    feats_of = lambda k, rows, src: np.concatenate([table.pooled[rows], src[k, rows]], 1)  # noqa: E731
    d_pool = table.pooled.shape[1]
    train_good = set(np.flatnonzero(table.is_train_good).tolist())
    by_fold: dict[int, FoldFit] = {}
    for p in plan:
        by_fold.setdefault(p.good_fold, p)
    # every image any good rotation scores or thresholds with that no model of this labelled set saw
    outside = np.unique(np.concatenate([np.concatenate([p.scored, p.threshold_good]) for p in plan]))
    outside = np.array([i for i in outside.tolist() if i not in train_good], dtype=int)
    single = np.full(len(table.paths), np.nan)  # held-out train/good: the one model that did not see it
    total = np.zeros(len(table.paths))  # the rest: mean over the good folds' models
    models = []
    for k, p in sorted(by_fold.items()):
        x = np.concatenate([feats_of(k, p.train_good, anom.inner), feats_of(k, p.train_defect, anom.outer)])
        y = np.r_[np.zeros(len(p.train_good), bool), np.ones(len(p.train_defect), bool)]
        model = fit_fusion(x, x[:, d_pool], y, cfg.fusion)
        own = np.array([i for i in p.threshold_good.tolist() if i in train_good], dtype=int)
        xt = feats_of(k, own, anom.outer)
        single[own] = model.score(xt, xt[:, d_pool])
        xs = feats_of(k, outside, anom.outer)
        total[outside] += model.score(xs, xs[:, d_pool]) / len(by_fold)
        models.append(model.summary())
    assert np.isfinite(single[table.is_train_good]).all(), (
        "every train/good image must be scored by the model that did not see it"
    )
    return np.where(table.is_train_good, single, total), models


def _good_rotation_point(
    table: ImageTable, score: np.ndarray, h: int, fits: list[FoldFit], cfg: CurveConfig, per_class: dict[str, list[int]]
) -> dict[str, Any]:
    """One good rotation: the threshold from its threshold goods, the operating point on its scored images
    (``per_class`` accumulates detected / scored defects per class)."""
    from trainer.anomaly import threshold_good_quantile

    thr_rows = np.unique(np.concatenate([p.threshold_good for p in fits]))
    scored = fits[0].scored
    good_thr = score[thr_rows]
    plain = threshold_good_quantile(good_thr, cfg.target_false_reject)
    pooled_bound = threshold_upper_bound(good_thr, cfg.target_false_reject)
    populations = [score[thr_rows[table.is_train_good[thr_rows]]], score[thr_rows[table.is_test_good[thr_rows]]]]
    threshold = {
        "upper_bound": pooled_bound,
        "quantile": plain,
        "upper_bound_per_population": per_population_threshold(populations, cfg.target_false_reject),
    }[cfg.threshold_rule]
    is_def = np.array([table.defect_class[i] is not None for i in scored])
    flagged, flagged_plain = score[scored] > threshold, score[scored] > plain
    for c in sorted({table.defect_class[i] for i in scored if table.defect_class[i] is not None}):  # type: ignore[type-var]
        m = np.array([table.defect_class[i] == c for i in scored])
        acc = per_class.setdefault(c, [0, 0])  # type: ignore[arg-type]
        acc[0] += int(flagged[m].sum())
        acc[1] += int(m.sum())
    n_thr_test = int(np.isin(thr_rows, np.flatnonzero(table.is_test_good)).sum())
    return {
        "good_rotation": h,
        "threshold": threshold,
        "plain_threshold": plain,
        "pooled_upper_bound_threshold": pooled_bound,
        "pooled_detected": int((score[scored][is_def] > pooled_bound).sum()),
        "pooled_false_rejects": int((score[scored][~is_def] > pooled_bound).sum()),
        "threshold_goods": {"train_good": len(thr_rows) - n_thr_test, "test_good": n_thr_test},
        "detected": int(flagged[is_def].sum()),
        "defects": int(is_def.sum()),
        "false_rejects": int(flagged[~is_def].sum()),
        "goods": int((~is_def).sum()),
        "plain_detected": int(flagged_plain[is_def].sum()),
        "plain_false_rejects": int(flagged_plain[~is_def].sum()),
    }


def run_learning_curve(
    data_dir: str | Path, cfg: CurveConfig | None = None, cache: Path | None = None, console: Console | None = None
) -> dict[str, Any]:
    """The whole experiment; returns the JSON-ready result (``points`` one per labelled fraction)."""
    console = console or Console(stderr=True)
    cfg = cfg or CurveConfig()
    t0 = time.perf_counter()
    data_dir = Path(data_dir)
    table = extract_table(data_dir, cfg.anomaly, cache, console)
    t_feat = time.perf_counter() - t0
    anom = crossfit_anomaly(table, cfg, cache, console)
    t_anom = time.perf_counter() - t0 - t_feat
    result = curve_from_features(table, anom, cfg, console)
    result["data"] = str(data_dir)
    result["seconds"] = {
        "features": round(t_feat, 1),
        "anomaly_crossfit": round(t_anom, 1),
        "fusion": result["seconds"]["fusion"],
        "total": round(time.perf_counter() - t0, 1),
    }
    return result


def curve_from_features(
    table: ImageTable, anom: AnomalyCrossFit, cfg: CurveConfig, console: Console | None = None
) -> dict[str, Any]:
    """The curve from extracted features (``extract_table``) and cross-fitted anomaly features."""
    console = console or Console(stderr=True)
    t0 = time.perf_counter()
    half = split_test_good(
        test_good_hashes(table), [table.paths[i] for i in np.flatnonzero(table.is_test_good)], cfg.good_rotations
    )
    plan = crossfit_plan(table.is_train_good, table.is_test_good, table.defect_class, cfg, half)
    check_plan(plan, table.is_test_good)
    groups: dict[tuple[float, int], list[FoldFit]] = {}
    for p in plan:
        groups.setdefault((p.fraction, p.rotation), []).append(p)
    defects = np.flatnonzero(table.is_defect)
    results: dict[float, list[dict[str, Any]]] = {}
    from threadpoolctl import threadpool_limits

    # one BLAS thread: small eigendecompositions oversubscribe a loaded 2-core machine (35 s instead of 3 s)
    with Progress(console=console, transient=True) as prog, threadpool_limits(1):
        task = prog.add_task(
            "fitting fusion models (fraction x rotation x good fold)", total=len(plan) // cfg.good_rotations
        )
        for (f, _r), fits in groups.items():
            labelled = np.isin(defects, fits[0].train_defect)
            results.setdefault(f, []).append(evaluate_rotation(table, anom, labelled, cfg, fits))
            prog.advance(task, len(fits) // cfg.good_rotations)
    points = [curve_point(f, rs) for f, rs in results.items()]
    n_classes = {
        c: int(sum(1 for d in table.defect_class if d == c)) for c in sorted({d for d in table.defect_class if d})
    }
    return {
        "data": None,
        "method": "wknn good-only score fused with a linear probe (trainer.fusion)",
        "images": {
            "train_good": int(table.is_train_good.sum()),
            "test_good": int(table.is_test_good.sum()),
            "test_good_halves": np.bincount(half).tolist(),
            "defects": n_classes,
        },
        "protocol": "test/good split in sha256 order (trainer.heldout); per good rotation one half is scored, the "
        "other half and the held-out train/good fold set the threshold; nothing is fitted on test/good",
        "target_false_reject": cfg.target_false_reject,
        "threshold_rule": cfg.threshold_rule,
        "config": {
            "good_folds": cfg.good_folds,
            "inner_good_folds": cfg.inner_good_folds,
            "rotations": cfg.rotations,
            "good_rotations": cfg.good_rotations,
            "seed": cfg.seed,
            "fusion": asdict(cfg.fusion),
            "anomaly": {
                k: v
                for k, v in asdict(cfg.anomaly).items()
                if k in ("backbone", "out_indices", "image_size", "method", "position_bank", "downsample")
            },
        },
        "points": points,
        "seconds": {"fusion": round(time.perf_counter() - t0, 1)},
    }
