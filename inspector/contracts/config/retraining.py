"""Retraining jobs: the queue, the gates a candidate must pass, the data it learns from, validation."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from inspector.contracts.config.base import Section


class JobsSection(Section):
    queue: str = Field("training", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="RQ queue of retraining jobs.")
    auto_promote: bool = Field(False, description="Promote a candidate that passes every gate without approval.")
    regression_tolerance: float = Field(0.01, ge=0, le=1, description="Allowed drop of the held-out metric.")
    recall_floor: float = Field(0.85, ge=0, le=1, description="Per-defect-class recall floor.")
    false_reject_ceiling: float = Field(0.02, ge=0, le=1, description="Largest false-reject rate on good parts.")
    job_timeout_s: int = Field(3600, ge=10, description="Longest a retraining job may run.")
    recall_floors: dict[str, float] = Field(
        default_factory=dict,
        description="Per-defect-class recall floors overriding recall_floor (class name -> floor).",
    )
    retries: int = Field(1, ge=0, le=10, description="RQ retries of a job whose worker died or that raised.")
    retrain_dedupe_s: float = Field(
        60, ge=0, le=86_400, description="Retrain requests within this time of the last one are dropped."
    )
    base_data: Path | None = Field(
        None,
        description="Base training data in the anomaly layout (train/good, test/<class>); test/ is the fixed held-out set.",
    )
    anomaly_image_size: int = Field(
        256, ge=64, le=1024, description="Input size (square) of the retrained anomaly model."
    )
    train_images: int = Field(
        800,
        ge=4,
        le=100_000,
        description="Most base good frames (evenly spaced) the retraining fits on; every 5th sets "
        "the anomaly threshold (800: all of magnetic_tile's 759, 152 threshold frames).",
    )
    heldout_limit: int | None = Field(
        None, ge=4, description="Evenly spaced subset of the held-out set (None: all of it)."
    )
    classifier_recipe: Path | None = Field(
        None,
        description="Classifier recipe YAML of retrained combined/classification packages (unset: the built-in "
        "trainer.retrain.RETRAIN_RECIPE); its image_size is replaced by anomaly_image_size.",
    )
    min_class_frames: int = Field(
        10,
        ge=3,
        le=100_000,
        description="Fewest labelled training frames of a defect class for the retrained "
        "classifier to learn it as a class (rarer classes are left to the anomaly scorer).",
    )
    calibration_images: int = Field(
        128,
        ge=100,
        le=10_000,
        description="Training frames (evenly spaced) that calibrate the INT8 candidate of a retraining.",
    )
    min_gate_frames: int = Field(
        10, ge=1, le=100_000, description="Fewest good and fewest defect frames a gate set needs."
    )
    validation_interval_s: float = Field(
        3600, ge=0, description="Period of the held-out validation job under `jobs worker --with-scheduler` (0: off)."
    )
    worker_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="CPU niceness of `inspector jobs worker`: retraining must never starve the "
        "line's inspection workers on a shared machine (0: same priority).",
    )
    collect_frames: int = Field(50, ge=4, le=10_000, description="Frames collected after a camera or lighting change.")
    validation_window_s: float = Field(
        86_400,
        gt=0,
        le=90 * 86_400,
        description="Periodic validation also scores the frames labelled in this last window.",
    )
    validation_min_frames: int = Field(
        20,
        ge=1,
        le=100_000,
        description="Fewest labelled frames in the window for its check to run (else skipped, and said so).",
    )
    alarm_max_age_s: float = Field(
        86_400,
        gt=0,
        le=30 * 86_400,
        description="The retrain trigger acknowledges without acting a DRIFT_ALARM older than this.",
    )
