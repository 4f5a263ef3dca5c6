"""Threshold rules and rates of the learning curve (``trainer.learning_curve``): the Clopper-Pearson threshold
on good scores (pooled, or the stricter over each good population), the exact interval of a rate, AUROC.

``threshold_upper_bound`` is also the rule of the station's fused score (``trainer.fusion_head``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from inspector.contracts.errors import DataError


def rate_interval(k: float, n: float, confidence: float = 0.95) -> tuple[float, float] | None:
    """Exact (Clopper-Pearson) interval of ``k`` events in ``n`` trials; ``k`` and ``n`` may be fractional (a pooled
    rate's counts scaled to the distinct images it was measured on); equal to ``trainer.evaluate.rate_interval``
    for whole counts."""
    from scipy.stats import beta

    if n <= 0:
        return None
    a = (1 - confidence) / 2
    lo = 0.0 if k <= 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k >= n else float(beta.ppf(1 - a, k + 1, n - k))
    return round(lo, 4), round(hi, 4)


def image_auroc(scores: np.ndarray, is_defect: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(is_defect, scores))


def threshold_upper_bound(good_scores: np.ndarray, target: float, confidence: float = 0.95) -> float:
    """The lowest threshold whose held-out false-reject rate has a one-sided ``confidence`` upper bound
    (Clopper-Pearson) of at most ``target``: "at most 2 %" then holds with 95 % confidence, not just on average."""
    from scipy.stats import beta

    s = np.sort(np.asarray(good_scores, np.float64))[::-1]
    n, k = len(s), 0
    while k + 1 < n and beta.ppf(confidence, k + 2, n - k - 1) <= target:
        k += 1
    return float(s[k])  # k good images lie strictly above it (ties aside)


def per_population_threshold(populations: Sequence[np.ndarray], target: float, confidence: float = 0.95) -> float:
    """The stricter (highest) of the ``threshold_upper_bound`` thresholds of each good population.

    The false-reject ceiling is a promise about every kind of good part the station knows, not about their mix:
    pooled, a small population that scores higher (magnetic_tile's test/good beside 7x more train/good) barely
    moves the threshold and its parts are rejected above the ceiling. A population too small for the bound to
    reach ``target`` contributes its highest score (``threshold_upper_bound``'s fallback)."""
    kept = [np.asarray(p, np.float64) for p in populations if len(p)]
    if not kept:
        raise DataError("no good images to set a threshold on", "hold out good images for the threshold")
    return max(threshold_upper_bound(p, target, confidence) for p in kept)


def oracle_recall(scores: np.ndarray, is_defect: np.ndarray, target: float) -> float:
    """Recall at the threshold set on the SCORED good images (optimistic; for comparison with the field notes)."""
    from trainer.anomaly import threshold_good_quantile

    t = threshold_good_quantile(scores[~is_defect], target)
    return float((scores[is_defect] > t).mean())
