"""Model registry actions: promotion gates, register, promote, rollback.

Promotion writes, in this order: the ``model_versions`` row and its audit row (one transaction in the
store: the system of record), then the Redis hash ``active_model`` {version, path, sha256} that the
workers hot-reload from, then a note on ``model_channel``. A package is verified (every sha256, every
graph) with ``load_package`` before it is promoted; a package that fails is never made active.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis
from sqlalchemy import select

from inspector.bus.streams import StationBus
from inspector.contracts.config import JobsSection, StationConfig
from inspector.contracts.errors import InspectorError
from inspector.contracts.messages import Event, EventType
from inspector.runtime.package import load_package
from inspector.store.db import Store
from inspector.store.models import ModelVersionRow
from inspector.store.records import active_model, promote_model, register_model


@dataclass
class GateCheck:
    name: str
    passed: bool
    value: float | None
    limit: float | None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "value": self.value, "limit": self.limit}


@dataclass
class GateResult:
    checks: list[GateCheck] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[GateCheck]:
        return [c for c in self.checks if not c.passed]

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": [c.as_dict() for c in self.checks]}


def evaluate_gates(candidate: dict[str, Any], incumbent: dict[str, Any] | None, jobs: JobsSection) -> GateResult:
    """Line metrics of the candidate (and the incumbent on the SAME frames) against the configured gates."""
    res = GateResult()
    n_good, n_defect = candidate.get("n_good", 0), candidate.get("n_defect", 0)
    res.checks.append(GateCheck("enough_frames", min(n_good, n_defect) >= jobs.min_gate_frames,
                                float(min(n_good, n_defect)), float(jobs.min_gate_frames)))
    frr = candidate.get("false_reject_rate")
    res.checks.append(GateCheck("false_reject_ceiling", frr is not None and frr <= jobs.false_reject_ceiling,
                                frr, jobs.false_reject_ceiling))
    for cls, recall in sorted((candidate.get("recall") or {}).items()):
        floor = jobs.recall_floors.get(cls, jobs.recall_floor)
        res.checks.append(GateCheck(f"recall_floor:{cls}", recall >= floor, recall, floor))
    if incumbent is not None and incumbent.get("balanced_accuracy") is not None:
        cand, inc = candidate.get("balanced_accuracy"), incumbent["balanced_accuracy"]
        limit = inc - jobs.regression_tolerance
        res.checks.append(GateCheck("no_regression", cand is not None and cand >= limit, cand, limit))
    return res


def register_candidate(store: Store, version: str, path: str, sha256: str, metrics: dict[str, Any],
                       actor: str) -> None:
    register_model(store, version, path, sha256, metrics, actor)


def _row(store: Store, version: str) -> ModelVersionRow:
    with store.session() as s:
        row = s.get(ModelVersionRow, version)
    if row is None:
        raise InspectorError(f"model version {version} is not registered", "`inspector jobs status` lists versions")
    return row


def newest_candidate(store: Store) -> str | None:
    with store.session() as s:
        q = select(ModelVersionRow.version).where(ModelVersionRow.status == "candidate")
        return s.scalar(q.order_by(ModelVersionRow.created_at.desc()).limit(1))


def promote(cfg: StationConfig, client: redis.Redis, store: Store, version: str | None, actor: str,
            action: str = "model.promote", details: dict[str, Any] | None = None) -> str:
    """Verify and activate ``version`` (default: the newest candidate); returns the version promoted."""
    version = version or newest_candidate(store)
    if version is None:
        raise InspectorError("no candidate model waits for promotion", "run `inspector jobs retrain` first")
    row = _row(store, version)
    package = load_package(row.package_path)  # refuses a corrupt or half-built package
    if package.package_sha256 != row.package_sha256:
        raise InspectorError(f"package of {version} changed since it was registered", "rebuild or re-register it")
    previous = promote_model(store, version, actor, action, {"path": row.package_path, **(details or {})})
    bus = StationBus(client, cfg)
    pipe = client.pipeline(transaction=True)
    pipe.delete(bus.names.active_model)
    pipe.hset(bus.names.active_model, mapping={"version": version, "path": row.package_path,
                                               "sha256": row.package_sha256})
    pipe.publish(bus.names.model_channel, version)
    pipe.execute()
    bus.publish_event(Event(station=cfg.station.id, type=EventType.JOB, model_version=version,
                            message=f"{action}: {previous} -> {version} by {actor}",
                            data={"action": action, "previous": previous, "version": version}))
    return version


def previous_version(store: Store) -> str | None:
    """The version that was active before the current one (the newest retired one that was ever promoted)."""
    with store.session() as s:
        q = select(ModelVersionRow.version).where(ModelVersionRow.status == "retired",
                                                  ModelVersionRow.promoted_at.is_not(None))
        return s.scalar(q.order_by(ModelVersionRow.promoted_at.desc()).limit(1))


def rollback(cfg: StationConfig, client: redis.Redis, store: Store, actor: str, reason: str = "") -> str:
    """Re-activate the previously active version; returns it."""
    target = previous_version(store)
    current = active_model(store)
    if target is None:
        raise InspectorError("there is no previous model version to roll back to", "promote a version instead")
    return promote(cfg, client, store, target, actor, action="model.rollback",
                   details={"from": current.version if current else None, "reason": reason})
