"""Maintenance actions: "camera or lighting changed" and "retrain now".

Camera or lighting changed:
  1. :func:`camera_changed` records the change (audit row, ``MAINTENANCE`` event), suppresses drift alarms
     (they would only report the planned change) and opens a frame collection;
  2. :func:`collect` copies the next ``jobs.collect_frames`` frames from the frames stream into
     ``<data_dir>/collections/<id>/``;
  3. a person looks at them and calls :func:`confirm`; that queues :func:`refit` (under the station's
     retrain lock), which refits the anomaly threshold, the score normalisation and the drift reference on
     the confirmed frames, writes a NEW package version and registers it with its gate report (the same
     gate as a retrained candidate, on the freshly confirmed frames and the fixed held-out set); it is
     promoted only as any candidate is: automatically when every row passed and ``jobs.auto_promote``.
     Drift alarms resume when that package becomes active (the monitor lifts the suppression).
Retrain now: :func:`retrain_now` queues the retraining pipeline with a reason (no dedupe window).
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import redis
from rq import get_current_job

from inspector.bus.streams import StationBus, decode_message
from inspector.contracts.config import StationConfig
from inspector.contracts.errors import InspectorError
from inspector.contracts.lifecycle import GateReport, LineMetrics
from inspector.contracts.manifest import AnomalySpec, Manifest
from inspector.contracts.messages import Event, EventType, FrameMeta
from inspector.contracts.names import STREAM_FIELD_IMAGE, STREAM_FIELD_MESSAGE
from inspector.contracts.statuses import FrameCollectionStatus, RetrainRequestStatus
from inspector.drift.monitor import suppression_key
from inspector.drift.reference import reference_from_samples
from inspector.evaluation import infer_frames, line_metrics, score_frames
from inspector.gates import evaluate_gates
from inspector.runtime.package import ModelPackage, hash_file, load_package, write_manifest
from inspector.store.db import Store, open_store
from inspector.store.records import active_model
from jobs.queues import JobKeys, names_of, station_queue, worker_config
from jobs.registry import auto_promote, register_candidate
from jobs.steps import models_dir
from jobs.trigger import RetrainRequest, lock_ttl_s, release_lock, request_retrain

REFIT_FUNC = "jobs.maintenance.refit"
THRESHOLD_MARGIN = 1.05


def _state(client: redis.Redis, cfg: StationConfig) -> dict[str, Any] | None:
    raw = client.get(JobKeys(names_of(cfg)).collection)
    return json.loads(raw) if raw else None


def _save_state(client: redis.Redis, cfg: StationConfig, state: dict[str, Any]) -> None:
    client.set(JobKeys(names_of(cfg)).collection, json.dumps(state))


def _event(cfg: StationConfig, client: redis.Redis, message: str, **data: Any) -> None:
    StationBus(client, cfg).publish_event(
        Event(station=cfg.station.id, type=EventType.MAINTENANCE, message=message, data=data)
    )


def camera_changed(cfg: StationConfig, client: redis.Redis, store: Store, actor: str, note: str = "") -> dict[str, Any]:
    """Record a planned camera or lighting change, suppress drift alarms, start collecting frames."""
    since = time.time()
    state = {
        "id": uuid.uuid4().hex[:12],
        "since": since,
        "want": cfg.jobs.collect_frames,
        "have": 0,
        "status": FrameCollectionStatus.COLLECTING,
        "note": note,
        "by": actor,
    }
    client.set(
        suppression_key(names_of(cfg)),
        json.dumps({"since": since, "reason": "camera or lighting changed", "by": actor, "note": note}),
    )
    _save_state(client, cfg, state)
    store.audit.record(actor, "maintenance.camera_changed", cfg.station.id, None, state, {"note": note})
    _event(cfg, client, f"camera or lighting changed ({actor}): drift alarms suppressed until the refit", **state)
    return state


def collection_dir(cfg: StationConfig, collection_id: str) -> Path:
    return Path(cfg.data_dir).resolve() / "collections" / collection_id


def collect(cfg: StationConfig, client: redis.Redis, max_entries: int = 10_000) -> dict[str, Any]:
    """Copy frames captured since the change (up to the wanted number) into the collection folder."""
    state = _state(client, cfg)
    if state is None or state["status"] != FrameCollectionStatus.COLLECTING:
        raise InspectorError("no frame collection is open", "run the 'camera or lighting changed' action first")
    folder = collection_dir(cfg, state["id"])
    folder.mkdir(parents=True, exist_ok=True)
    start = f"{int(state['since'] * 1000)}-0"
    for _eid, fields in client.xrange(names_of(cfg).frames, min=start, count=max_entries):
        if state["have"] >= state["want"]:
            break
        meta = decode_message(fields.get(STREAM_FIELD_MESSAGE))
        if isinstance(meta, FrameMeta) and meta.captured_at >= state["since"] and fields.get(STREAM_FIELD_IMAGE):
            ext = "png" if meta.encoding == "png" else "jpg"
            (folder / f"{state['have']:05d}.{ext}").write_bytes(fields[STREAM_FIELD_IMAGE])
            state["have"] += 1
    if state["have"] >= state["want"]:
        state["status"] = FrameCollectionStatus.AWAITING_CONFIRMATION
        _event(cfg, client, f"{state['have']} frames collected: a person must confirm they are good", **state)
    _save_state(client, cfg, state)
    return state


def confirm(cfg: StationConfig, client: redis.Redis, store: Store, actor: str, good: bool = True) -> RetrainRequest:
    """A person confirmed (or rejected) the collected frames; confirmed frames queue the refit job."""
    state = _state(client, cfg)
    if state is None or state["status"] != FrameCollectionStatus.AWAITING_CONFIRMATION:
        raise InspectorError("no collected frames await confirmation", "collect frames first")
    need = 2 * cfg.jobs.min_gate_frames
    if good and state["have"] < need:
        raise InspectorError(
            f"only {state['have']} frames were collected; a refit needs {need} confirmed frames "
            "(half fit the threshold, half are the gate's confirmed set)",
            f"set jobs.collect_frames to at least {need} and collect again",
        )
    store.audit.record(
        actor,
        "maintenance.frames_confirmed" if good else "maintenance.frames_rejected",
        cfg.station.id,
        None,
        {"collection": state["id"], "frames": state["have"]},
    )
    if not good:
        state["status"] = FrameCollectionStatus.COLLECTING
        state["have"] = 0
        state["since"] = time.time()
        _save_state(client, cfg, state)
        return RetrainRequest(RetrainRequestStatus.REJECTED, None)
    job_id = f"refit-{state['id']}"
    keys = JobKeys(names_of(cfg))
    if not client.set(keys.lock, job_id, nx=True, ex=lock_ttl_s(cfg)):
        return RetrainRequest(RetrainRequestStatus.RUNNING, (client.get(keys.lock) or b"").decode())
    state["status"] = FrameCollectionStatus.REFITTING
    _save_state(client, cfg, state)
    station_queue(cfg, client).enqueue(
        REFIT_FUNC,
        cfg.station.id,
        state["id"],
        actor,
        job_id=job_id,
        meta={
            "station": cfg.station.id,
            "kind": "refit",
            "step": "queued",
            "progress": 0.0,
            "reason": "camera or lighting changed",
        },
    )
    client.lpush(keys.history, job_id)
    return RetrainRequest(RetrainRequestStatus.ENQUEUED, job_id)


def retrain_now(cfg: StationConfig, client: redis.Redis, store: Store, reason: str, actor: str) -> RetrainRequest:
    store.audit.record(actor, "maintenance.retrain_now", cfg.station.id, None, {"reason": reason})
    return request_retrain(cfg, client, reason, source="maintenance", actor=actor, dedupe=False)


# -- the refit job ---------------------------------------------------------------------------------------
def refit(station: str, collection_id: str, actor: str) -> dict[str, Any]:
    """RQ entry point: new threshold, normalisation and drift reference from confirmed frames."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("refit runs inside an RQ job")
    cfg = worker_config(station)
    store = open_store(cfg)
    try:
        result = refit_package(cfg, job.connection, store, collection_id, actor, job.id)
        state = _state(job.connection, cfg) or {}
        state["status"] = FrameCollectionStatus.DONE
        _save_state(job.connection, cfg, state)
        return result
    finally:
        release_lock(job.connection, cfg, job.id)
        store.close()


