"""The learning curve's bookkeeping (``trainer.learning_curve``): which images each fitted model trains on,
scores and thresholds with; good folds, defect rotations, test/good halves, and the check that no model ever
scores or thresholds with an image it was fitted on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from inspector.contracts.errors import DataError

if TYPE_CHECKING:
    from trainer.learning_curve_config import CurveConfig


def good_fold_ids(n: int, folds: int, seed: int = 0) -> np.ndarray:
    """Fold id (0..folds-1) of each of ``n`` good images, balanced, shuffled with ``seed``."""
    if n < 2 * folds:
        raise DataError(f"only {n} good training images for {folds} folds", "collect more good images")
    ids = np.arange(n) % folds
    return np.random.default_rng(seed).permutation(ids)


def defect_rotations(classes: Sequence[str], fraction: float, rotations: int, seed: int = 0) -> list[np.ndarray]:
    """Labelled masks over the defect images: per class, round(1/fraction) folds, one labelled per rotation.

    Every class keeps at least one labelled and one scored image. Returns at most ``rotations`` masks (bool [n]).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    cls = np.asarray(classes)
    k = max(2, round(1.0 / fraction))
    rng = np.random.default_rng(seed)
    fold_of = np.zeros(len(cls), dtype=int)
    folds_of = np.zeros(len(cls), dtype=int)  # folds of the image's class (fewer than k for small classes)
    for c in sorted(set(cls.tolist())):
        idx = np.flatnonzero(cls == c)
        if len(idx) < 2:
            raise DataError(f"defect class {c!r} has {len(idx)} image(s)", "each defect class needs at least 2 images")
        kc = min(k, len(idx))
        for f, part in enumerate(np.array_split(rng.permutation(idx), kc)):
            fold_of[part] = f
        folds_of[idx] = kc
    masks = [fold_of == (r % folds_of) for r in range(min(rotations, k))]
    return masks


def split_test_good(hashes: Sequence[str], paths: Sequence[str] | None = None, parts: int = 2) -> np.ndarray:
    """Half id of each test/good image, as the station's held-out selection (``trainer.heldout.select_heldout``):
    images ordered by sha256 (then path), position ``i`` goes to half ``i % parts``; half 0 is the station's
    held-out goods (even positions)."""
    n = len(hashes)
    if n < 2 * parts:
        raise DataError(f"only {n} test/good images for {parts} halves", "collect more good test images")
    keys = list(zip(hashes, paths if paths is not None else [""] * n, strict=True))
    order = sorted(range(n), key=lambda i: keys[i])
    half = np.empty(n, dtype=int)
    half[order] = np.arange(n) % parts
    return half


@dataclass
class FoldFit:
    """One fitted model of the curve: what it was trained on and what it scores (indices into the image table)."""

    fraction: float
    rotation: int
    good_fold: int
    train_good: np.ndarray  # train/good images fitting the probe (and, in inner folds, the anomaly scorers)
    anomaly_fit_good: np.ndarray  # train/good images in the anomaly scorer that scores this fold
    threshold_good: np.ndarray  # held-out train/good fold + the other test/good half (never fitted by this model)
    train_defect: np.ndarray  # labelled defect images
    scored: np.ndarray  # one test/good half + unlabelled defects
    good_rotation: int = 0  # which test/good half is scored (the other thresholds)


def crossfit_plan(
    is_train_good: np.ndarray,
    is_test_good: np.ndarray,
    defect_class: Sequence[str | None],
    cfg: CurveConfig,
    test_half: np.ndarray | None = None,
) -> list[FoldFit]:
    """Every model the curve fits, as index sets; ``check_plan`` proves no scored or threshold image was fitted on.

    ``test_half``: half id per test/good image (``split_test_good``, row order); default alternating.
    One FoldFit per (fraction, defect rotation, good rotation, good fold); the fitted sets do not depend on
    the good rotation (nothing is fitted on test/good), so ``curve_from_features`` fits each model once."""
    train_good = np.flatnonzero(is_train_good)
    test_good = np.flatnonzero(is_test_good)
    half = np.arange(len(test_good)) % cfg.good_rotations if test_half is None else np.asarray(test_half)
    if len(half) != len(test_good):
        raise ValueError(f"{len(half)} half ids for {len(test_good)} test/good images")
    defects = np.array([i for i, c in enumerate(defect_class) if c is not None])
    classes = [defect_class[i] for i in defects]
    gfold = good_fold_ids(len(train_good), cfg.good_folds, cfg.seed)
    plan = []
    for f in cfg.fractions:
        masks = [np.zeros(len(defects), bool)] if f == 0 else defect_rotations(classes, f, cfg.rotations, cfg.seed)  # type: ignore[arg-type]
        for r, labelled in enumerate(masks):
            for h in range(cfg.good_rotations):
                for k in range(cfg.good_folds):
                    fit = train_good[gfold != k]
                    plan.append(
                        FoldFit(
                            f,
                            r,
                            k,
                            fit,
                            fit,
                            np.concatenate([train_good[gfold == k], test_good[half != h]]),
                            defects[labelled],
                            np.concatenate([test_good[half == h], defects[~labelled]]),
                            good_rotation=h,
                        )
                    )
    return plan


def check_plan(plan: Sequence[FoldFit], is_test_good: np.ndarray | None = None) -> None:
    """Raises AssertionError if any model scores (or thresholds with) an image it was fitted on, or if a scored image
    also sets the threshold. With ``is_test_good``: also if, over the good rotations of a (fraction, defect
    rotation, good fold), a test/good image is not scored exactly once (and thresholding in the others)."""
    for p in plan:
        fitted = set(p.train_good.tolist()) | set(p.anomaly_fit_good.tolist()) | set(p.train_defect.tolist())
        assert not fitted & set(p.scored.tolist()), f"fraction {p.fraction} rotation {p.rotation}: scored image fitted"
        assert not fitted & set(p.threshold_good.tolist()), f"fraction {p.fraction}: threshold image fitted"
        assert not set(p.threshold_good.tolist()) & set(p.scored.tolist()), "a scored image sets the threshold"
    groups: dict[tuple[float, int, int], list[FoldFit]] = {}
    for p in plan:
        groups.setdefault((p.fraction, p.rotation, p.good_fold), []).append(p)
    for key, fits in groups.items():
        for p in fits:
            assert set(p.train_defect.tolist()) == set(fits[0].train_defect.tolist()) and np.array_equal(
                p.train_good, fits[0].train_good
            ), f"{key}: the good rotations must share the fitted sets"
        if is_test_good is None:
            continue
        scored = [set(p.scored.tolist()) for p in fits]
        thresholds = [set(p.threshold_good.tolist()) for p in fits]
        for i in np.flatnonzero(is_test_good).tolist():
            times = sum(i in s for s in scored)
            assert times == 1, f"{key}: test/good image {i} scored {times} times over the good rotations"
            assert all(i in t for s, t in zip(scored, thresholds, strict=True) if i not in s), (
                f"{key}: test/good image {i} sets no threshold where it is not scored"
            )
