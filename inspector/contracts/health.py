"""Health of a station process or background consumer, as its heartbeat reports it.

A consumer is ``stalled`` when it has made no progress for ``store.stall_s``: nothing committed while it
holds entries, or a database / disk call that has not returned. It is ``down`` when its heartbeat key has
expired (the process died, ``kill -9`` included, or hangs so badly that its heartbeat thread stopped):
``inspector status`` reads that from the process registry (``Names.process_registry``). ``inspector status``
is unhealthy while any consumer reports ``stalled`` or is ``down``.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Health(StrEnum):
    OK = "ok"
    STALLED = "stalled"
    DOWN = "down"  # its heartbeat expired: only ever said by a reader (inspector status), never by the process


class ConsumerRole(StrEnum):
    """Every kind of station process or consumer that writes a heartbeat."""

    WORKER = "worker"
    RECORDER = "recorder"
    PART_RECORDER = "part-recorder"
    REVIEW_ROUTER = "review-router"
    DRIFT_MONITOR = "drift-monitor"
    LINE_RUNNER = "line-runner"
    SHADOW = "shadow"
    CAMERA = "camera"
    RQ_WORKER = "rq-worker"


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


class ProcessEntry(BaseModel):
    """A process's entry in the station's process registry: its last heartbeat, kept after the key expires."""

    model_config = ConfigDict(extra="forbid")

    role: ConsumerRole
    consumer: str
    host: str = Field("", description="Host name of the process.")
    pid: int = Field(0, ge=0, description="Process id on that host.")
    ttl_s: float = Field(gt=0, description="TTL of its heartbeat key: older than this, the process is down.")
    ts: float = Field(description="UTC epoch seconds of its last heartbeat.")
    health: Health = Field(Health.OK, description="What its last heartbeat said.")


def stall_line(beat: ConsumerBeat) -> str:
    """The one wording of a stalled consumer, for logs and ``inspector status``."""
    return (
        f"{beat.role.value} {beat.consumer} has made no progress for {beat.stalled_s:.0f} s: "
        f"{beat.reason or 'no reason reported'}"
    )


def down_line(entry: ProcessEntry, now: float) -> str:
    """The one wording of a process whose heartbeat expired."""
    return (
        f"{entry.role.value} {entry.consumer} (pid {entry.pid} on {entry.host or '?'}) is down: no heartbeat for "
        f"{now - entry.ts:.1f} s (TTL {entry.ttl_s:.1f} s)"
    )