def refit_package(
    cfg: StationConfig, client: redis.Redis, store: Store, collection_id: str, actor: str, job_id: str
) -> dict[str, Any]:
    """New threshold, normalisation and drift reference from the confirmed frames, through the same gate.

    The confirmed frames are split in two (even / odd positions): the first half fits the threshold and the
    drift reference, the second half is the gate's ``confirmed`` set (false rejects of good parts of the new
    condition: a threshold is never judged on the frames it was fitted on). The fixed held-out set gives the
    no-regression rows beside the incumbent. The refit is registered with its gate report and promoted only
    as any other candidate: automatically when ``jobs.auto_promote`` is on and every row passed, else after
    approval."""
    from trainer.heldout import load_rgb

    row = active_model(store)
    if row is None:
        raise InspectorError("no active model to refit", "promote a model first")
    images = [load_rgb(p) for p in _confirmed_frames(cfg, collection_id)]
    fit, check = images[0::2], images[1::2]
    stage = models_dir(cfg) / f".staging-{job_id}"
    shutil.rmtree(stage, ignore_errors=True)
    shutil.copytree(row.package_path, stage)
    manifest = _refit_threshold(cfg, stage, fit)
    cand_pkg = load_package(stage)
    cand, gate = _refit_gate(cfg, cand_pkg, row.package_path, row.version, check)
    ref = _refit_drift_reference(cfg, cand_pkg, fit)
    version = f"{manifest.name}-refit-{time.strftime('%Y%m%d-%H%M%S')}-{hash_file(stage / manifest.model.fp32)[:8]}"
    data = {"refit_from": row.version, "collection": collection_id, "fit_frames": len(fit), "gate_frames": len(check)}
    write_manifest(stage, _refit_manifest(manifest, version, ref, cand, gate, data))
    pkg = load_package(stage)
    final = models_dir(cfg) / version
    stage.rename(final)
    status = register_candidate(
        store, version, str(final), pkg.package_sha256, gate, actor, {"refit_from": row.version}
    )
    promoted = auto_promote(cfg, client, store, version, actor, details={"job_id": job_id, "kind": "refit"})
    return {
        "version": version,
        "path": str(final),
        "status": status.value,
        "gate_passed": gate.passed,
        "failed_rows": [r.line() for r in gate.failed],
        "promoted": promoted,
    }


