"""The export step of a retraining's train step (``trainer.retrain_fit``): the fitted candidate as a draft package.

Export, parity and the precision gate on the fixed held-out set (``prepare_package``; an anomaly-only candidate
also with its scorer fitted on OpenVINO's bf16 features, ``trainer.bf16_refit``); a fused (combined) package gets
canaries expected by its fused score alone. The draft is saved to ``work/draft.json`` for the later steps.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inspector.contracts.config import StationConfig
from trainer.heldout import LabelledImage, load_images
from trainer.retrain_snapshot import evenly_spaced, heldout_eval_set, items_of
from trainer.retrain_staging import DRAFT_FILE, Say, work_dir

if TYPE_CHECKING:
    from trainer.package_int8 import RefitHook


def export_draft(
    cfg: StationConfig,
    stage: Path,
    kind: str,
    net: Any,
    spec: Any,
    items: list[LabelledImage],
    snap: dict[str, Any],
    seconds: dict[str, float],
    say: Say,
    bf16_refit: RefitHook | None = None,
) -> Any:
    """Export, parity and INT8 gate on the held-out set (``prepare_package``; ``bf16_refit``: the anomaly-only
    candidate's scorer fitted on bf16 features, one more candidate of the gate); the draft is saved for later steps."""
    from trainer.package import prepare_package
    from trainer.quantize import QuantConfig

    held = heldout_eval_set(items_of(snap["heldout"]))
    calib_items = evenly_spaced(items, cfg.jobs.calibration_images)
    calibration = load_images(calib_items) if len(calib_items) >= QuantConfig().min_calibration_images else None
    if calibration is None:
        say(f"INT8 not attempted: {len(calib_items)} training frames, the gate needs 100 (the checklist will say so)")
    t = time.perf_counter()
    draft = prepare_package(stage / "package", net.eval(), spec, held, calibration, say=say, bf16_refit=bf16_refit)
    seconds["export_int8_bench"] = round(time.perf_counter() - t, 1)
    if kind == "combined":
        draft = _score_decides(draft, spec, held)
    draft.save(work_dir(stage) / DRAFT_FILE)
    return draft


def _score_decides(draft: Any, spec: Any, held: Any) -> Any:
    """A fused package: ``classifier_decides=False`` and canaries expected by the fused score alone (the
    classifier only names the class, so its confidence must not pick or veto a canary)."""
    from trainer.export import run_onnx
    from trainer.network import OUTPUT_PROBS
    from trainer.package import FP32_FILE, preprocess_frames, write_canaries

    outs = run_onnx(draft.stage / FP32_FILE, preprocess_frames(spec, held.images))
    outs.pop(OUTPUT_PROBS, None)
    shutil.rmtree(draft.stage / "canary", ignore_errors=True)
    canaries = write_canaries(draft.stage, replace(spec, class_names=None), held, outs)
    m = draft.manifest
    outputs = m.model.outputs.model_copy(update={"classifier_decides": False})
    draft.manifest = m.model_copy(
        update={"model": m.model.model_copy(update={"outputs": outputs}), "canaries": canaries}
    )
    return draft
