"""What a model package being built is (``trainer.package``): its spec, its file names, its error, and the
held-out frames as the package's input tensor and class labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from inspector.contracts.errors import InspectorError
from inspector.contracts.labels import GOOD_LABEL
from inspector.contracts.manifest import AnomalySpec, Preprocess
from inspector.models.preprocess import Preprocessor
from trainer.evaluate import EvalSet

FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
BF16_FILE = "model.bf16.onnx"  # anomaly packages: the scorer fitted on OpenVINO's bf16 features (trainer.bf16_refit)


class PackagingError(InspectorError):
    """The package could not be built (bad inputs, a folder in the way, a failed verification)."""


@dataclass
class PackageSpec:
    """What the manifest says about the model beyond the files (all figures are measured while building)."""

    name: str
    task: Literal["classification", "anomaly", "combined"]
    preprocess: Preprocess
    class_names: list[str] | None = None
    good_class: str | None = GOOD_LABEL
    temperature: float | None = None
    anomaly: AnomalySpec | None = None
    data: dict[str, Any] = field(default_factory=dict)
    augmentation: dict[str, Any] = field(default_factory=dict)
    architecture: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    latency_target_ms: float | None = None
    memory_budget_mb: float | None = None
    target_hardware: str | None = None


def preprocess_frames(spec: PackageSpec, images: list[np.ndarray]) -> np.ndarray:
    """Frames as the package's input tensor (the station's own preprocessing)."""
    return Preprocessor(spec.preprocess).batch(images)


def heldout_class_labels(spec: PackageSpec, held: EvalSet) -> np.ndarray | None:
    """Held-out class indices for the INT8 gate's accuracy (None when the labels are not the classes)."""
    if spec.class_names and all(n in spec.class_names for n in held.label_names):
        return np.array([spec.class_names.index(n) for n in held.label_names])
    return None if spec.class_names else held.is_defect
