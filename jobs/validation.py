"""Periodic validation: can the ACTIVE model still do what it did when it was built?

Two checks, both through the station runtime (``inspector.evaluation.score_frames`` -> ``decide()`` ->
``line_metrics``), so what is validated is exactly what the line decides:

``heldout``
    the station's fixed held-out set (``trainer.heldout.load_heldout_set``; frozen from ``jobs.base_data``
    the first time), optionally its evenly spaced ``jobs.heldout_limit`` subset. The same package on the same
    frames must score what it recorded; a drop here means the runtime, the files or the environment changed
    (a different execution provider, a corrupted or edited package, a changed held-out image).
``recent``
    the frames people labelled in the last ``jobs.validation_window_s`` (``trainer.heldout.labelled_frames``).
    A drop here means production moved away from what the model learned (new defect look, new good look).
    Fewer than ``jobs.validation_min_frames`` labelled frames: the check is skipped, and the report says so
    (silence must not read as "fine"). Caveat: labelled frames over-sample what the router found uncertain,
    so their figures run somewhat below the held-out ones even without drift; the per-metric noise allowance
    below absorbs small windows, ``jobs.regression_tolerance`` is the station's knob for the rest.

Both are compared with the figures the package recorded when built: ``Manifest.line_metrics["heldout"]``
(typed :class:`~inspector.contracts.lifecycle.LineMetrics`). A metric that got worse by more than
``jobs.regression_tolerance`` PLUS one frame's worth of the frames that metric is computed on (sampling
noise: ``1/n_good`` for the false-reject rate, ``1/n_class`` for a class's recall, ``1/n_defect`` for all
defects, ``1/(2·min(n_good, n_defect))`` for balanced accuracy) is a drop. Per-metric denominators, not the
whole set's size: a recall over 5 frames moves 0.2 per frame, one over 500 moves 0.002.

Any drop raises ONE alarm: a ``DRIFT_ALARM`` event with ``source = "validation"`` (the retrain trigger
consumes it, see ``jobs.trigger``) and one ``drift_alarms`` row named after the worst drop
(``validation:<set>:<metric>``, value = now, threshold = the limit it crossed) with every drop in its
details. No drop: an info ``JOB`` event "no drop" naming what was checked and what was skipped.

Scheduling: ``inspector jobs worker --with-scheduler`` runs RQ's scheduler; :func:`schedule_validation`
enqueues the next run with ``enqueue_in`` behind a SET NX key, so several workers never multiply the chain.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import redis
from rq import get_current_job

from inspector.archive import Archive
from inspector.bus.streams import StationBus
from inspector.contracts.config import StationConfig
from inspector.contracts.errors import DataError, InspectorError
from inspector.contracts.lifecycle import LineMetrics
from inspector.contracts.messages import Event, EventType
from inspector.drift.monitor import load_reference
from inspector.evaluation import line_metrics, score_frames
from inspector.store.db import Store, open_store
from inspector.store.records import active_model, record_drift_alarm
from jobs.queues import JobKeys, names_of, station_queue, worker_config
from trainer.heldout import LabelledImage, labelled_frames, load_heldout_set, load_images

log = logging.getLogger(__name__)

VALIDATE_FUNC = "jobs.validation.validate"
SOURCE = "validation"
HELDOUT, RECENT = "heldout", "recent"


@dataclass(frozen=True)
class Drop:
    """One metric that got worse than recorded by more than it may."""

    frame_set: str
    metric: str
    recorded: float
    now: float
    allowed: float  # tolerance + one frame's worth
    n: int  # frames the metric is computed on

    @property
    def drop(self) -> float:
        return abs(self.now - self.recorded)

    @property
    def excess(self) -> float:
        return self.drop - self.allowed

    @property
    def limit(self) -> float:
        """The value the metric had to stay on the good side of."""
        return self.recorded + self.allowed if self.metric == "false_reject_rate" else self.recorded - self.allowed

    @property
    def name(self) -> str:
        return f"{self.frame_set}:{self.metric}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drop": round(self.drop, 4), "limit": round(self.limit, 4)}


@dataclass
class SetCheck:
    """One frame set's check: its figures and drops, or why it was skipped."""

    frame_set: str
    n: int = 0
    metrics: LineMetrics | None = None
    drops: list[Drop] = field(default_factory=list)
    skipped: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "frame_set": self.frame_set,
            "n": self.n,
            "skipped": self.skipped,
            "metrics": self.metrics.model_dump() if self.metrics else None,
            "drops": [d.as_dict() for d in self.drops],
        }


