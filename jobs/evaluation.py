"""Score a package the way the line runs it (InspectionModel + decide()) and summarise what the line did.

Line metrics are computed from the decisions the station would take (reject = anything but PASS), so
candidate and incumbent are compared on exactly what matters on the line:

    {"n", "n_good", "n_defect", "false_reject_rate", "recall": {defect class: share rejected},
     "recall_all", "balanced_accuracy"}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inspector.contracts.config import StationConfig
from inspector.contracts.errors import FrameError
from inspector.contracts.messages import ImageStats
from inspector.decision import decide
from inspector.models.image_stats import image_stats
from inspector.models.inference import InspectionModel
from inspector.runtime.package import load_package

GOOD = "good"


@dataclass
class Scored:
    """Per-frame outputs of one package on a list of frames."""

    decisions: list[str]
    class_probs: list[dict[str, float] | None]
    anomaly_scores: list[float | None]
    stats: list[ImageStats]


def score_package(path: str | Path, images: Sequence[np.ndarray], cfg: StationConfig) -> Scored:
    """Run ``images`` (uint8 RGB) through the package with the station's runtime and decision policy."""
    model = InspectionModel(load_package(path), cfg.runtime, cfg.runtime.engine_cache_dir or cfg.data_dir / "engines",
                            max_batch=cfg.worker.max_batch)
    out = Scored([], [], [], [])
    try:
        for i in range(0, len(images), model.max_batch):
            for res in model.infer(list(images[i:i + model.max_batch])):
                _append(out, res, cfg)
    finally:
        model.close()
    out.stats = [image_stats(img) for img in images]
    return out


def _append(out: Scored, res: Any, cfg: StationConfig) -> None:
    if isinstance(res, FrameError):
        out.decisions.append("ERROR")
        out.class_probs.append(None)
        out.anomaly_scores.append(None)
        return
    out.decisions.append(decide(res.class_probs, res.anomaly_score, cfg.policy).decision.value)
    out.class_probs.append(res.class_probs)
    out.anomaly_scores.append(res.anomaly_score)


def line_metrics(decisions: Sequence[str], labels: Sequence[str], good: str = GOOD) -> dict[str, Any]:
    """What the line did with labelled frames: false rejects of good parts, recall per defect class."""
    if len(decisions) != len(labels):
        raise ValueError(f"{len(decisions)} decisions for {len(labels)} labels")
    rejected = np.array([d != "PASS" for d in decisions])
    lab = np.array(list(labels))
    is_good = lab == good
    recall = {c: float(rejected[lab == c].mean()) for c in sorted(set(labels) - {good})}
    frr = float(rejected[is_good].mean()) if is_good.any() else None
    recall_all = float(rejected[~is_good].mean()) if (~is_good).any() else None
    parts = [x for x in ((1 - frr) if frr is not None else None, recall_all) if x is not None]
    return {"n": len(labels), "n_good": int(is_good.sum()), "n_defect": int((~is_good).sum()),
            "false_reject_rate": frr, "recall": recall, "recall_all": recall_all,
            "balanced_accuracy": float(np.mean(parts)) if parts else None}
