"""The retraining job's steps: thin adapters from a job's context (config, store, job id, incumbent row) to
``trainer.retrain``, which owns the whole retraining (snapshot, train, evaluate, package).

Nothing here reads images, fits, evaluates or writes a manifest: the trainer does, once. Steps pass ids
and paths and return the trainer's JSON-able info for ``job.meta`` and the audit trail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspector.contracts.config import StationConfig
from inspector.store.db import Store
from inspector.store.records import active_model
from trainer import retrain
from trainer.retrain import models_dir, staging_dir, sweep_staging

__all__ = [
    "Incumbent",
    "evaluate",
    "incumbent_of",
    "models_dir",
    "package",
    "snapshot",
    "staging_dir",
    "sweep_staging",
    "train",
]

Say = Callable[[str], None]


@dataclass(frozen=True)
class Incumbent:
    """The active model a retraining is compared with (and whose kind it trains)."""

    version: str | None
    path: str | None
    since: float  # labels made after this are the line's present condition

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "path": self.path, "since": self.since}


def incumbent_of(store: Store) -> Incumbent:
    row = active_model(store)
    if row is None:
        return Incumbent(None, None, 0.0)
    return Incumbent(row.version, row.package_path, float(row.promoted_at or row.created_at or 0.0))


def snapshot(
    cfg: StationConfig, store: Store, stage: Path, inc: Incumbent, condition_changed: bool, say: Say | None = None
) -> dict[str, Any]:
    return {**retrain.snapshot(cfg, store, stage, inc.since, condition_changed, say=say), "incumbent": inc.as_dict()}


def train(cfg: StationConfig, stage: Path, inc: Incumbent, say: Say | None = None) -> dict[str, Any]:
    return retrain.train(cfg, stage, inc.path, say=say)


def evaluate(cfg: StationConfig, stage: Path, inc: Incumbent, say: Say | None = None) -> dict[str, Any]:
    return retrain.evaluate(cfg, stage, inc.path, inc.version, say=say)


def package(cfg: StationConfig, stage: Path, job_id: str, reason: str, say: Say | None = None) -> dict[str, Any]:
    return retrain.package(cfg, stage, job_id, reason, say=say)