@dataclass
class ValidationReport:
    version: str
    recorded: LineMetrics | None
    checks: list[SetCheck]

    @property
    def drops(self) -> list[Drop]:
        return [d for c in self.checks for d in c.drops]

    @property
    def fired(self) -> bool:
        return bool(self.drops)

    def check(self, frame_set: str) -> SetCheck:
        return next(c for c in self.checks if c.frame_set == frame_set)

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "fired": self.fired,
            "recorded": self.recorded.model_dump() if self.recorded else None,
            "checks": [c.as_dict() for c in self.checks],
        }


def one_frame(metric: str, m: LineMetrics) -> tuple[float, int]:
    """(one frame's worth of ``metric`` on the frames ``m`` was computed on, how many frames that is)."""
    if metric == "false_reject_rate":
        n = m.n_good
        return (1 / n if n else 1.0), n
    if metric == "recall_all":
        n = m.n_defect
        return (1 / n if n else 1.0), n
    if metric == "balanced_accuracy":
        n = min(m.n_good, m.n_defect)
        return (1 / (2 * n) if n else 1.0), n
    n = m.n_per_class.get(metric.split(":", 1)[1], 0)
    return (1 / n if n else 1.0), n


def compare(now: LineMetrics, recorded: LineMetrics, tolerance: float, frame_set: str) -> list[Drop]:
    """Every metric of ``now`` worse than ``recorded`` by more than ``tolerance`` + one frame's worth.

    Compared: false-reject rate (higher is worse), balanced accuracy, recall over all defects and per defect
    class present in both (lower is worse). A metric missing on either side (no good frames in the window,
    a class the package never saw) is not compared; recall over all defects still covers new classes."""
    pairs: list[tuple[str, float | None, float | None, int]] = [
        ("false_reject_rate", now.false_reject_rate, recorded.false_reject_rate, -1),
        ("balanced_accuracy", now.balanced_accuracy, recorded.balanced_accuracy, 1),
        ("recall_all", now.recall_all, recorded.recall_all, 1),
    ]
    pairs += [
        (f"recall:{c}", now.recall[c], recorded.recall[c], 1) for c in sorted(set(now.recall) & set(recorded.recall))
    ]
    drops = []
    for metric, cur, rec, sign in pairs:
        if cur is None or rec is None:
            continue
        noise, n = one_frame(metric, now)
        allowed = tolerance + noise
        if (rec - cur) * sign > allowed + 1e-12:
            drops.append(Drop(frame_set, metric, float(rec), float(cur), round(allowed, 6), n))
    return drops


def evenly_spaced(items: list[LabelledImage], limit: int | None) -> list[LabelledImage]:
    """``limit`` items spread evenly over ``items`` (all of them when ``limit`` is None or not smaller)."""
    if limit is None or limit >= len(items):
        return list(items)
    idx = np.unique(np.linspace(0, len(items) - 1, limit).round().astype(int))
    return [items[i] for i in idx]


def _score(cfg: StationConfig, package_path: str, items: list[LabelledImage]) -> LineMetrics:
    scored = score_frames(package_path, load_images(items), cfg)
    return line_metrics(scored.decisions, [i.label for i in items])


def _active(cfg: StationConfig, client: redis.Redis, store: Store) -> tuple[str, str]:
    """(version, package path) of the active model: the store's registry, else the workers' Redis hash."""
    row = active_model(store)
    if row is not None:
        return row.version, row.package_path
    raw = client.hgetall(names_of(cfg).active_model)
    if raw.get(b"version") and raw.get(b"path"):
        return raw[b"version"].decode(), raw[b"path"].decode()
    raise InspectorError("no active model to validate", "promote one first")


