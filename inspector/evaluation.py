"""Score frames the way the line runs them (InspectionModel + decide()) and summarise what the line did.

The one place that runs a package on a list of frames off the line (:func:`infer_frames`): the trainer's
offline package evaluation calls it directly; the trainer's candidate evaluation, the gate, periodic validation
and the camera-changed refit all call :func:`score_frames` and :func:`line_metrics`, so candidate and incumbent are compared on exactly what the station decides.
A part is rejected by the line unless its verdict is PASS (REVIEW and ERROR reject: fail safe).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inspector.contracts.config import RuntimeSection, StationConfig
from inspector.contracts.errors import FrameError
from inspector.contracts.labels import GOOD_LABEL
from inspector.contracts.lifecycle import LineMetrics
from inspector.contracts.messages import ImageStats
from inspector.decision import decide
from inspector.models.image_stats import image_stats
from inspector.models.inference import InspectionModel, ModelOutput
from inspector.runtime.package import ModelPackage, load_package


@dataclass
class Scored:
    """Per-frame outputs of one package on a list of frames (same order)."""

    decisions: list[str] = field(default_factory=list)
    class_probs: list[dict[str, float] | None] = field(default_factory=list)
    anomaly_scores: list[float | None] = field(default_factory=list)
    anomaly_raw: list[float | None] = field(default_factory=list)
    stats: list[ImageStats] = field(default_factory=list)


def infer_frames(
    package: ModelPackage,
    images: Sequence[np.ndarray],
    runtime: RuntimeSection,
    cache_dir: str | Path | None = None,
    max_batch: int = 8,
) -> list[ModelOutput | FrameError]:
    """The one way to run a package on a list of frames off the line: ``images`` (uint8 RGB) through the
    package's :class:`InspectionModel`, ``max_batch`` frames at a time, the model closed afterwards.
    One output per frame, in order; a frame the model could not score gets a :class:`FrameError`."""
    model = InspectionModel(package, runtime, cache_dir, max_batch=max_batch)
    outs: list[ModelOutput | FrameError] = []
    try:
        for i in range(0, len(images), model.max_batch):
            outs += model.infer(list(images[i : i + model.max_batch]))
    finally:
        model.close()
    return outs


def score_frames(package: str | Path | ModelPackage, images: Sequence[np.ndarray], cfg: StationConfig) -> Scored:
    """Run ``images`` (uint8 RGB) through the package with the station's runtime and decision policy."""
    pkg = package if isinstance(package, ModelPackage) else load_package(package)
    outs = infer_frames(
        pkg,
        images,
        cfg.runtime,
        cfg.runtime.engine_cache_dir or cfg.data_dir / "engines",
        max_batch=cfg.worker.max_batch,
    )
    out = Scored()
    for res in outs:
        if isinstance(res, FrameError):
            out.decisions.append("ERROR")
            out.class_probs.append(None)
            out.anomaly_scores.append(None)
            out.anomaly_raw.append(None)
            continue
        out.decisions.append(
            decide(res.class_probs, res.anomaly_score, cfg.policy, res.classifier_decides).decision.value
        )
        out.class_probs.append(res.class_probs)
        out.anomaly_scores.append(res.anomaly_score)
        out.anomaly_raw.append(res.anomaly_raw)
    out.stats = [image_stats(img) for img in images]
    return out


def line_metrics(decisions: Sequence[str], labels: Sequence[str], good: str = GOOD_LABEL) -> LineMetrics:
    """What the line did with labelled frames: false rejects of good parts, recall per defect class."""
    if len(decisions) != len(labels):
        raise ValueError(f"{len(decisions)} decisions for {len(labels)} labels")
    rejected = np.array([d != "PASS" for d in decisions], dtype=bool)
    lab = np.array(list(labels))
    is_good = lab == good
    classes = sorted(set(labels) - {good})
    recall = {c: float(rejected[lab == c].mean()) for c in classes}
    frr = float(rejected[is_good].mean()) if is_good.any() else None
    recall_all = float(rejected[~is_good].mean()) if (~is_good).any() else None
    parts = [x for x in ((1 - frr) if frr is not None else None, recall_all) if x is not None]
    return LineMetrics(
        n=len(labels),
        n_good=int(is_good.sum()),
        n_defect=int((~is_good).sum()),
        false_reject_rate=frr,
        recall=recall,
        n_per_class={c: int((lab == c).sum()) for c in classes},
        recall_all=recall_all,
        balanced_accuracy=float(np.mean(parts)) if parts else None,
        errors=sum(d == "ERROR" for d in decisions),
    )
