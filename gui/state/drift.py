"""Drift charts without Qt: rolling series of verdict statistics against the active model's reference bands."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from inspector.contracts.messages import Decision, Verdict
from inspector.drift.reference import DriftReference

DRIFT_STATS = ("brightness", "contrast", "sharpness", "confidence", "anomaly_good")
DRIFT_TITLES = {
    "brightness": "Brightness",
    "contrast": "Contrast",
    "sharpness": "Sharpness",
    "confidence": "Top-class confidence",
    "anomaly_good": "Anomaly score (good parts)",
}


# Chart statistic -> the drift reference's statistic (``inspector.drift.reference``), the one the monitor alarms on.
REFERENCE_STATS = {
    "brightness": "brightness",
    "contrast": "contrast",
    "sharpness": "sharpness",
    "confidence": "classifier_confidence",
    "anomaly_good": "anomaly_score_good",
}
BAND_QUANTILES = ("p01", "p99")


@dataclass(frozen=True)
class Band:
    low: float
    high: float

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high


def band_of(hist: dict[str, Any]) -> Band | None:
    """The 1st..99th percentile of a reference histogram (mean ± 3 std for a histogram without quantiles)."""
    lo, hi = (hist.get(q) for q in BAND_QUANTILES)
    if lo is None or hi is None:
        if hist.get("mean") is None or hist.get("std") is None:
            return None
        lo, hi = hist["mean"] - 3 * hist["std"], hist["mean"] + 3 * hist["std"]
    return Band(float(lo), float(hi))


def bands_from_reference(ref: DriftReference) -> dict[str, Band]:
    """Bands of the chart statistics from the active package's drift reference (statistics it lacks: none)."""
    out: dict[str, Band] = {}
    for stat, ref_name in REFERENCE_STATS.items():
        hist = ref.numeric.get(ref_name)
        band = band_of(hist) if hist else None
        if band is not None:
            out[stat] = band
    return out


class DriftSeries:
    """Rolling per-statistic series from verdicts, against the bands of the ACTIVE package's drift reference.

    The bands are the 1st..99th percentiles that ``Manifest.drift_reference`` recorded for the frames the
    model was fitted and calibrated on: the very reference ``inspector.drift.monitor`` alarms on, so the chart
    and the alarms never disagree about what normal is. Bands are no longer learned from the first verdicts
    the GUI happens to see: those are whatever the line shows when the GUI starts (possibly already drifted,
    possibly another model's), which is not a reference. A package without a reference gets no band (the
    view says so). ``version``: the model version the bands belong to (the view follows the active model).
    """

    def __init__(self, maxlen: int = 600) -> None:
        self.values: dict[str, deque[float]] = {s: deque(maxlen=maxlen) for s in DRIFT_STATS}
        self.bands: dict[str, Band] = {}
        self.version: str | None = None

    def set_band(self, stat: str, low: float, high: float) -> None:
        self.bands[stat] = Band(low, high)

    def set_reference(self, version: str | None, ref: DriftReference | None) -> None:
        """Bands from ``ref`` (None: no band) for model ``version``."""
        self.version = version
        self.bands = bands_from_reference(ref) if ref is not None else {}

    def add(self, v: Verdict) -> list[str]:
        """Add one verdict; returns the statistics now outside their band."""
        out: list[str] = []
        for stat, x in self._extract(v).items():
            self.values[stat].append(x)
            band = self.bands.get(stat)
            if band is not None and not band.contains(x):
                out.append(stat)
        return out

    def _extract(self, v: Verdict) -> dict[str, float]:
        vals: dict[str, float] = {}
        if v.image_stats is not None:
            vals.update(
                brightness=v.image_stats.brightness, contrast=v.image_stats.contrast, sharpness=v.image_stats.sharpness
            )
        if v.class_probs:
            vals["confidence"] = max(v.class_probs.values())
        if v.anomaly_score is not None and v.decision is Decision.PASS:
            vals["anomaly_good"] = v.anomaly_score
        return vals
