"""Message schemas on the Redis streams. Every message has a schema version, a kind, an id, a UTC time
and the station; frames carry binary image bytes beside their JSON metadata, nothing else does.

Wire format: a stream entry has the field ``m`` holding the message JSON; frame entries add ``img``
holding the encoded image bytes. Messages are JSON only (never pickle).
"""

from __future__ import annotations

import time
import uuid
from enum import StrEnum
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from inspector.contracts.errors import UnsafeInputError

SCHEMA_VERSION = 1
"""The major schema version this code speaks. Fields a newer minor revision adds are ignored (a rolling upgrade
never dead-letters the old side's messages); a message of a newer *major* version is refused by
``inspector.bus.streams.decode_message``, and its consumer dead-letters it."""


def new_id() -> str:
    return uuid.uuid4().hex


def now() -> float:
    """UTC time as seconds since the epoch (all message times use this)."""
    return time.time()


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    v: int = Field(SCHEMA_VERSION, description="Schema version.")
    id: str = Field(default_factory=new_id, description="Message id.")
    ts: float = Field(default_factory=now, description="UTC epoch seconds when the message was made.")
    station: str

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Self:
        text = raw.decode() if isinstance(raw, bytes) else raw
        if isinstance(raw, bytes) and raw[:1] == b"\x80":
            raise UnsafeInputError("message looks like a pickle payload and was refused", "messages are JSON only")
        return cls.model_validate_json(text)


class FrameMeta(Message):
    kind: Literal["frame"] = "frame"
    camera: str
    seq: int = Field(ge=0, description="Sequence number per camera, from 0.")
    part_id: str
    captured_at: float = Field(description="UTC epoch seconds of capture.")
    encoding: Literal["jpeg", "png", "raw"] = "jpeg"
    width: int | None = None
    height: int | None = None
    truth: str | None = Field(None, description="Known label of a replayed or synthetic part (demo, tests).")
    product: str | None = Field(
        None,
        description="Product on the line when the frame was taken (station products; "
        "None: the station makes one product).",
    )
    view: str | None = Field(
        None, description="The view of the part this frame shows (parts.views; None: one frame is one part)."
    )

    @property
    def frame_id(self) -> str:
        return self.id


class Decision(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    REVIEW = "REVIEW"
    ERROR = "ERROR"


class ImageStats(BaseModel):
    model_config = ConfigDict(extra="ignore")
    brightness: float
    contrast: float
    sharpness: float
    mean_r: float
    mean_g: float
    mean_b: float


class Verdict(Message):
    kind: Literal["verdict"] = "verdict"
    frame_id: str
    camera: str
    seq: int
    part_id: str
    captured_at: float
    decision: Decision
    reject: bool = Field(description="What the line does with the part (fail safe: True unless PASS).")
    defect_class: str | None = None
    reasons: list[str] = Field(default_factory=list)
    class_probs: dict[str, float] | None = None
    anomaly_score: float | None = Field(None, description="Normalised: 1.0 is the package threshold.")
    anomaly_raw: float | None = None
    model_version: str | None = None
    worker: str | None = None
    latency_ms: float | None = Field(None, description="Capture to decision.")
    stage_ms: dict[str, float] = Field(default_factory=dict)
    error: str | None = None
    image_stats: ImageStats | None = None
    heatmap: str | None = Field(None, description="Anomaly map as base64 PNG (small), for the operator view.")
    truth: str | None = None
    product: str | None = Field(None, description="The frame's product: its model judged it (model_version).")
    view: str | None = Field(None, description="The frame's view of its part (parts.views).")


class ViewResult(BaseModel):
    """What one view of a part said (a PartVerdict's views)."""

    model_config = ConfigDict(extra="forbid")
    frame_id: str
    decision: Decision
    defect_class: str | None = None
    model_version: str | None = None
    camera: str | None = None


class PartVerdict(Message):
    """The line's one verdict of a part seen by several views (parts.views), on the parts stream, once per part."""

    kind: Literal["part_verdict"] = "part_verdict"
    part_id: str
    decision: Decision = Field(
        description="FAIL if a view failed, REVIEW if one was unsure, ERROR if one erred or "
        "is missing or late, PASS only when every view passed by the deadline."
    )
    reject: bool
    signal: str = Field(description="ACCEPT or REJECT, as sent to the line.")
    reason: str = Field(
        description="The line reason (pass, fail, review, error, late_verdict, no_verdict_by_deadline)."
    )
    failed_view: str | None = Field(None, description="The view whose verdict decided a FAIL/REVIEW/ERROR part.")
    defect_class: str | None = None
    reasons: list[str] = Field(default_factory=list)
    views: dict[str, ViewResult] = Field(default_factory=dict)
    missing: list[str] = Field(default_factory=list, description="Views with no verdict by the deadline.")
    captured_at: float = Field(description="Capture time of the part's first view.")
    decided_at: float
    product: str | None = None


class ReviewRequest(Message):
    kind: Literal["review"] = "review"
    frame_id: str
    part_id: str
    camera: str
    reasons: list[str]
    priority: int = Field(ge=0, le=100, description="Higher first.")
    image_sha256: str | None = Field(None, description="Archive key of the saved frame.")
    decision: Decision
    model_version: str | None = None
    class_probs: dict[str, float] | None = None
    anomaly_score: float | None = None
    product: str | None = Field(None, description="The frame's product: each product has its own review queue.")


class ReviewJob(Message):
    """A frame sampled for review, on the review inbox (its image in the entry's image field)."""

    kind: Literal["review_job"] = "review_job"
    verdict: Verdict
    reasons: list[str]
    priority: int = Field(ge=0, le=100)
    encoding: str = Field(max_length=16, description="Encoding of the image bytes beside this message.")


class EventType(StrEnum):
    CAMERA_HEALTH = "camera_health"
    WORKER = "worker"
    DRIFT_ALARM = "drift_alarm"
    MODEL_RELOADED = "model_reloaded"
    MODEL_REFUSED = "model_refused"
    JOB = "job"
    MAINTENANCE = "maintenance"
    DEAD_LETTER = "dead_letter"


class Event(Message):
    kind: Literal["event"] = "event"
    type: EventType
    severity: Literal["info", "warning", "critical"] = "info"
    message: str
    camera: str | None = None
    frame_id: str | None = None
    model_version: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


MESSAGE_KINDS: dict[str, type[Message]] = {
    "frame": FrameMeta,
    "verdict": Verdict,
    "review": ReviewRequest,
    "review_job": ReviewJob,
    "event": Event,
    "part_verdict": PartVerdict,
}
