"""The model package manifest: what a station needs to run, check and trust a model.

A package is a folder holding ``manifest.json`` and the files it lists with their sha256:

    model.onnx          fp32 graph: input ``image`` [B,3,H,W] float32, outputs per ``outputs``
    model.int8.onnx     optional INT8 (QDQ) graph, kept only if it passed its accuracy and speed gate
    canary/*.png        frames the worker runs before swapping the package in
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from inspector.contracts.labels import GOOD_LABEL
from inspector.contracts.lifecycle import GateReport, LineMetrics

MANIFEST_NAME = "manifest.json"
PACKAGE_FORMAT: Final = "inspector-package"
PACKAGE_FORMAT_VERSION = 1


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Preprocess(Strict):
    size: tuple[int, int] = Field(description="Network input (height, width).")
    resize: Literal["stretch", "letterbox"] = "stretch"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    color: Literal["rgb", "gray"] = Field("rgb", description="gray: the image is made grey, then copied to 3 channels.")
    roi: tuple[int, int, int, int] | None = Field(
        None,
        description="Region of interest (x, y, width, height) in camera-frame pixels, cropped before the resize; "
        "a frame it does not fit in is an ERROR verdict. Unset: the whole frame.",
    )
    ignore: list[tuple[float, float, float, float]] = Field(
        default_factory=list,
        max_length=64,
        description="Masked rectangles (left, top, right, bottom) as fractions of the network input, filled with the "
        "mean colour after the resize (they normalise to 0): fixtures, background. Training, evaluation "
        "and the station see the same pixels.",
    )

    @field_validator("roi")
    @classmethod
    def _roi_inside(cls, roi: tuple[int, int, int, int] | None) -> tuple[int, int, int, int] | None:
        if roi is not None:
            x, y, w, h = roi
            if x < 0 or y < 0 or w < 8 or h < 8:
                raise ValueError(
                    f"roi {list(roi)} is not a region: write [x, y, width, height] in frame pixels, "
                    "x and y >= 0, width and height >= 8"
                )
        return roi

    @field_validator("ignore")
    @classmethod
    def _ignore_inside(cls, rects: list[tuple[float, float, float, float]]) -> list[tuple[float, float, float, float]]:
        for i, (left, top, right, bottom) in enumerate(rects):
            if not (0 <= left < right <= 1 and 0 <= top < bottom <= 1):
                raise ValueError(
                    f"ignore[{i}] {[left, top, right, bottom]} is outside the image: write [left, top, "
                    "right, bottom] as fractions of the image, 0 <= left < right <= 1, 0 <= top < bottom <= 1"
                )
        return rects


class Outputs(Strict):
    class_probs: str | None = Field(None, description="Output name of calibrated class probabilities [B,C].")
    anomaly_score: str | None = Field(None, description="Output name of raw image anomaly scores [B].")
    anomaly_map: str | None = Field(None, description="Output name of the anomaly map [B,1,h,w] (raw units).")
    classifier_decides: bool = Field(
        True,
        description="False: class_probs only name the defect class of a part the anomaly score rejects; the "
        "anomaly score is then a fused defect score that already weighs the classifier's evidence.",
    )


class ModelFiles(Strict):
    fp32: str = "model.onnx"
    int8: str | None = None
    bf16: str | None = Field(
        None,
        description="bf16 on OpenVINO: the network whose anomaly scorer was fitted on OpenVINO's bf16 features, "
        "on the fp32 graph's raw scale (an fp32 ONNX graph compiled in bf16; kept by the precision gate); unset: "
        "bf16 runs the fp32 graph.",
    )
    recommended: Literal["fp32", "int8", "bf16"] = "fp32"
    backend: Literal["onnxruntime", "openvino", "tensorrt"] = Field(
        "onnxruntime", description="Backend on which the precision gate measured and kept ``recommended``."
    )
    f32_until: str | None = Field(
        None,
        description="bf16 on OpenVINO: the graph up to this tensor runs in f32 and the rest in bf16 (mixed "
        "precision, kept by the precision gate); unset: the whole graph in bf16.",
    )
    input_name: str = "image"
    outputs: Outputs = Field(default_factory=Outputs)


class AnomalySpec(Strict):
    """Raw anomaly scores are normalised affinely: ``score_origin`` (the median score of held-out good parts)
    maps to 0 and ``threshold`` to 1. Distances never start at 0, so raw / threshold would squeeze every good
    part into the review band just below 1."""

    threshold: float = Field(description="Raw score at which a part is anomalous (normalised 1.0).")
    score_origin: float | None = Field(
        None, description="Raw score that normalises to 0 (median of good parts); unset: 0."
    )
    threshold_method: str = Field("good_quantile", description="good_quantile or f1_optimal.")
    target_false_reject: float | None = None
    map_threshold: float | None = Field(None, description="Raw map value marking a defect region.")
    score_min: float | None = None
    score_max: float | None = None
    review_margin: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="The policy's anomaly review margin the threshold was "
        "placed for: the good-part quantile of the false-reject target sits at normalised "
        "1 - review_margin, so REVIEW (which rejects) stays inside the target.",
    )

    @classmethod
    def placed(cls, good_quantile: float, origin: float, review_margin: float, **kw: Any) -> AnomalySpec:
        """A spec whose line rejects exactly the scores above ``good_quantile`` (raw).

        The decision rejects REVIEW, and REVIEW starts at normalised ``1 - margin``: a threshold placed at the
        good-part quantile itself would reject every good part within the margin below it too (measured on
        magnetic_tile: a 2 % target gave 12 % false rejects at the line). So the quantile maps to ``1 - margin``
        and the threshold (normalised 1.0) sits above it; FAIL starts at ``1 + margin``."""
        o = origin if origin < good_quantile else 0.0
        threshold = o + (good_quantile - o) / (1.0 - review_margin)
        return cls(threshold=threshold, score_origin=origin, review_margin=review_margin, **kw)

    @property
    def reject_raw(self) -> float:
        """Raw score above which the line rejects (normalised ``1 - review_margin``)."""
        return self.origin + (1.0 - self.review_margin) * (self.threshold - self.origin)

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
    good_class: str | None = GOOD_LABEL
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
        default_factory=dict,
        description="What the line would do with this package, per frame set (heldout, recent, "
        "confirmed), measured through the station runtime and decide() when built.",
    )
    gate: GateReport | None = Field(
        None,
        description="Promotion gate of a retrained candidate (rows: candidate beside "
        "incumbent on the fixed held-out set and recent labels).",
    )
    memory_budget_mb: float | None = None
    latency_target_ms: float | None = None
    target_hardware: str | None = None
