"""The retraining pipeline's steps, each a small function of JSON-able inputs and outputs.

snapshot -> train -> export -> quantise -> evaluate (candidate and incumbent, same frames) -> package -> gate

Everything a step writes goes into the job's staging folder ``<data_dir>/models/.staging-<job id>``;
only :func:`package` renames it to ``<data_dir>/models/<version>`` after ``load_package`` verified it, so
a killed worker can leave a staging folder behind, never a half-built package under a version name.

:func:`train_candidate` is the one place that knows which trainer fits the model: the trainer's good-only
anomaly model (``trainer.pipelines.fit_package``: pretrained backbone + per-position Gaussian, threshold
from held-out good frames) when the training extra is installed, else the station's tiny numpy model
(``inspector.models.tiny_package``) so that a lean station can still recalibrate.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from inspector.contracts.config import StationConfig
from inspector.contracts.errors import DataError, InspectorError
from inspector.contracts.manifest import Manifest
from inspector.drift.reference import reference_from_samples
from inspector.runtime.package import hash_file, load_package, write_manifest
from jobs.data import (
    GOOD,
    Item,
    base_train_items,
    heldout_items,
    load_images,
    recent_labels,
    snapshot_hash,
    split_current,
)
from jobs.evaluation import Scored, line_metrics, score_package

PACKAGE_NAME = "station-anomaly"


def models_dir(cfg: StationConfig) -> Path:
    return (Path(cfg.data_dir) / "models").resolve()


def staging_dir(cfg: StationConfig, job_id: str) -> Path:
    return models_dir(cfg) / f".staging-{job_id}"


# -- snapshot -------------------------------------------------------------------------------------------
def snapshot(cfg: StationConfig, store: Any, since: float, condition_changed: bool) -> dict[str, Any]:
    """Base data + labels since ``since``, split into what to train on and what to evaluate on."""
    from inspector.archive import Archive

    recent = recent_labels(store, Archive.for_data_dir(cfg.data_dir), since)
    cur_train, cur_eval = split_current(recent)
    n_good = cfg.jobs.train_images
    base = [] if condition_changed and sum(i.label == GOOD for i in cur_train) >= 4 else \
        base_train_items(cfg.jobs.base_data, n_good, n_good // 2)
    train = base + cur_train
    if sum(i.label == GOOD for i in train) < 4:
        raise DataError(f"only {sum(i.label == GOOD for i in train)} good frames to train on",
                        "label more good frames, or set jobs.base_data")
    held = heldout_items(cfg.jobs.base_data, cfg.jobs.heldout_limit) if cfg.jobs.base_data else []
    every = train + cur_eval + held
    return {"train": [i.as_dict() for i in train], "recent": [i.as_dict() for i in cur_eval],
            "heldout": [i.as_dict() for i in held], "hash": snapshot_hash(every),
            "counts": {"train": len(train), "recent": len(cur_eval), "heldout": len(held),
                       "recent_labels": len(recent)}, "condition_changed": condition_changed}


# -- train ----------------------------------------------------------------------------------------------
def train_candidate(train: list[Item], out_dir: Path, name: str = PACKAGE_NAME, image_size: int = 256) -> dict[str, Any]:
    """Fit a candidate on the snapshot's training items; write a loadable package folder at ``out_dir``."""
    goods = [i for i in train if i.label == GOOD]
    defects = [i for i in train if i.label != GOOD]
    if len(defects) < 2:
        raise DataError(f"only {len(defects)} labelled defect frames", "label defects, or set jobs.base_data")
    t0 = time.perf_counter()
    fit = _trainer_fit()
    if fit is not None:
        from trainer.anomaly import AnomalyConfig

        fit(load_images(goods), load_images(defects), out_dir, name=name,
            cfg=AnomalyConfig(image_size=(image_size, image_size)))
        kind = "trainer.anomaly"
    else:
        from inspector.models.tiny_package import build_tiny_package

        build_tiny_package(out_dir, load_images(goods), load_images(defects), name=name)
        _anomaly_only(out_dir)
        kind = "tiny-cell-deviation"
    return {"trainer": kind, "n_good": len(goods), "n_defect": len(defects),
            "seconds": round(time.perf_counter() - t0, 2)}


def _anomaly_only(folder: Path) -> None:
    """Serve only the good-only anomaly scorer: the tiny logistic classifier is too weak to decide with."""
    manifest = Manifest.model_validate_json((folder / "manifest.json").read_text())
    outputs = manifest.model.outputs.model_copy(update={"class_probs": None})
    write_manifest(folder, manifest.model_copy(update={
        "task": "anomaly", "class_names": None, "temperature": None,
        "model": manifest.model.model_copy(update={"outputs": outputs})}))


def _trainer_fit() -> Any:
    """The trainer's good-only anomaly package builder, when the training extra is installed."""
    try:
        from trainer.pipelines import fit_package  # noqa: PLC0415 - torch only where the trainer is installed
    except ImportError:
        return None
    return fit_package


