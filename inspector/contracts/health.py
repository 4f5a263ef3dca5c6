"""Health of a background consumer (verdict recorder, review router), as its heartbeat reports it.

A consumer is ``stalled`` when it has made no progress for ``store.stall_s``: nothing committed while it
holds entries, or a database / disk call that has not returned. ``inspector status`` is unhealthy while
any consumer reports ``stalled``.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Health(StrEnum):
    OK = "ok"
    STALLED = "stalled"


class ConsumerRole(StrEnum):
    RECORDER = "recorder"
    REVIEW_ROUTER = "review-router"
    SHADOW = "shadow"


class ConsumerBeat(BaseModel):
    """One heartbeat of one consumer."""

    model_config = ConfigDict(extra="forbid")

    role: ConsumerRole
    consumer: str
    health: Health
    reason: str | None = Field(None, description="Why it is stalled: the last error, or the call it waits on.")
    stalled_s: float = Field(0.0, description="Seconds since its last progress.")
    done: int = Field(0, description="Entries it has completed since it started.")
    errors: int = Field(0, description="Failed attempts since it started.")
    ts: float = Field(description="UTC epoch seconds of this heartbeat.")


def stall_line(beat: ConsumerBeat) -> str:
    """The one wording of a stalled consumer, for logs and ``inspector status``."""
    return (f"{beat.role.value} {beat.consumer} has made no progress for {beat.stalled_s:.0f} s: "
            f"{beat.reason or 'no reason reported'}")
