"""Inference: workers, the runtime that runs the model, the model package, the decision policy."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from inspector.contracts.config.base import Section
from inspector.contracts.labels import GOOD_LABEL

ExecutionProvider = Literal["tensorrt", "cuda", "cpu"]
"""An ONNX Runtime execution provider the station can ask for."""


class WorkerSection(Section):
    group: str = Field(
        "inspector", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="Consumer group of inspection workers."
    )
    max_batch: int = Field(8, ge=1, le=256, description="Largest micro-batch.")
    max_wait_ms: float = Field(5.0, ge=0, le=1000, description="Longest wait to fill a micro-batch.")
    max_deliveries: int = Field(3, ge=1, le=100, description="Deliveries before a frame is dead-lettered.")
    reclaim_idle_ms: int = Field(
        3000, ge=100, le=3_600_000, description="Pending entries idle this long are reclaimed."
    )
    heartbeat_ttl_s: float = Field(3.0, gt=0, le=600, description="TTL of the worker heartbeat key.")
    max_image_pixels: int = Field(40_000_000, ge=10_000, description="Frames larger than this are refused (bombs).")
    expire_ms: float = Field(
        5000,
        ge=0,
        le=3_600_000,
        description="Frames older than this when read get an ERROR verdict without inference (0: never).",
    )
    reload_poll_s: float = Field(1.0, gt=0, le=600, description="How often the worker checks for a new active model.")


class RuntimeSection(Section):
    backend: Literal["auto", "onnxruntime", "openvino", "tensorrt"] = Field(
        "auto",
        description="Inference backend. auto: the one the package's precision gate kept (model.backend) when "
        "it is installed here, else onnxruntime.",
    )
    providers: list[ExecutionProvider] = Field(
        default_factory=lambda: list[ExecutionProvider](["cpu"]),
        min_length=1,
        description="ONNX Runtime execution providers, in order.",
    )
    threads: int = Field(2, ge=1, le=256, description="Intra-op threads of the CPU provider.")
    precision: Literal["fp32", "fp16", "bf16", "int8", "auto"] = Field(
        "auto",
        description="auto: the package's recommended precision (INT8/bf16 only if it passed its gate on the "
        "backend that runs it); bf16 needs the openvino backend, fp16 tensorrt.",
    )
    engine_cache_dir: Path | None = Field(None, description="TensorRT engine cache; default <data_dir>/engines.")


class ModelSection(Section):
    package: Path | None = Field(None, description="Model package folder. Unset: the station's active package.")


class PolicySection(Section):
    pass_confidence: float = Field(0.90, ge=0.5, le=1.0, description="Classifier 'good' probability needed to pass.")
    fail_confidence: float = Field(0.90, ge=0.5, le=1.0, description="Defect probability needed for a sure FAIL.")
    anomaly_review_margin: float = Field(
        0.15, ge=0, le=1, description="Normalised anomaly scores within 1±margin of the threshold go to REVIEW."
    )
    on_disagreement: Literal["review", "fail"] = Field("review", description="Verdict when the two models disagree.")
    reject_review: bool = Field(True, description="REVIEW rejects the part on the line (fail safe).")
    reject_error: bool = Field(True, description="ERROR rejects the part on the line (fail safe).")
    good_class: str = Field(GOOD_LABEL, description="Name of the classifier's defect-free class.")
