"""Statuses stored in the system of record (and the job states kept in Redis), as string enums.

A :class:`~enum.StrEnum` member *is* its string (``ReviewStatus.PENDING == "pending"``), so the database
columns store exactly the values they stored before these enums existed: no migration.
"""

from __future__ import annotations

from enum import StrEnum


class ReviewStatus(StrEnum):
    """Where a review item stands in the labelling queue (``review_items.status``)."""

    PENDING = "pending"
    """Waiting for a labeller (also an item whose lease expired)."""
    LEASED = "leased"
    """Held by one labeller until ``lease_expires``; no one else is offered it."""
    LABELLED = "labelled"
    """Labelled; ``leased_by`` keeps who labelled it."""


class ModelStatus(StrEnum):
    """Where a model version stands in its lifecycle (``model_versions.status``).

    See :mod:`inspector.contracts.lifecycle` for the transitions and who may make them.
    """

    CANDIDATE = "candidate"
    GATED_PASS = "gated_pass"
    GATED_FAIL = "gated_fail"
    APPROVED = "approved"
    ACTIVE = "active"
    RETIRED = "retired"
    ROLLED_BACK = "rolled_back"


class RetrainRequestStatus(StrEnum):
    """What became of a request to retrain or refit (``jobs.trigger.RetrainRequest.status``)."""

    ENQUEUED = "enqueued"
    """A new job is queued; its id is returned."""
    RUNNING = "running"
    """The station's retrain lock is held: the running job's id is returned, nothing queued."""
    DEDUPED = "deduped"
    """Another request came within ``jobs.retrain_dedupe_s``: dropped."""
    REJECTED = "rejected"
    """A refit was asked for a frame collection that is not awaiting confirmation."""


class AlarmOutcome(StrEnum):
    """What the retrain trigger did with a drift alarm when it asked for no retraining (``jobs.trigger``; when it
    asked, the outcome is the request's :class:`RetrainRequestStatus`)."""

    STALE = "stale"
    """Older than ``jobs.alarm_max_age_s``."""
    SUPPRESSED = "suppressed"
    """Drift alarms are suppressed (a camera or lighting change awaits its refit)."""
    PRODUCT_ALARM = "product_alarm"
    """A product's own drift: recorded; that product's package is retrained by hand."""
    STALE_MODEL = "stale_model"
    """Raised against a model that is no longer the active one."""
    FAILED = "failed"
    """Handling the entry raised; it was acknowledged so that it cannot block the consumer."""
    UNREADABLE = "unreadable"
    """The entry is not a message this version can decode."""


class PipelineStepStatus(StrEnum):
    """Where one step of a retraining job stands (``job.meta["steps"][<step>]["status"]``, ``jobs.pipeline``)."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class FrameCollectionStatus(StrEnum):
    """Where the frame collection after a camera or lighting change stands (its state in Redis, ``jobs.maintenance``)."""

    COLLECTING = "collecting"
    AWAITING_CONFIRMATION = "awaiting_confirmation"
    """Enough frames: a person confirms they are good before the refit."""
    REFITTING = "refitting"
    DONE = "done"


__all__ = [
    "AlarmOutcome",
    "FrameCollectionStatus",
    "ModelStatus",
    "PipelineStepStatus",
    "RetrainRequestStatus",
    "ReviewStatus",
]
