"""The retraining of a station: one path, owned by the trainer; ``jobs/`` only calls these steps.

    snapshot(cfg, store, stage, since)          held-out set, base items, a labelling dataset version, splits
    train(cfg, stage, incumbent)                the SAME KIND of package as the incumbent: fit, export, INT8 gate
    evaluate(cfg, stage, incumbent)             candidate and incumbent on the same frames, the gate, drift reference
    package(cfg, stage, job_id)                 manifest written ONCE with everything, verified, renamed into place

One module per step (``retrain_snapshot``, ``retrain_fit``, ``retrain_evaluate``; the package step is here),
the staging folder and its work files in ``retrain_staging``; this module is the steps' one import path.

Each step is a function of plain inputs (config, store, paths, ids) that returns JSON-able info, and reads
what an earlier step left in the staging folder ``<data_dir>/models/.staging-<job id>/``::

    labels/            the labelling service's exported dataset version (classification layout)
    work/              snapshot.json, the classifier run, draft.json (the in-memory manifest), evaluation.json
    package/           ONNX files and canaries; manifest.json appears only in :func:`package`

:func:`package` renames ``package/`` to ``<data_dir>/models/<version>`` after ``load_package`` verified it and
then deletes the staging folder (the label export is a view of the archive: its dataset version hash and
the image hashes in the manifest's data snapshot name exactly what was trained on). A killed worker leaves a
staging folder behind, never a half-built package under a version name.

Data (``trainer.heldout``): the station's frozen held-out set is never trained on (every training item whose
sha256 is in it is dropped and counted). Training material: the base folder's ``train/good`` (at most
``jobs.train_images``, evenly spaced) and its test images not held out, plus every current label. Labels made
since the incumbent was promoted (``since``) are split per label by sha256 order: even positions train,
odd positions form the "recent" gate set, scored for candidate and incumbent alike.

Kind: the incumbent manifest's ``task`` (a combined model stays combined: classifier head on the labelled
classes plus the good-only scorer on one backbone pass); no incumbent: combined when labelled defects of at
least 2 classes reach ``jobs.min_class_frames`` training frames, else anomaly-only. A defect class below the
minimum gets no classifier output: a class learnt from a handful of frames is a confident guess (FIELD-NOTES:
a probe fitted on 10 % of the defects fell below the good-only score), and the anomaly scorer still rejects
its parts; its frames stay in the gate sets, so the gate measures that.

A combined package is FUSED (``trainer.fusion_head``): one graph whose ``anomaly_score`` is the learning
curve's fused defect score (``wknn`` good-only score + a guarded ridge probe on pooled stages 2-4 and the
scorer's patch statistics, fitted on the bank goods, inner cross-fitted, and EVERY labelled defect of any
class), thresholded on good frames neither the bank nor the probe saw by the curve's Clopper-Pearson rule;
``outputs.classifier_decides`` is False: that score alone decides, the classifier head only names the class
(``inspector.decision._decide_by_score``), and the canaries are chosen by the fused score alone. With fewer
labelled defects than ``FusionConfig.min_defects`` the fused score is the (monotone) good-only score.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from inspector.contracts.config import StationConfig
from inspector.contracts.errors import InspectorError
from inspector.contracts.lifecycle import GateReport, LineMetrics
from inspector.runtime.package import hash_file, load_package
from trainer.retrain_evaluate import evaluate, load_draft
from trainer.retrain_fit import RETRAIN_RECIPE_FIELDS, choose_kind, classifier_classes, train
from trainer.retrain_snapshot import heldout_eval_set, items_of, snapshot, snapshot_digest
from trainer.retrain_staging import (
    DRAFT_FILE,
    EVALUATION_FILE,
    SNAPSHOT_FILE,
    Say,
    models_dir,
    read_work_file,
    say_or_print,
    staging_dir,
    sweep_staging,
)

__all__ = [
    "DRAFT_FILE",
    "EVALUATION_FILE",
    "RETRAIN_RECIPE_FIELDS",
    "SNAPSHOT_FILE",
    "Say",
    "build_candidate",
    "choose_kind",
    "classifier_classes",
    "evaluate",
    "gate_of",
    "models_dir",
    "package",
    "snapshot",
    "snapshot_digest",
    "staging_dir",
    "sweep_staging",
    "train",
]


# -- package --------------------------------------------------------------------------------------------
def package(
    cfg: StationConfig, stage: str | Path, job_id: str, reason: str = "", say: Say | None = None
) -> dict[str, Any]:
    """Manifest written ONCE (version, line metrics, gate, drift reference, data snapshot, checklist),
    verified by ``load_package``, renamed to ``<data_dir>/models/<version>``; the staging folder goes."""
    from trainer.package import ManifestExtras, finish_package

    say = say_or_print(say)
    stage = Path(stage)
    snap = read_work_file(stage, SNAPSHOT_FILE)
    ev = read_work_file(stage, EVALUATION_FILE)
    draft, _ = load_draft(stage)
    short = hash_file(draft.stage / draft.manifest.model.fp32)[:8]
    version = f"{draft.manifest.name}-{time.strftime('%Y%m%d-%H%M%S')}-{short}-{job_id[:6]}"
    data = {
        "snapshot_sha256": snap["hash"],
        "dataset_version": snap["dataset_version"],
        "heldout_digest": snap["heldout_digest"],
        "heldout_source": snap["heldout_source"],
        "dropped_heldout": snap["dropped_heldout"],
        "counts": snap["counts"],
        "labels": snap["labels"],
        "condition_changed": snap["condition_changed"],
        "base_goods_used": snap["base_goods_used"],
        "base_data": snap["base_data"],
        "job": {"id": job_id, "reason": reason},
        "train_sha256": sorted(i["sha256"] for i in snap["train"]),
    }
    extras = ManifestExtras(
        version=version,
        line_metrics={k: LineMetrics.model_validate(v) for k, v in ev["line_metrics"].items()},
        gate=GateReport.model_validate(ev["gate"]),
        drift_reference=ev["drift_reference"],
        data=data,
        metrics={"incumbent_line_metrics": ev["incumbent_line_metrics"], "gate_primary": ev["primary"]},
    )
    manifest, report = finish_package(draft, heldout_eval_set(items_of(snap["heldout"])), extras, say=say)
    final = models_dir(cfg) / version
    if final.exists():
        raise InspectorError(f"{final} already exists", "versions are unique; remove the stray folder")
    draft.stage.rename(final)
    pkg = load_package(final)
    shutil.rmtree(stage, ignore_errors=True)
    failed = [k for k, i in report.get("items", {}).items() if not i.get("passed")]
    say(f"package {version}: checklist {'PASS' if not failed else 'FAIL ' + ', '.join(failed)}")
    return {
        "version": version,
        "path": str(final),
        "sha256": pkg.package_sha256,
        "task": manifest.task,
        "gate_passed": bool(manifest.gate and manifest.gate.passed),
        "checklist_failed": failed,
    }


def gate_of(path: str | Path) -> GateReport | None:
    """The gate report stored in a package's manifest."""
    return load_package(path).manifest.gate


# -- all steps ------------------------------------------------------------------------------------------
def build_candidate(
    cfg: StationConfig,
    store: Any,
    job_id: str,
    since: float = 0.0,
    incumbent: str | Path | None = None,
    incumbent_version: str | None = None,
    condition_changed: bool = False,
    reason: str = "",
    say: Say | None = None,
) -> dict[str, Any]:
    """Every step in order (scripts, tests, the first model of a station); the RQ job runs them one by one."""
    stage = staging_dir(cfg, job_id)
    models_dir(cfg).mkdir(parents=True, exist_ok=True)
    shutil.rmtree(stage, ignore_errors=True)
    out: dict[str, Any] = {}
    out["snapshot"] = snapshot(cfg, store, stage, since, condition_changed, say=say)
    out["train"] = train(cfg, stage, incumbent, say=say)
    out["evaluate"] = evaluate(cfg, stage, incumbent, incumbent_version, say=say)
    out["package"] = package(cfg, stage, job_id, reason, say=say)
    return out