def run_validation(
    cfg: StationConfig, client: redis.Redis, store: Store | None = None, now: float | None = None
) -> ValidationReport:
    """Score the active model on the held-out set and on the last window's labelled frames; alarm on a drop."""
    own = store is None
    store = open_store(cfg) if store is None else store
    now = time.time() if now is None else now
    try:
        version, path = _active(cfg, client, store)
        manifest, _ = load_reference(path)
        recorded = manifest.line_metrics.get(HELDOUT)
        held = SetCheck(HELDOUT)
        held_hashes: frozenset[str] = frozenset()
        try:
            heldout = load_heldout_set(cfg.data_dir, cfg.jobs.base_data)
            held_hashes = heldout.hashes
            items = evenly_spaced(heldout.items, cfg.jobs.heldout_limit)
            held.n, held.metrics = len(items), _score(cfg, path, items)
        except DataError as err:
            held.skipped = f"no usable held-out set: {err.message}"
        recent = SetCheck(RECENT)
        labelled = [
            i
            for i in labelled_frames(
                store, Archive.for_data_dir(cfg.data_dir), since=now - cfg.jobs.validation_window_s, until=now + 1e-6
            )
            if i.sha256 not in held_hashes
        ]
        recent.n = len(labelled)
        if len(labelled) < cfg.jobs.validation_min_frames:
            recent.skipped = (
                f"only {len(labelled)} frames labelled in the last {cfg.jobs.validation_window_s:g} s "
                f"(jobs.validation_min_frames = {cfg.jobs.validation_min_frames})"
            )
        else:
            recent.metrics = _score(cfg, path, labelled)
        for check in (held, recent):
            if check.metrics is None:
                continue
            if recorded is None:
                check.skipped = "the package recorded no held-out figures (manifest line_metrics['heldout'])"
                continue
            check.drops = compare(check.metrics, recorded, cfg.jobs.regression_tolerance, check.frame_set)
        report = ValidationReport(version, recorded, [held, recent])
        _publish(cfg, client, store, report, now)
        return report
    finally:
        if own:
            store.close()


def _publish(cfg: StationConfig, client: redis.Redis, store: Store, report: ValidationReport, now: float) -> None:
    bus = StationBus(client, cfg)
    checked = [f"{c.frame_set} ({c.n} frames)" for c in report.checks if c.skipped is None]
    skipped = [f"{c.frame_set} skipped: {c.skipped}" for c in report.checks if c.skipped is not None]
    data: dict[str, Any] = {
        "source": SOURCE,
        "kind": "validation",
        "version": report.version,
        "checks": [c.as_dict() for c in report.checks],
    }
    if not report.fired:
        msg = f"validation of {report.version}: no drop on " + (", ".join(checked) or "nothing")
        if skipped:
            msg += "; " + "; ".join(skipped)
        bus.publish_event(
            Event(
                station=cfg.station.id,
                type=EventType.JOB,
                severity="info",
                message=msg,
                model_version=report.version,
                data={**data, "status": "no_drop"},
            )
        )
        return
    worst = max(report.drops, key=lambda d: d.excess)
    tripped = {d.name: d.as_dict() for d in report.drops}
    data.update(statistic=f"validation:{worst.name}", value=worst.now, threshold=worst.limit, tripped=tripped)
    try:
        record_drift_alarm(
            store,
            cfg.station.id,
            f"validation:{worst.name}",
            worst.now,
            worst.limit,
            {"version": report.version, "source": SOURCE, "tripped": tripped},
            now,
        )
    except Exception:  # noqa: BLE001 - a failing side output never blocks the alarm event
        log.exception("could not record the validation alarm in the store")
    msg = f"validation of {report.version}: " + ", ".join(
        f"{d.name} {d.recorded:.3f} -> {d.now:.3f} (allowed {d.allowed:.3f})" for d in report.drops
    )
    bus.publish_event(
        Event(
            station=cfg.station.id,
            type=EventType.DRIFT_ALARM,
            severity="warning",
            message=msg,
            model_version=report.version,
            data=data,
        )
    )


def validate(station: str, reschedule: bool = False) -> dict[str, Any]:
    """RQ entry point; with ``reschedule`` the next run is queued after ``jobs.validation_interval_s``."""
    cfg = worker_config(station)
    job = get_current_job()
    client = job.connection if job else None
    if client is None:
        raise RuntimeError("validate runs inside an RQ job")
    try:
        return run_validation(cfg, client).as_dict()
    finally:
        if reschedule:
            client.delete(JobKeys(names_of(cfg)).validation_next)
            schedule_validation(cfg, client)


def schedule_validation(cfg: StationConfig, client: redis.Redis) -> str | None:
    """Queue the next periodic validation unless one is already scheduled; returns its job id."""
    interval = cfg.jobs.validation_interval_s
    if interval <= 0:
        return None
    if not client.set(JobKeys(names_of(cfg)).validation_next, "1", nx=True, ex=int(interval) + 60):
        return None
    job = station_queue(cfg, client).enqueue_in(
        timedelta(seconds=interval),
        VALIDATE_FUNC,
        cfg.station.id,
        True,
        description=f"validate {cfg.station.id}",
        result_ttl=86_400,
    )
    return job.id
