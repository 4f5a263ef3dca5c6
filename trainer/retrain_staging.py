"""The staging folder of one retraining and the JSON files the steps hand each other (``trainer.retrain``).

``<data_dir>/models/.staging-<job id>/work/`` holds snapshot.json, draft.json and evaluation.json; a step
reads what an earlier step wrote there and refuses to run out of order.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from inspector.contracts.config import StationConfig
from inspector.contracts.errors import InspectorError

Say = Callable[[str], None]

SNAPSHOT_FILE = "snapshot.json"
DRAFT_FILE = "draft.json"
EVALUATION_FILE = "evaluation.json"


def models_dir(cfg: StationConfig) -> Path:
    return (Path(cfg.data_dir) / "models").resolve()


def staging_dir(cfg: StationConfig, job_id: str) -> Path:
    return models_dir(cfg) / f".staging-{job_id}"


def work_dir(stage: Path) -> Path:
    return Path(stage) / "work"


def read_work_file(stage: Path, name: str) -> dict[str, Any]:
    f = work_dir(stage) / name
    if not f.is_file():
        raise InspectorError(
            f"{f} is missing", "run the retraining steps in order (snapshot, train, evaluate, package)"
        )
    return json.loads(f.read_text())


def write_work_file(stage: Path, name: str, body: dict[str, Any]) -> None:
    work_dir(stage).mkdir(parents=True, exist_ok=True)
    (work_dir(stage) / name).write_text(json.dumps(body, indent=1))


def say_or_print(say: Say | None) -> Say:
    """The caller's progress callback, or a time-stamped line on stderr."""
    if say is not None:
        return say
    console = Console(stderr=True)
    return lambda msg: console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {msg}")


def sweep_staging(cfg: StationConfig, keep: str = "") -> int:
    """Remove staging folders of earlier, dead attempts (never a finished package)."""
    n = 0
    for p in models_dir(cfg).glob(".staging-*"):
        if p.name != keep and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
            n += 1
    return n