def _confirmed_frames(cfg: StationConfig, collection_id: str) -> list[Path]:
    """The collection's frames in name order; a refit needs twice ``jobs.min_gate_frames`` of them."""
    frames = sorted(p for p in collection_dir(cfg, collection_id).iterdir() if p.is_file())
    need = 2 * cfg.jobs.min_gate_frames
    if len(frames) < need:
        raise InspectorError(
            f"only {len(frames)} confirmed frames in collection {collection_id}; a refit needs "
            f"{need} (half fit the threshold, half are the gate's confirmed set)",
            f"collect more frames (jobs.collect_frames >= {need}) and confirm them",
        )
    return frames


def _refit_gate(
    cfg: StationConfig, cand_pkg: ModelPackage, incumbent_path: str, incumbent_version: str, check: list[np.ndarray]
) -> tuple[dict[str, LineMetrics], GateReport]:
    """The refit's line metrics (the confirmed half, all good parts, and the held-out set) and its gate report
    (``confirmed`` the primary set; the incumbent scored on the held-out set for the no-regression rows)."""
    from trainer.heldout import load_heldout_set, load_images

    held = load_heldout_set(cfg.data_dir, cfg.jobs.base_data)
    held_images, held_labels = load_images(held.items), [i.label for i in held.items]
    cand = {
        "confirmed": line_metrics(score_frames(cand_pkg, check, cfg).decisions, ["good"] * len(check)),
        "heldout": line_metrics(score_frames(cand_pkg, held_images, cfg).decisions, held_labels),
    }
    inc = {"heldout": line_metrics(score_frames(incumbent_path, held_images, cfg).decisions, held_labels)}
    gate = evaluate_gates(cand, inc, cfg.jobs, incumbent_version, primary="confirmed")
    return cand, gate


def _refit_drift_reference(cfg: StationConfig, cand_pkg: ModelPackage, fit: list[np.ndarray]) -> dict[str, Any]:
    """The drift reference of the refit package, from the frames its threshold was fitted on."""
    scored = score_frames(cand_pkg, fit, cfg)
    return reference_from_samples(
        scored.stats,
        scored.class_probs,
        scored.anomaly_scores,
        scored.decisions,
        frames=f"{len(fit)} confirmed frames after a camera or lighting change",
    )


def _refit_manifest(
    manifest: Manifest,
    version: str,
    ref: dict[str, Any],
    cand: dict[str, LineMetrics],
    gate: GateReport,
    data: dict[str, Any],
) -> Manifest:
    """The refit's manifest: its new version, drift reference, line metrics and gate, and where it came from."""
    return manifest.model_copy(
        update={
            "version": version,
            "created_at": time.time(),
            "drift_reference": ref,
            "line_metrics": cand,
            "gate": gate,
            "data": {**manifest.data, **data},
        }
    )


def _refit_threshold(cfg: StationConfig, stage: Path, images: list[np.ndarray]) -> Manifest:
    manifest = Manifest.model_validate_json((stage / "manifest.json").read_text())
    if manifest.anomaly is None:
        return write_manifest(stage, manifest)
    scored_raw = _raw_scores(cfg, stage, images)
    target = manifest.anomaly.target_false_reject or 0.01
    placed = AnomalySpec.placed(
        float(np.quantile(scored_raw, 1 - target)) * THRESHOLD_MARGIN,
        float(np.median(scored_raw)),
        cfg.policy.anomaly_review_margin,
    )
    anomaly = manifest.anomaly.model_copy(
        update={
            "threshold": placed.threshold,
            "score_origin": placed.score_origin,
            "review_margin": placed.review_margin,
            "score_min": float(scored_raw.min()),
            "score_max": float(scored_raw.max()),
            "threshold_method": "good_quantile",
        }
    )
    return write_manifest(stage, manifest.model_copy(update={"anomaly": anomaly}))


def _raw_scores(cfg: StationConfig, stage: Path, images: list[np.ndarray]) -> np.ndarray:
    outs = infer_frames(load_package(stage), images, cfg.runtime, max_batch=cfg.worker.max_batch)
    return np.array([o.anomaly_raw for o in outs if getattr(o, "anomaly_raw", None) is not None], dtype=float)
