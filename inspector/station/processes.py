"""The station's process table: which command runs each configured process (``supervisor.processes``)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from inspector.contracts.config import StationConfig
from inspector.contracts.processes import START_ORDER, StationProcess


@dataclass(frozen=True)
class ProcessSpec:
    """One child of the supervisor: a stable name (``worker-2``), its kind and its command line."""

    name: str
    kind: StationProcess
    argv: tuple[str, ...]


def _cli(module: str, *args: str) -> tuple[str, ...]:
    return (sys.executable, "-m", module, *args)


def plan(cfg: StationConfig, config: Path | None) -> list[ProcessSpec]:
    """The children to run, in start order. Every child reads the same station file (and environment)."""
    conf: tuple[str, ...] = ("--config", str(Path(config).resolve())) if config is not None else ()
    wanted = set(cfg.supervisor.processes)
    specs: list[ProcessSpec] = []
    for kind in START_ORDER:
        if kind not in wanted:
            continue
        if kind is StationProcess.WORKER:
            # the recorder process records the verdicts: its workers run no recorder thread of their own
            record = ("--no-record",) if StationProcess.RECORDER in wanted else ()
            for i in range(1, cfg.supervisor.workers + 1):
                # a stable consumer name: a restarted worker (and its verdict recorder) re-reads its own pending entries
                specs.append(
                    ProcessSpec(
                        f"worker-{i}",
                        kind,
                        _cli("inspector.cli", "worker", *conf, "--name", f"{cfg.station.id}-worker-{i}", *record),
                    )
                )
        elif kind is StationProcess.CAMERA:
            specs.append(ProcessSpec("camera", kind, _cli("inspector.cli", "camera", *conf)))
        elif kind is StationProcess.RECORDER:  # a stable name: a restarted recorder re-reads its own pending entries
            specs.append(
                ProcessSpec(
                    "recorder", kind, _cli("inspector.recording", *conf, "--name", f"{cfg.station.id}-recorder")
                )
            )
        elif kind is StationProcess.LINE:
            specs.append(ProcessSpec("line", kind, _cli("inspector.cli", "line", *conf)))
        elif kind is StationProcess.DRIFT:
            specs.append(ProcessSpec("drift", kind, _cli("jobs.cli", "drift", *conf)))
        elif kind is StationProcess.SHADOW:
            specs.append(ProcessSpec("shadow", kind, _cli("inspector.cli", "shadow", "run", *conf)))
        elif kind is StationProcess.JOBS:
            specs.append(ProcessSpec("jobs", kind, _cli("jobs.cli", "worker", *conf, "--with-scheduler")))
    return specs
