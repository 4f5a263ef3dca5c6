"""Experiment log: one JSON line per run, architecture and augmentation policy kept in separate fields.

The log lives at ``INSPECTOR_EXPERIMENT_LOG`` or ``runs/experiments.jsonl``. Rows are appended (one
``write`` of one line, so concurrent runs do not interleave); a malformed line is skipped with a warning.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.console import Console
from rich.table import Table

from inspector.contracts.paths import REPO_ROOT

log = logging.getLogger(__name__)


class PolicyFields(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="Augmentation policy name.")
    hash: str = Field(description="Fingerprint of the policy's transforms.")
    transforms: list[str] = Field(default_factory=list, description="kind[safety] in order.")


class ExperimentRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run_id: str = Field(default_factory=lambda: time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6])
    time: float = Field(default_factory=time.time, description="UTC epoch seconds.")
    task: str = Field(description="classification or anomaly.")
    dataset: str = Field(description="Data folder or name.")
    dataset_hash: str = Field(description="Snapshot hash of all samples (trainer.data.snapshot_hash).")
    architecture: dict[str, Any] = Field(description="backbone, head, image size, epochs, lr, ...")
    policy: PolicyFields = Field(description="Augmentation policy, apart from the architecture.")
    metrics: dict[str, Any] = Field(default_factory=dict)
    notes: str = ""


def default_log_path() -> Path:
    env = os.environ.get("INSPECTOR_EXPERIMENT_LOG")
    return Path(env) if env else REPO_ROOT / "runs" / "experiments.jsonl"


def append_run(record: ExperimentRecord, path: Path | None = None) -> Path:
    path = path or default_log_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    line = record.model_dump_json() + "\n"
    with path.open("a", encoding="utf-8") as f:
        f.write(line)
    return path


def read_runs(path: Path | None = None) -> list[ExperimentRecord]:
    path = path or default_log_path()
    if not path.is_file():
        return []
    runs: list[ExperimentRecord] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            runs.append(ExperimentRecord.model_validate_json(line))
        except ValidationError as err:
            log.warning("%s line %d skipped: %s", path, n, err.errors()[0]["msg"])
    return runs


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else "" if v is None else str(v)


def runs_table(runs: list[ExperimentRecord], metrics: list[str] | None = None) -> Table:
    """Rows grouped by policy (name + hash), newest first within a group, so policies compare side by side."""
    keys = metrics or sorted({k for r in runs for k, v in r.metrics.items() if isinstance(v, int | float)})[:6]
    table = Table(title=f"experiments ({len(runs)} runs), grouped by augmentation policy")
    for col in ["policy", "run", "task", "data", "backbone", "head", "ft blocks", "size", "epochs", *keys]:
        table.add_column(col, justify="right" if col in keys else "left")
    groups: dict[str, list[ExperimentRecord]] = defaultdict(list)
    for r in runs:
        groups[f"{r.policy.name} ({r.policy.hash[:8]})"].append(r)
    for group, rows in sorted(groups.items()):
        for i, r in enumerate(sorted(rows, key=lambda r: -r.time)):
            a = r.architecture
            table.add_row(
                group if i == 0 else "",
                r.run_id,
                r.task,
                r.dataset_hash[:8],
                _fmt(a.get("backbone")),
                _fmt(a.get("head")),
                _fmt(a.get("train_blocks")),
                _fmt(a.get("image_size")),
                _fmt(a.get("epochs")),
                *[_fmt(r.metrics.get(k)) for k in keys],
                end_section=i == len(rows) - 1,
            )
    return table


def print_runs(path: Path | None = None, console: Console | None = None, metrics: list[str] | None = None) -> int:
    runs = read_runs(path)
    console = console or Console()
    if not runs:
        console.print(f"no runs logged in {path or default_log_path()}")
        return 0
    console.print(runs_table(runs, metrics))
    return len(runs)
