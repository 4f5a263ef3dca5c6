"""Packages side by side (``inspector bench --versus OTHER``): full inspection of one frame (preprocessing,
the graph, post-processing; batch 1) by each package, timed in turns in one run, with each package's
held-out metrics from its manifest beside the time. This is how a new default is measured against the one it
replaces: the ratio comes from one run on one machine, the accuracy from each package's own evaluation."""

from __future__ import annotations

from typing import Any

import numpy as np

from inspector.bench.timing import PACED_GAP_S, interleaved
from inspector.contracts.config import RuntimeSection
from inspector.models.inference import InspectionModel
from inspector.runtime.package import ModelPackage

#: Held-out metrics shown beside each package's time, when its manifest has them (``metrics.heldout``).
METRICS = ("image_auroc", "recall", "false_reject_rate", "accuracy")


def versus(packages: dict[str, ModelPackage], frame: np.ndarray, threads: int, runs: int) -> list[dict[str, Any]]:
    """One row per package, the first one the reference: p50 / p99 of ``InspectionModel.infer([frame])`` at the
    backend and precision each package recorded (``runtime.backend: auto``), timed interleaved warm (frames back to
    back) and paced (each frame after a camera-rate idle gap), the speed ratios to the first, and the held-out
    metrics of its manifest."""
    models = {name: InspectionModel(pkg, RuntimeSection(threads=threads)) for name, pkg in packages.items()}
    try:
        for m in models.values():
            m.warmup()
        fns = {name: (lambda m=m: m.infer([frame])) for name, m in models.items()}
        times = interleaved(fns, runs, block=4, settle_s=0.05)
        paced = interleaved(fns, runs, block=4, settle_s=0.05, gap_s=PACED_GAP_S)
    finally:
        for m in models.values():
            m.close()
    first, first_paced = next(iter(times.values()))["p50_ms"], next(iter(paced.values()))["p50_ms"]
    rows = []
    for name, pkg in packages.items():
        held_out = pkg.manifest.metrics or {}
        rows.append(
            {
                "package": name,
                "version": pkg.version,
                "runs_at": f"{pkg.manifest.model.backend} {pkg.manifest.model.recommended}",
                "p50_ms": times[name]["p50_ms"],
                "p99_ms": times[name]["p99_ms"],
                "x_vs_first": round(first / times[name]["p50_ms"], 2) if times[name]["p50_ms"] else None,
                "paced_p50_ms": paced[name]["p50_ms"],
                "x_paced": round(first_paced / paced[name]["p50_ms"], 2) if paced[name]["p50_ms"] else None,
                **{k: _metric(held_out, k) for k in METRICS},
            }
        )
    return rows


def _metric(metrics: dict[str, Any], key: str) -> float | None:
    """A held-out metric of the manifest (``metrics.heldout.anomaly`` / ``.classifier``); None where absent."""
    held = metrics.get("heldout") or {}
    anomaly, classifier = held.get("anomaly") or {}, held.get("classifier") or {}
    if key == "recall":
        escape = anomaly.get("escape_rate")
        value = None if escape is None else 1 - escape
    else:
        value = anomaly.get(key, classifier.get(key))
    return round(float(value), 4) if isinstance(value, int | float) else None
