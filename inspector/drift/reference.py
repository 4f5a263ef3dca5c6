"""The drift reference stored in a package manifest (``Manifest.drift_reference``) and how to make it.

Schema (version 1; JSON, every key optional except ``schema``)::

    {
      "schema": 1,
      "n_frames": 193,                       # frames the reference was computed from
      "frames": "held-out good",             # what they were
      "image_stats": {                       # one histogram per ImageStats field
        "brightness": HIST, "contrast": HIST, "sharpness": HIST, "mean_r": HIST, "mean_g": HIST, "mean_b": HIST
      },
      "classifier_confidence": HIST,         # top class probability
      "class_mix": {"good": 0.97, "defect": 0.03},   # predicted-class shares
      "anomaly_score_good": HIST,            # normalised anomaly scores (1.0 = threshold) of parts judged good
      "review_rate": 0.02                    # share of REVIEW decisions
    }

    HIST = {"n": int, "mean": float, "std": float, "edges": [b+1 floats], "counts": [b ints],
            "p01": float, "p50": float, "p99": float}

This is the layout ``trainer/package.py`` already writes; :func:`reference_from_samples` is the one
function that builds it from per-frame values (the packaging code and the maintenance refit both call it),
and :func:`parse_reference` reads any version-1 dict (unknown keys are ignored, missing parts are skipped).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inspector.contracts.messages import ImageStats, Verdict

REFERENCE_SCHEMA = 1
HIST_BINS = 20
IMAGE_STATS = tuple(ImageStats.model_fields)


def histogram(
    values: Iterable[float], bins: int = HIST_BINS, lo: float | None = None, hi: float | None = None
) -> dict[str, Any]:
    """A HIST dict of the finite ``values`` (range: their min..max unless given)."""
    v = np.asarray(list(values), dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"n": 0}
    lo = float(v.min()) if lo is None else lo
    hi = float(v.max()) if hi is None else hi
    hi = hi if hi > lo else lo + 1e-6
    counts, edges = np.histogram(np.clip(v, lo, hi), bins=bins, range=(lo, hi))
    return {
        "n": int(v.size),
        "mean": float(v.mean()),
        "std": float(v.std()),
        "edges": edges.tolist(),
        "counts": counts.tolist(),
        "p01": float(np.quantile(v, 0.01)),
        "p50": float(np.median(v)),
        "p99": float(np.quantile(v, 0.99)),
    }


def _stat_dict(s: ImageStats | Mapping[str, float]) -> Mapping[str, float]:
    return s.model_dump() if isinstance(s, ImageStats) else s


def reference_from_samples(
    image_stats: Sequence[ImageStats | Mapping[str, float]],
    class_probs: Sequence[Mapping[str, float] | None] | None = None,
    anomaly_scores: Sequence[float | None] | None = None,
    decisions: Sequence[str] | None = None,
    frames: str = "",
    bins: int = HIST_BINS,
) -> dict[str, Any]:
    """Build a version-1 drift reference from per-frame values of frames that represent normal production.

    ``image_stats``: one ImageStats (or dict) per frame, from ``inspector.models.image_stats.image_stats``;
    ``class_probs``: calibrated class probabilities per frame (None where no classifier);
    ``anomaly_scores``: NORMALISED anomaly scores (1.0 = threshold); ``decisions``: PASS / FAIL / REVIEW /
    ERROR per frame (the anomaly reference then uses PASS frames only, and the review rate is recorded).
    """
    ref: dict[str, Any] = {"schema": REFERENCE_SCHEMA, "n_frames": len(image_stats), "frames": frames}
    rows = [_stat_dict(s) for s in image_stats]
    if rows:
        ref["image_stats"] = {k: histogram([r[k] for r in rows if k in r], bins) for k in IMAGE_STATS}
    probs = [p for p in (class_probs or []) if p]
    if probs:
        ref["classifier_confidence"] = histogram([max(p.values()) for p in probs], bins, 0.0, 1.0)
        names = sorted({k for p in probs for k in p})
        top = [max(p, key=p.get) for p in probs]  # type: ignore[arg-type]
        ref["class_mix"] = {n: top.count(n) / len(top) for n in names}
    if anomaly_scores is not None:
        judged_good = [d == "PASS" for d in decisions] if decisions is not None else [True] * len(anomaly_scores)
        good = [s for s, ok in zip(anomaly_scores, judged_good, strict=True) if ok and s is not None]
        if good:
            ref["anomaly_score_good"] = histogram(good, bins, min(-1.0, float(min(good))), max(2.0, float(max(good))))
    if decisions:
        ref["review_rate"] = sum(d == "REVIEW" for d in decisions) / len(decisions)
    return ref


def reference_from_verdicts(verdicts: Sequence[Verdict], frames: str = "", bins: int = HIST_BINS) -> dict[str, Any]:
    """The reference of verdicts (frames under the conditions to monitor; ERROR verdicts are left out)."""
    ok = [v for v in verdicts if v.image_stats is not None]
    return reference_from_samples(
        [v.image_stats for v in ok if v.image_stats is not None],  # every one: ok holds only those with stats
        [v.class_probs for v in ok],
        [v.anomaly_score for v in ok],
        [v.decision.value for v in ok],
        frames,
        bins,
    )


@dataclass
class DriftReference:
    """A parsed reference: numeric histograms by statistic name, the class mix and the review rate."""

    numeric: dict[str, dict[str, Any]] = field(default_factory=dict)
    class_mix: dict[str, float] = field(default_factory=dict)
    review_rate: float | None = None
    n_frames: int = 0

    @property
    def empty(self) -> bool:
        return not self.numeric and not self.class_mix and self.review_rate is None


def _usable(hist: Any) -> bool:
    return isinstance(hist, Mapping) and bool(hist.get("edges")) and bool(hist.get("counts")) and hist.get("n", 1) > 0


def parse_reference(data: Mapping[str, Any] | None) -> DriftReference:
    """Read a version-1 reference dict; statistics it lacks are simply not monitored."""
    data = data or {}
    ref = DriftReference(n_frames=int(data.get("n_frames", 0) or 0))
    for name, hist in (data.get("image_stats") or {}).items():
        if _usable(hist):
            ref.numeric[name] = dict(hist)
    for name in ("classifier_confidence", "anomaly_score_good"):
        if _usable(data.get(name)):
            ref.numeric[name] = dict(data[name])
    ref.class_mix = {str(k): float(v) for k, v in (data.get("class_mix") or {}).items()}
    if data.get("review_rate") is not None:
        ref.review_rate = float(data["review_rate"])
    return ref