# -- export / quantise ---------------------------------------------------------------------------------
def export_check(stage: Path, batches: tuple[int, ...] = (1, 2, 8)) -> dict[str, Any]:
    """The exported graph runs in ONNX Runtime at several batch sizes (anomalib exports fix the batch)."""
    manifest = Manifest.model_validate_json((stage / "manifest.json").read_text())
    h, w = manifest.preprocess.size
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(stage / manifest.model.fp32), opts, providers=["CPUExecutionProvider"])
    for b in batches:
        outs = sess.run(None, {manifest.model.input_name: np.zeros((b, 3, h, w), np.float32)})
        if any(o.shape[0] != b for o in outs if o.ndim):
            raise InspectorError(f"exported graph gives the wrong batch size at batch {b}", "re-export dynamically")
    return {"batches": list(batches), "fp32": manifest.model.fp32}


def quantise(stage: Path) -> dict[str, Any]:
    """INT8 only pays for plain convolutions (field notes); a graph without Conv stays fp32."""
    import onnx

    manifest = Manifest.model_validate_json((stage / "manifest.json").read_text())
    ops = {n.op_type for n in onnx.load(str(stage / manifest.model.fp32)).graph.node}
    if "Conv" not in ops:
        return {"int8": None, "skipped": "no convolutions in the graph: INT8 would not be faster"}
    return {"int8": None, "skipped": "CNN INT8 (trainer.quantize.quantize_and_gate) is not wired into the station job yet"}


# -- evaluate -------------------------------------------------------------------------------------------
def _score(path: str | Path | None, items: list[Item], cfg: StationConfig) -> Scored | None:
    if path is None or not items:
        return None
    return score_package(path, load_images(items), cfg)


def evaluate(cfg: StationConfig, stage: Path, incumbent: str | None, snap: dict[str, Any]) -> dict[str, Any]:
    """Candidate and incumbent on the same fixed held-out frames and on the same recent labelled frames."""
    from jobs.data import items_from_dicts

    out: dict[str, Any] = {}
    for set_name in ("heldout", "recent"):
        items = items_from_dicts(snap[set_name])
        labels = [i.label for i in items]
        entry: dict[str, Any] = {"n": len(items)}
        for who, path in (("candidate", stage), ("incumbent", incumbent)):
            scored = _score(path, items, cfg)
            entry[who] = line_metrics(scored.decisions, labels) if scored else None
        out[set_name] = entry
    enough = (out["recent"]["candidate"] or {}).get("n_good", 0) >= cfg.jobs.min_gate_frames
    out["gate_set"] = "recent" if snap["condition_changed"] and enough else "heldout"
    if out[out["gate_set"]]["candidate"] is None:
        out["gate_set"] = "recent" if out["recent"]["candidate"] else "heldout"
    return out


# -- package --------------------------------------------------------------------------------------------
def reference_items(snap: dict[str, Any]) -> list[Item]:
    """Good frames of the condition the package will run under that the model was NOT fitted on: a fitted
    density model scores its own training frames low, so a reference built on them trips drift alarms on
    every unseen good part. After a change: the current condition's evaluation frames; else the held-out set."""
    from jobs.data import items_from_dicts

    current = [i for i in items_from_dicts(snap["recent"]) if i.condition == "current" and i.label == GOOD]
    held = [i for i in items_from_dicts(snap["heldout"]) if i.label == GOOD]
    pool = current if snap["condition_changed"] and current else held or current
    if not pool:
        raise DataError("no unseen good frames to build the drift reference from",
                        "set jobs.base_data (its test/good is the held-out set) or label more good frames")
    return pool


def package(cfg: StationConfig, stage: Path, snap: dict[str, Any], metrics: dict[str, Any],
            job: dict[str, Any]) -> dict[str, Any]:
    """Final manifest (version, drift reference, metrics, data), verify with load_package, rename into place."""
    manifest = Manifest.model_validate_json((stage / "manifest.json").read_text())
    goods = reference_items(snap)
    scored = score_package(stage, load_images(goods), cfg)
    ref = reference_from_samples(scored.stats, scored.class_probs, scored.anomaly_scores, scored.decisions,
                                 frames=f"{len(goods)} good frames ({'current' if snap['condition_changed'] else 'base'} condition)")
    short = hash_file(stage / manifest.model.fp32)[:8]
    version = f"{manifest.name}-{time.strftime('%Y%m%d-%H%M%S')}-{short}-{job['id'][:6]}"
    manifest = manifest.model_copy(update={
        "version": version, "created_at": time.time(), "drift_reference": ref,
        "metrics": {"line": metrics}, "data": {"snapshot_sha256": snap["hash"], "counts": snap["counts"],
                                               "condition_changed": snap["condition_changed"]},
        "checklist": {"job": job},
    })
    write_manifest(stage, manifest)
    pkg = load_package(stage)
    final = models_dir(cfg) / version
    if final.exists():
        raise InspectorError(f"{final} already exists", "versions are unique; remove the stray folder")
    stage.rename(final)
    return {"version": version, "path": str(final), "sha256": pkg.package_sha256}


def sweep_staging(cfg: StationConfig, keep: str) -> int:
    """Remove staging folders of earlier, dead attempts (never a finished package)."""
    n = 0
    for p in models_dir(cfg).glob(".staging-*"):
        if p.name != keep and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
            n += 1
    return n


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
