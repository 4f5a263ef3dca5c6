"""Periodic validation: score the active model on the fixed held-out set and alarm on a drop.

The reference figures are the ones the package recorded when it was built (``metrics.line.heldout.candidate``
for packages of the retraining job; ``metrics.heldout.anomaly`` for packages of ``trainer package``). A
false-reject rate higher, or a recall / balanced accuracy lower, by more than ``jobs.regression_tolerance``
raises a ``DRIFT_ALARM`` event and a ``drift_alarms`` row named ``validation:<metric>``.

Scheduling: ``inspector jobs worker --with-scheduler`` runs RQ's scheduler; :func:`schedule_validation`
enqueues the next run with ``enqueue_in`` behind a SET NX key, so several workers never multiply the chain.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import redis
from rq import get_current_job

from inspector.bus.streams import StationBus
from inspector.contracts.config import StationConfig
from inspector.contracts.errors import InspectorError
from inspector.contracts.messages import Event, EventType
from inspector.drift.monitor import load_reference
from inspector.store.db import open_store
from inspector.store.records import active_model, record_drift_alarm
from jobs.data import heldout_items, load_images
from jobs.evaluation import line_metrics, score_package
from jobs.queues import JobKeys, names_of, station_queue, worker_config

VALIDATE_FUNC = "jobs.validation.validate"


def recorded_metrics(manifest_metrics: dict[str, Any]) -> dict[str, Any] | None:
    """The held-out line metrics a package recorded at build time, in line-metrics form."""
    line = (manifest_metrics.get("line") or {}).get("heldout", {}).get("candidate")
    if line:
        return line
    an = (manifest_metrics.get("heldout") or {}).get("anomaly")
    if not an:
        return None
    recall = {k: v["detection_rate"] for k, v in (an.get("per_defect") or {}).items()}
    frr = an.get("false_reject_rate")
    rec_all = 1 - an["escape_rate"] if an.get("escape_rate") is not None else None
    parts = [x for x in ((1 - frr) if frr is not None else None, rec_all) if x is not None]
    return {"false_reject_rate": frr, "recall": recall, "recall_all": rec_all,
            "balanced_accuracy": sum(parts) / len(parts) if parts else None}


def compare(now: dict[str, Any], recorded: dict[str, Any], tolerance: float) -> list[dict[str, Any]]:
    """Every metric that got worse than recorded by more than ``tolerance``."""
    drops = []
    pairs = [("balanced_accuracy", 1), ("recall_all", 1), ("false_reject_rate", -1)]
    pairs += [(f"recall:{k}", 1) for k in (recorded.get("recall") or {})]
    for name, sign in pairs:
        rec, cur = _get(recorded, name), _get(now, name)
        if rec is None or cur is None:
            continue
        worse = (rec - cur) * sign
        if worse > tolerance:
            drops.append({"metric": name, "recorded": rec, "now": cur, "drop": round(worse, 4)})
    return drops


def _get(m: dict[str, Any], name: str) -> float | None:
    if name.startswith("recall:"):
        return (m.get("recall") or {}).get(name.split(":", 1)[1])
    return m.get(name)


def run_validation(cfg: StationConfig, client: redis.Redis) -> dict[str, Any]:
    store = open_store(cfg)
    try:
        row = active_model(store)
        if row is None:
            raise InspectorError("no active model to validate", "promote one first")
        manifest, _ = load_reference(row.package_path)
        items = heldout_items(cfg.jobs.base_data, cfg.jobs.heldout_limit)
        scored = score_package(row.package_path, load_images(items), cfg)
        now = line_metrics(scored.decisions, [i.label for i in items])
        recorded = recorded_metrics(manifest.metrics)
        drops = compare(now, recorded, cfg.jobs.regression_tolerance) if recorded else []
        for d in drops:
            record_drift_alarm(store, cfg.station.id, f"validation:{d['metric']}", d["now"], d["recorded"],
                               {"version": row.version, **d})
        _event(cfg, client, row.version, now, drops, recorded is not None)
        return {"version": row.version, "metrics": now, "recorded": recorded, "drops": drops}
    finally:
        store.close()


def _event(cfg: StationConfig, client: redis.Redis, version: str, now: dict[str, Any], drops: list[dict[str, Any]],
           had_reference: bool) -> None:
    if drops:
        etype, sev, msg = EventType.DRIFT_ALARM, "warning", f"held-out validation of {version}: " + ", ".join(
            f"{d['metric']} {d['recorded']:.3f} -> {d['now']:.3f}" for d in drops)
    else:
        etype, sev = EventType.JOB, "info"
        msg = f"held-out validation of {version}: " + ("no drop" if had_reference else "no recorded figures to compare")
    StationBus(client, cfg).publish_event(Event(station=cfg.station.id, type=etype, severity=sev, message=msg,  # type: ignore[arg-type]
                                                model_version=version, data={"kind": "validation", "metrics": now,
                                                                             "drops": drops}))


def validate(station: str, reschedule: bool = False) -> dict[str, Any]:
    """RQ entry point; with ``reschedule`` the next run is queued after ``jobs.validation_interval_s``."""
    cfg = worker_config(station)
    job = get_current_job()
    client = job.connection if job else None
    if client is None:
        raise RuntimeError("validate runs inside an RQ job")
    try:
        return run_validation(cfg, client)
    finally:
        if reschedule:
            client.delete(JobKeys(names_of(cfg)).validation_next)
            schedule_validation(cfg, client)


def schedule_validation(cfg: StationConfig, client: redis.Redis) -> str | None:
    """Queue the next periodic validation unless one is already scheduled; returns its job id."""
    interval = cfg.jobs.validation_interval_s
    if interval <= 0 or not cfg.jobs.base_data:
        return None
    if not client.set(JobKeys(names_of(cfg)).validation_next, "1", nx=True, ex=int(interval) + 60):
        return None
    job = station_queue(cfg, client).enqueue_in(timedelta(seconds=interval), VALIDATE_FUNC, cfg.station.id, True,
                                                 description=f"validate {cfg.station.id}", result_ttl=86_400)
    return job.id
