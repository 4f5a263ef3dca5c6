"""The processes of one station under its supervisor (``inspector station run``): their names, the order they
stop in, and the states the supervisor reports. Only the standard library."""

from __future__ import annotations

from enum import StrEnum


class StationProcess(StrEnum):
    """A kind of station process; ``supervisor.processes`` lists which ones a station runs."""

    REDIS = "redis"  # the embedded server: started first, stopped last (not listed in supervisor.processes)
    CAMERA = "camera"  # inspector camera
    WORKER = "worker"  # inspector worker (x supervisor.workers): inspection, review routing, verdict recorder (not with RECORDER)
    LINE = "line"  # inspector line: MQTT / Modbus line outputs
    RECORDER = "recorder"  # python -m inspector.recording: verdict / part recorders as their own process
    DRIFT = "drift"  # inspector jobs drift: drift monitor and retrain trigger
    JOBS = "jobs"  # inspector jobs worker --with-scheduler: the RQ worker
    SHADOW = "shadow"  # inspector shadow run: a candidate judges live frames beside the active model, off the line


# Start order (consumers before the producer, so no frame waits for a reader) and stop order (the producer
# first, then the workers drain, then what reads their verdicts; Redis last).
START_ORDER: tuple[StationProcess, ...] = (
    StationProcess.WORKER,
    StationProcess.RECORDER,
    StationProcess.LINE,
    StationProcess.DRIFT,
    StationProcess.JOBS,
    StationProcess.SHADOW,
    StationProcess.CAMERA,
)
STOP_STAGES: tuple[tuple[StationProcess, ...], ...] = (
    (StationProcess.CAMERA,),
    (StationProcess.WORKER,),
    (StationProcess.LINE, StationProcess.RECORDER, StationProcess.DRIFT, StationProcess.JOBS, StationProcess.SHADOW),
)


class ProcessState(StrEnum):
    """What the supervisor says of one process."""

    RUNNING = "running"
    BACKOFF = "backoff"  # exited; restarts when its backoff delay has passed
    FAILED = "failed"  # restarted too often within supervisor.restart_window_s: left stopped
    STOPPING = "stopping"
    STOPPED = "stopped"
