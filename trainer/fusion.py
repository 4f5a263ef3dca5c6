"""Fusion of the good-only anomaly score with a linear probe trained on labelled defects (numpy + sklearn only).

Works on feature vectors already extracted from the frozen backbone; no torch here, so the retraining
pipeline can reuse it to build packages. What it needs per image (``trainer.learning_curve`` computes it):

- ``features`` [n, d]: pooled frozen-backbone features and anomaly-map features, e.g. for EfficientNet-Lite0
  at 256 px the mean, max and standard deviation over positions of timm stages 2, 3 and 4 (40 + 112 + 320
  channels), the channel-wise maximum over positions of the whitened patches ``|z|`` and of the residual
  ``|z - nearest good patch|`` of the ``wknn`` scorer, and log statistics of its anomaly map (top-k means);
- ``log_anomaly`` [n]: the log of the good-only anomaly score (``wknn`` image score) of each image, computed by
  a scorer that was NOT fitted on that image (cross-fitted for the good training images).

Model: ``score = a * log_anomaly + b + w . standardised(features)``, a linear probe fitted by class-balanced
weighted least squares on +-1 targets where only ``w`` carries the ridge penalty (the anomaly column and the
intercept are projected out first, Frisch-Waugh). As the penalty grows, ``w`` -> 0 and the fused score ranks
images exactly like the good-only score; one eigendecomposition gives the whole penalty path, so the inner cross-validation is
cheap. The penalty is chosen by inner stratified cross-validation on the TRAINING rows only, with a guard: a
probe is used only if, paired over the held-out labelled defects, it beats the anomaly score alone by more than
``z_guard`` standard errors of the per-defect gain (gain of a defect: how far below ``max_fpr`` the share of
good images scoring above it is). With few or uninformative labels the fusion therefore falls back to the
good-only model instead of below it. Scores are normalised by the training good images (median 0, 90th
percentile 1) so that models fitted on different folds can share one threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold


@dataclass(frozen=True)
class FusionConfig:
    """How ``fit_fusion`` fits and selects the probe (defaults fixed a priori, documented in the README)."""

    alpha_grid: tuple[float, ...] = (10.0, 3.0, 1.0, 0.3, 0.1)  # ridge penalty per unit of sample weight
    inner_folds: int = 4
    max_fpr: float = 0.05  # selection criterion: the low false-positive region that matters
    z_guard: float = 2.0  # a probe must beat the anomaly score alone by this many standard errors
    min_defects: int = 10  # fewer labelled defects than this: no probe, the anomaly score alone
    seed: int = 0


@dataclass
class FusionModel:
    """A fitted fusion: ``score(features, log_anomaly)`` -> normalised defect scores (higher = more defective)."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray  # [d] weights of the standardised features (zeros: the good-only fallback)
    anomaly_coef: float  # weight of the standardised log anomaly score
    intercept: float
    anomaly_mean: float
    anomaly_scale: float
    alpha: float  # 0.0: the fallback (anomaly score alone)
    origin: float = 0.0  # median training-good raw score
    spread: float = 1.0  # 90th percentile minus median of the training-good raw scores
    cv: dict[str, float] = field(default_factory=dict)  # inner-CV figures per candidate

    @property
    def uses_probe(self) -> bool:
        return self.alpha > 0

    def raw(self, features: np.ndarray, log_anomaly: np.ndarray) -> np.ndarray:
        a = (np.asarray(log_anomaly, np.float64) - self.anomaly_mean) / self.anomaly_scale
        out = self.anomaly_coef * a + self.intercept
        if self.uses_probe:
            out = out + ((np.asarray(features, np.float64) - self.mean) / self.scale) @ self.coef
        return out

    def score(self, features: np.ndarray, log_anomaly: np.ndarray) -> np.ndarray:
        """Normalised fused scores [n]: 0 at the median training good image, 1 at its 90th percentile."""
        return (self.raw(features, log_anomaly) - self.origin) / self.spread

    def summary(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "uses_probe": self.uses_probe,
            "anomaly_coef": round(self.anomaly_coef, 4),
            "probe_weight_norm": round(float(np.linalg.norm(self.coef)), 4),
            "inner_cv": {k: round(v, 4) for k, v in self.cv.items()},
        }


