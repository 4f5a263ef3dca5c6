"""The drift reference of a model package (``trainer.package``): image statistics, classifier confidence and
class mix, and normalised anomaly scores of the held-out good frames, computed by the station's own code.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from inspector.contracts.labels import GOOD_LABEL
from inspector.drift.reference import histogram
from trainer.evaluate import EvalSet
from trainer.network import OUTPUT_PROBS, OUTPUT_SCORE
from trainer.package_spec import PackageSpec

HIST_BINS = 20


def _stat_rows(images: list[np.ndarray]) -> dict[str, list[float]]:
    from inspector.models.image_stats import image_stats  # the station's own code: reference == live

    rows: dict[str, list[float]] = {}
    for img in images:
        for k, v in image_stats(img).model_dump().items():
            rows.setdefault(k, []).append(float(v))
    return rows


def drift_reference(spec: PackageSpec, held: EvalSet, outs: dict[str, np.ndarray]) -> dict[str, Any]:
    """Reference statistics of held-out good frames (all frames when no class is 'good')."""
    good = np.array([n == (spec.good_class or GOOD_LABEL) for n in held.label_names])
    if not good.any():
        good = np.ones(len(held.images), bool)
    ref: dict[str, Any] = {"n_frames": int(good.sum()), "frames": "held-out good" if not good.all() else "held-out"}
    ref["image_stats"] = {
        k: histogram(v, HIST_BINS) for k, v in _stat_rows([held.images[i] for i in np.flatnonzero(good)]).items()
    }
    if OUTPUT_PROBS in outs:
        probs = outs[OUTPUT_PROBS]
        ref["classifier_confidence"] = histogram(probs.max(1), HIST_BINS, 0.0, 1.0)
        names = spec.class_names or [f"class_{i}" for i in range(probs.shape[1])]
        pred = probs.argmax(1)
        ref["class_mix"] = {n: float((pred == i).mean()) for i, n in enumerate(names)}
        ref["class_mix_labels"] = {n: float(np.mean([x == n for x in held.label_names])) for n in names}
    if OUTPUT_SCORE in outs and spec.anomaly is not None:
        norm = np.array([spec.anomaly.normalise(float(v)) for v in outs[OUTPUT_SCORE][good]])
        ref["anomaly_score_good"] = histogram(
            norm, HIST_BINS, min(-1.0, float(norm.min())), max(2.0, float(norm.max()))
        )
    return ref
