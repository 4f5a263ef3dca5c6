"""Station processes: the shadow candidate, the supervisor that runs and restarts processes, their metrics."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from inspector.contracts.config.base import Section
from inspector.contracts.processes import StationProcess


class ShadowSection(Section):
    """A candidate judging live frames beside the active model (``inspector shadow run``): stored, never sent to
    the line. Which candidate is set by ``inspector shadow start VERSION`` (audited), not here."""

    max_lag_ms: float = Field(
        2000,
        gt=0,
        le=600_000,
        description="Frames older than this when the shadow reads them are skipped (counted): "
        "the shadow runs on spare capacity and never queues behind the line.",
    )
    nice: int = Field(
        10, ge=0, le=19, description="CPU niceness of the shadow process: the active model's workers go first."
    )
    idle_priority: bool = Field(
        True,
        description="Run the shadow process under Linux's SCHED_IDLE policy (CPU only when nothing else wants "
        "it), beside its niceness; off or not Linux: niceness only.",
    )
    threads: int = Field(1, ge=1, le=256, description="Intra-op threads of the shadow candidate's CPU runtime.")
    max_batch: int = Field(16, ge=1, le=256, description="Largest micro-batch of the shadow candidate.")
    pace: Literal["gaps", "batch"] = Field(
        "gaps",
        description="gaps: judge one frame at a time right after the line's verdicts, only while the candidate's "
        "measured time fits before the camera's next frame (a station whose cores the workers "
        "use); batch: every poll_ms, all that arrived (a machine with cores to spare).",
    )
    poll_ms: float = Field(
        500,
        ge=10,
        le=60_000,
        description="The shadow reads the frames that arrived every poll_ms, in one batch: few "
        "Redis and database writes (each one fsynced) beside the line's own.",
    )
    flush_s: float = Field(
        2.0,
        ge=0,
        le=600,
        description="The shadow writes its rows and acknowledges their frames at most this often "
        "(one transaction), so its fsynced writes stay few beside the line's.",
    )
    save_differing: int = Field(
        500,
        ge=0,
        le=1_000_000,
        description="Images of the frames where the candidate and the active model differ, "
        "archived per shadowed version for the report (0: none).",
    )
    required_frames: int = Field(
        0,
        ge=0,
        le=10_000_000,
        description="Promotion needs at least this many live frames judged by the candidate "
        "in shadow and compared with the active verdicts (0: no shadow period needed).",
    )
    min_agreement: float = Field(
        0.95,
        ge=0,
        le=1,
        description="With required_frames set: the least share of compared frames on which the "
        "candidate's line outcome (reject or not) matches the active model's.",
    )


class SupervisorSection(Section):
    """What ``inspector station run`` runs and how it restarts and stops them (see inspector/contracts/processes.py)."""

    processes: list[StationProcess] = Field(
        default_factory=lambda: [StationProcess.CAMERA, StationProcess.WORKER, StationProcess.LINE],
        description="Station processes to run: camera, worker, line, recorder, drift, jobs, shadow (the embedded "
        "Redis is always started first when redis.url is unset). Without recorder each worker records "
        "its verdicts on a thread of its own; with recorder that one process records them all and the "
        "workers run no recorder thread (review routing stays in the workers).",
    )
    workers: int = Field(1, ge=1, le=64, description="Inspection worker processes.")
    restart_initial_s: float = Field(
        0.5, gt=0, le=600, description="First wait before restarting a process that exited."
    )
    restart_max_s: float = Field(30.0, gt=0, le=3600, description="Longest wait between restarts (doubling backoff).")
    restart_limit: int = Field(
        10, ge=1, le=10_000, description="Most restarts of one process within restart_window_s; then it is left failed."
    )
    restart_window_s: float = Field(300.0, gt=0, le=86_400, description="Window of the restart-rate limit.")
    healthy_after_s: float = Field(
        30.0, gt=0, le=86_400, description="A process up this long starts its backoff afresh."
    )
    stop_timeout_s: float = Field(
        10.0,
        gt=0,
        le=600,
        description="SIGTERM of the supervisor: everything is stopped within this time (then SIGKILL).",
    )
    lock_wait_s: float = Field(
        30.0, ge=0, le=3600, description="How long to wait for the data folder lock held by another process."
    )


# Metrics port of each process kind: metrics.port_base + this offset (a worker: + METRICS_WORKER_OFFSET + its number).
METRICS_PORT_OFFSETS: dict[str, int] = {"camera": 0, "line": 1, "drift": 2, "jobs": 3, "gui": 4}
METRICS_WORKER_OFFSET = 10


class MetricsSection(Section):
    """Prometheus metrics (inspector/telemetry.py): every long-running process serves /metrics on its own port."""

    enabled: bool = Field(False, description="Serve Prometheus metrics from every station process.")
    host: str = Field(
        "127.0.0.1", min_length=1, description="Address the metrics servers bind (0.0.0.0: every interface)."
    )
    port_base: int = Field(
        9400,
        ge=1024,
        le=65_400,
        description="Ports: camera +0, line +1, drift +2, jobs +3, gui +4, worker-N +10+N (worker-1: 9411); a worker "
        "without a numbered name (started by hand) +10.",
    )
    ports: dict[str, int] = Field(
        default_factory=dict,
        description="Per-process ports overriding port_base (camera, line, drift, jobs, gui, "
        "worker-N -> port; 0: that process serves none).",
    )

    @field_validator("ports")
    @classmethod
    def _process_names(cls, ports: dict[str, int]) -> dict[str, int]:
        for name, port in ports.items():
            if name not in METRICS_PORT_OFFSETS and not re.match(r"^worker(-\d{1,2})?$", name):
                raise ValueError(f"{name!r} is not a station process: use camera, line, drift, jobs, gui or worker-N")
            if not 0 <= port <= 65_535:
                raise ValueError(f"port {port} of {name} is not a TCP port (1..65535, 0: off)")
        return ports