def _path(x: np.ndarray, a: np.ndarray, y: np.ndarray, alphas: tuple[float, ...]) -> list[FusionModel]:
    """Fallback (alpha 0) and one ridge probe per alpha, all from one eigendecomposition of the training rows' Gram matrix."""
    mean, scale = x.mean(0), np.maximum(x.std(0), 1e-6)
    a_mean, a_scale = float(a.mean()), float(max(a.std(), 1e-6))
    xs, az = (x - mean) / scale, (a - a_mean) / a_scale
    n_def, n_good = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    sw = np.sqrt(np.where(y, len(y) / (2 * n_def), len(y) / (2 * n_good)))
    t = np.where(y, 1.0, -1.0) * sw
    zw = np.column_stack([sw, az * sw])  # intercept and anomaly column, weighted
    zpinv = np.linalg.pinv(zw)
    xw = xs * sw[:, None]
    xr, tr = xw - zw @ (zpinv @ xw), t - zw @ (zpinv @ t)
    evals, q = np.linalg.eigh(xr @ xr.T)  # kernel form: n x n, cheaper than an SVD when d > n
    evals = np.clip(evals, 0.0, None)
    qt = q.T @ tr
    models = []
    for alpha in (0.0, *alphas):
        if alpha == 0:
            w = np.zeros(x.shape[1])
        else:
            lam = alpha * float((sw**2).sum())
            w = xr.T @ (q @ (qt / (evals + lam)))  # = (xr'xr + lam I)^-1 xr' tr
        b, ac = zpinv @ (t - xw @ w)
        if alpha == 0:  # the fallback IS the anomaly score (the normalisation below sets offset and scale)
            b, ac = 0.0, 1.0
        m = FusionModel(mean, scale, w, float(ac), float(b), a_mean, a_scale, float(alpha))
        good = m.raw(x[~y], a[~y])
        m.origin = float(np.median(good))
        m.spread = float(max(np.quantile(good, 0.9) - m.origin, 1e-6))
        models.append(m)
    return models


def defect_gains(scores: np.ndarray, is_defect: np.ndarray, max_fpr: float) -> np.ndarray:
    """Per labelled defect: ``max(0, 1 - fpr / max_fpr)``, fpr = share of good images scoring at or above it.

    Their mean is a (non-standardised) partial AUROC up to ``max_fpr``: 1 when every defect outranks every good.
    """
    y = np.asarray(is_defect).astype(bool)
    good = np.sort(scores[~y])
    fpr = 1.0 - np.searchsorted(good, scores[y], side="left") / max(len(good), 1)
    return np.clip(1.0 - fpr / max_fpr, 0.0, 1.0)


def fit_fusion(
    features: np.ndarray, log_anomaly: np.ndarray, is_defect: np.ndarray, config: FusionConfig | None = None
) -> FusionModel:
    """Fit the fused scorer on training rows (good and labelled defective images).

    ``features`` [n, d] and ``log_anomaly`` [n] as described in the module docstring; ``is_defect`` [n] bool.
    The penalty is chosen by inner cross-validation on these rows only; with fewer than ``min_defects``
    labelled defects, or when no probe clearly beats the anomaly score in the inner CV, the result is the
    fallback: the good-only anomaly score, normalised.
    """
    cfg = config or FusionConfig()
    x = np.asarray(features, np.float64)
    a = np.asarray(log_anomaly, np.float64)
    y = np.asarray(is_defect).astype(bool)
    if x.ndim != 2 or len(x) != len(a) or len(a) != len(y):
        raise ValueError(f"features {x.shape}, log_anomaly {a.shape} and is_defect {y.shape} do not match")
    if (~y).sum() < 2:
        raise ValueError("fit_fusion needs good training images")
    n_def = int(y.sum())
    if n_def < max(cfg.min_defects, cfg.inner_folds):
        model = _path(x, a, y, ())[0]
        model.cv = {"labelled_defects": float(n_def)}
        return model
    folds = StratifiedKFold(cfg.inner_folds, shuffle=True, random_state=cfg.seed)
    oof = np.zeros((1 + len(cfg.alpha_grid), len(y)))
    for tr, va in folds.split(x, y):
        for i, m in enumerate(_path(x[tr], a[tr], y[tr], cfg.alpha_grid)):
            oof[i, va] = m.score(x[va], a[va])
    gains = np.stack([defect_gains(o, y, cfg.max_fpr) for o in oof])  # [candidates, defects]
    diff = gains[1:] - gains[0]
    se = diff.std(1, ddof=1) / np.sqrt(n_def)
    passed = diff.mean(1) > cfg.z_guard * np.maximum(se, 1e-9)
    choice = 0
    if passed.any():
        choice = 1 + int(np.argmax(np.where(passed, gains[1:].mean(1), -np.inf)))
    alphas = (0.0, *cfg.alpha_grid)
    model = _path(x, a, y, (alphas[choice],) if choice else ())[-1]
    model.cv = {f"gain alpha={al:g}": float(g) for al, g in zip(alphas, gains.mean(1), strict=True)}
    return model
