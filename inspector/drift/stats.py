"""Pure drift statistics: population stability index, Kolmogorov-Smirnov against a stored histogram,
mean shift in reference standard deviations, and the categorical / rate tests.

Nothing here touches Redis, files or time; every function takes arrays or plain dicts and returns numbers,
so the monitor's decisions can be unit-tested and replayed.

The reference of a numeric statistic is a histogram (``edges``, ``counts``) plus ``mean`` and ``std``
(see :mod:`inspector.drift.reference`). Small windows make PSI noisy (its expected value under no drift is
about ``(bins - 1) * (1/n_window + 1/n_reference)``), so :func:`coarsen` merges reference bins until each
holds at least ``min_share`` of the reference before PSI is computed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

EPS = 1e-4
MIN_SHARE = 0.08


def psi(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray, eps: float = EPS) -> float:
    """Population stability index of two distributions over the same bins (counts or proportions).

    ``sum((a - e) * ln(a / e))`` with both sides normalised and floored at ``eps`` (an empty bin on one
    side does not give infinity). 0: identical; > 0.25 is the usual "significant shift".
    """
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    if e.shape != a.shape or e.size == 0:
        raise ValueError(f"psi needs two non-empty histograms of the same shape, got {e.shape} and {a.shape}")
    if e.sum() <= 0 or a.sum() <= 0:
        return 0.0
    e = np.clip(e / e.sum(), eps, None)
    a = np.clip(a / a.sum(), eps, None)
    return float(np.sum((a - e) * np.log(a / e)))


def coarsen(
    edges: Sequence[float], counts: Sequence[float], min_share: float = MIN_SHARE
) -> tuple[np.ndarray, np.ndarray]:
    """Merge adjacent bins (left to right, the remainder into the last) until each has >= ``min_share``."""
    e = np.asarray(edges, dtype=float)
    c = np.asarray(counts, dtype=float)
    if e.size != c.size + 1:
        raise ValueError(f"a histogram needs len(edges) == len(counts) + 1, got {e.size} and {c.size}")
    total = c.sum()
    if total <= 0:
        return e[[0, -1]], np.array([0.0])
    new_edges, new_counts, acc = [e[0]], [], 0.0
    for i, n in enumerate(c):
        acc += n
        if acc / total >= min_share and i < c.size - 1:
            new_edges.append(e[i + 1])
            new_counts.append(acc)
            acc = 0.0
    if acc > 0 or not new_counts:
        new_counts.append(acc)
        new_edges.append(e[-1])
    else:
        new_edges[-1] = e[-1]
    if len(new_counts) > 1 and new_counts[-1] / total < min_share:  # fold a thin tail into its neighbour
        new_counts[-2] += new_counts.pop()
        new_edges.pop(-2)
    return np.asarray(new_edges), np.asarray(new_counts)


def bin_counts(values: Sequence[float] | np.ndarray, edges: Sequence[float] | np.ndarray) -> np.ndarray:
    """Counts of ``values`` in the bins of ``edges``; values outside fall into the first or last bin."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    e = np.asarray(edges, dtype=float)
    idx = np.clip(np.searchsorted(e, v, side="right") - 1, 0, e.size - 2)
    return np.bincount(idx, minlength=e.size - 1).astype(float)


def pseudo_sample(edges: Sequence[float], counts: Sequence[float]) -> np.ndarray:
    """A sample with the histogram's distribution: each bin's count spread evenly across the bin."""
    e = np.asarray(edges, dtype=float)
    parts = []
    for lo, hi, n in zip(e[:-1], e[1:], np.asarray(counts, dtype=int), strict=True):
        if n > 0:
            parts.append(lo + (np.arange(n) + 0.5) / n * (hi - lo))
    return np.concatenate(parts) if parts else np.zeros(0)


def ks_against_histogram(
    values: Sequence[float] | np.ndarray, edges: Sequence[float], counts: Sequence[float]
) -> tuple[float, float]:
    """Two-sample KS statistic and p-value of ``values`` against the reference histogram's sample."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    ref = pseudo_sample(edges, counts)
    if v.size < 2 or ref.size < 2:
        return 0.0, 1.0
    res = sps.ks_2samp(v, ref, method="asymp")
    return float(res.statistic), float(res.pvalue)


def mean_shift(values: Sequence[float] | np.ndarray, ref_mean: float, ref_std: float) -> float:
    """(window mean - reference mean) in reference standard deviations (signed)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0
    return float((v.mean() - ref_mean) / max(ref_std, 1e-9))


def categorical_test(ref_shares: Mapping[str, float], observed: Mapping[str, int]) -> tuple[float, float]:
    """(PSI, chi-square p-value) of observed category counts against reference shares."""
    cats = sorted(set(ref_shares) | set(observed))
    e = np.array([max(float(ref_shares.get(c, 0.0)), EPS) for c in cats])
    o = np.array([float(observed.get(c, 0)) for c in cats])
    n = o.sum()
    if n <= 0 or len(cats) < 2:
        return 0.0, 1.0
    expected = e / e.sum() * n
    p = float(sps.chisquare(o, expected).pvalue)
    return psi(e, o), p


def rate_test(k: int, n: int, p0: float) -> float:
    """Two-sided binomial p-value of ``k`` events in ``n`` trials against the reference rate ``p0``."""
    if n <= 0:
        return 1.0
    p0 = min(max(p0, EPS), 1 - EPS)
    return float(sps.binomtest(k, n, p0).pvalue)


@dataclass(frozen=True)
class NumericResult:
    """The numbers of one numeric statistic in one check."""

    psi: float
    ks_stat: float
    ks_p: float
    shift: float
    window_mean: float
    ref_mean: float
    n: int

    def tripped(self, psi_threshold: float, p_value: float, shift_sigma: float) -> bool:
        """Significant (KS) AND large (PSI or mean shift): both, so neither noise nor tiny shifts alarm."""
        return self.ks_p < p_value and (self.psi > psi_threshold or abs(self.shift) > shift_sigma)

    def as_dict(self) -> dict[str, float]:
        return {
            "psi": round(self.psi, 4),
            "ks_stat": round(self.ks_stat, 4),
            "ks_p": float(f"{self.ks_p:.3g}"),
            "shift_sigma": round(self.shift, 3),
            "window_mean": round(self.window_mean, 4),
            "ref_mean": round(self.ref_mean, 4),
            "n": self.n,
        }


def compare_numeric(values: Sequence[float] | np.ndarray, ref: Mapping[str, object]) -> NumericResult | None:
    """All numbers of one statistic's window against its reference histogram (None: not comparable)."""
    edges, counts = ref.get("edges"), ref.get("counts")
    if not edges or not counts:
        return None
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    c_edges, c_counts = coarsen(edges, counts)  # type: ignore[arg-type]
    ks_stat, ks_p = ks_against_histogram(v, edges, counts)  # type: ignore[arg-type]
    ref_mean = float(ref.get("mean", float(np.mean(pseudo_sample(edges, counts)))))  # type: ignore[arg-type]
    ref_std = float(ref.get("std", 0.0))  # type: ignore[arg-type]
    return NumericResult(
        psi=psi(c_counts, bin_counts(v, c_edges)),
        ks_stat=ks_stat,
        ks_p=ks_p,
        shift=mean_shift(v, ref_mean, ref_std),
        window_mean=float(v.mean()),
        ref_mean=ref_mean,
        n=int(v.size),
    )
