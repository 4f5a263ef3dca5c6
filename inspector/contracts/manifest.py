"""The model package manifest: what a station needs to run, check and trust a model.

A package is a folder holding ``manifest.json`` and the files it lists with their sha256:

    model.onnx          fp32 graph: input ``image`` [B,3,H,W] float32, outputs per ``outputs``
    model.int8.onnx     optional INT8 (QDQ) graph, kept only if it passed its accuracy and speed gate
    canary/*.png        frames the worker runs before swapping the package in
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from inspector.contracts.lifecycle import GateReport, LineMetrics

MANIFEST_NAME = "manifest.json"
PACKAGE_FORMAT = "inspector-package"
PACKAGE_FORMAT_VERSION = 1


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Preprocess(Strict):
    size: tuple[int, int] = Field(description="Network input (height, width).")
    resize: Literal["stretch", "letterbox"] = "stretch"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    color: Literal["rgb", "gray"] = Field("rgb", description="gray: the image is made grey, then copied to 3 channels.")


class Outputs(Strict):
    class_probs: str | None = Field(None, description="Output name of calibrated class probabilities [B,C].")
    anomaly_score: str | None = Field(None, description="Output name of raw image anomaly scores [B].")
    anomaly_map: str | None = Field(None, description="Output name of the anomaly map [B,1,h,w] (raw units).")


class ModelFiles(Strict):
    fp32: str = "model.onnx"
    int8: str | None = None
    recommended: Literal["fp32", "int8"] = "fp32"
    input_name: str = "image"
    outputs: Outputs = Field(default_factory=Outputs)


class AnomalySpec(Strict):
    """Raw anomaly scores are normalised affinely: ``score_origin`` (the median score of held-out good parts)
    maps to 0 and ``threshold`` to 1. Distances never start at 0, so raw / threshold would squeeze every good
    part into the review band just below 1."""

    threshold: float = Field(description="Raw score at which a part is anomalous (normalised 1.0).")
    score_origin: float | None = Field(None, description="Raw score that normalises to 0 (median of good parts); "
                                                         "unset: 0.")
    threshold_method: str = Field("good_quantile", description="good_quantile or f1_optimal.")
    target_false_reject: float | None = None
    map_threshold: float | None = Field(None, description="Raw map value marking a defect region.")
    score_min: float | None = None
    score_max: float | None = None

    @property
    def origin(self) -> float:
        o = self.score_origin or 0.0
        return o if o < self.threshold else 0.0

    def normalise(self, raw: float) -> float:
        """Normalised score: 0 = a typical good part, 1.0 = the threshold."""
        return (raw - self.origin) / (self.threshold - self.origin)


class Canary(Strict):
    file: str
    expected: Literal["PASS", "FAIL", "REVIEW", "ERROR", "ANY"] = "ANY"


class Manifest(Strict):
    format: Literal["inspector-package"] = PACKAGE_FORMAT
    format_version: int = PACKAGE_FORMAT_VERSION
    name: str
    version: str
    created_at: float
    task: Literal["classification", "anomaly", "combined"]
    model: ModelFiles
    preprocess: Preprocess
    class_names: list[str] | None = None
    good_class: str | None = "good"
    temperature: float | None = None
    anomaly: AnomalySpec | None = None
    files: dict[str, str] = Field(default_factory=dict, description="Relative path -> sha256 of every file.")
    canaries: list[Canary] = Field(default_factory=list)
    drift_reference: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict, description="Data snapshot hash, splits, counts.")
    augmentation: dict[str, Any] = Field(default_factory=dict)
    architecture: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict, description="Held-out metrics of the exported package.")
    parity: dict[str, Any] = Field(default_factory=dict, description="ONNX vs PyTorch comparison.")
    benchmark: dict[str, Any] = Field(default_factory=dict)
    checklist: dict[str, Any] = Field(default_factory=dict)
    line_metrics: dict[str, LineMetrics] = Field(
        default_factory=dict, description="What the line would do with this package, per frame set (heldout, recent, "
                                          "confirmed), measured through the station runtime and decide() when built.")
    gate: GateReport | None = Field(None, description="Promotion gate of a retrained candidate (rows: candidate beside "
                                                      "incumbent on the fixed held-out set and recent labels).")
    memory_budget_mb: float | None = None
    latency_target_ms: float | None = None
    target_hardware: str | None = None
