"""The evaluate step of a retraining (``trainer.retrain``): candidate and incumbent on the same frames, the gate,
the drift reference; written to ``work/evaluation.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inspector.contracts.config import StationConfig
from inspector.contracts.errors import DataError
from inspector.contracts.labels import GOOD_LABEL
from inspector.contracts.lifecycle import LineMetrics
from inspector.drift.reference import reference_from_samples
from inspector.evaluation import Scored, line_metrics, score_frames
from inspector.gates import HELDOUT, RECENT, evaluate_gates
from inspector.runtime.package import ModelPackage
from trainer.heldout import LabelledImage, load_images
from trainer.retrain_snapshot import items_of
from trainer.retrain_staging import (
    DRAFT_FILE,
    EVALUATION_FILE,
    SNAPSHOT_FILE,
    Say,
    read_work_file,
    say_or_print,
    work_dir,
    write_work_file,
)


def load_draft(stage: Path) -> tuple[Any, ModelPackage]:
    """The train step's draft and a package view of it (the station runtime reads it as it will be shipped)."""
    from trainer.package import Draft, draft_package

    draft = Draft.load(work_dir(stage) / DRAFT_FILE)
    return draft, draft_package(draft.stage, draft.manifest)


def evaluate(
    cfg: StationConfig,
    stage: str | Path,
    incumbent: str | Path | None = None,
    incumbent_version: str | None = None,
    say: Say | None = None,
) -> dict[str, Any]:
    """Candidate and incumbent through the station runtime and ``decide()`` on the SAME held-out frames and
    the SAME recent frames; the gate; the drift reference. Writes ``work/evaluation.json``.

    Gate primary set: the fixed held-out set, except after a condition change, where the recent frames of
    the new condition are (when they hold ``jobs.min_gate_frames`` good frames): the held-out set shows the
    old lighting. Drift reference: candidate scores of good frames it never saw: the held-out goods; after
    a condition change the recent gate goods of the new condition."""
    say = say_or_print(say)
    stage = Path(stage)
    snap = read_work_file(stage, SNAPSHOT_FILE)
    _, pkg = load_draft(stage)
    sets = {HELDOUT: items_of(snap["heldout"]), RECENT: items_of(snap["recent"])}
    cand, inc, scored = _score_sets(cfg, sets, pkg, incumbent, say)
    recent = cand.get(RECENT)
    primary = (
        RECENT
        if snap["condition_changed"] and recent is not None and recent.n_good >= cfg.jobs.min_gate_frames
        else HELDOUT
    )
    gate = evaluate_gates(cand, inc, cfg.jobs, incumbent_version, primary=primary)
    say(f"gate on {primary}: {'PASS' if gate.passed else 'FAIL'}" + "".join(f"\n  {r.line()}" for r in gate.failed))
    ref_set = (
        RECENT
        if snap["condition_changed"] and RECENT in scored and any(i.label == GOOD_LABEL for i in sets[RECENT])
        else HELDOUT
    )
    ref = _reference(scored, sets, ref_set, snap["condition_changed"])
    body = {
        "line_metrics": {k: v.model_dump(mode="json") for k, v in cand.items() if v is not None},
        "incumbent_line_metrics": {k: v.model_dump(mode="json") for k, v in inc.items() if v is not None},
        "gate": gate.model_dump(mode="json"),
        "primary": primary,
        "drift_reference": ref,
        "incumbent": str(incumbent) if incumbent else None,
        "incumbent_version": incumbent_version,
    }
    write_work_file(stage, EVALUATION_FILE, body)
    return {
        "primary": primary,
        "passed": gate.passed,
        "failed_rows": [r.line() for r in gate.failed],
        "line_metrics": body["line_metrics"],
        "incumbent_line_metrics": body["incumbent_line_metrics"],
        "drift_reference_frames": ref.get("frames"),
    }


def _score_sets(
    cfg: StationConfig,
    sets: dict[str, list[LabelledImage]],
    pkg: ModelPackage,
    incumbent: str | Path | None,
    say: Say,
) -> tuple[dict[str, LineMetrics | None], dict[str, LineMetrics | None], dict[str, Scored]]:
    """Candidate (and incumbent, when there is one) line metrics on every non-empty set, and the candidate's
    scored frames per set."""
    cand: dict[str, LineMetrics | None] = {}
    inc: dict[str, LineMetrics | None] = {}
    scored: dict[str, Scored] = {}
    for set_name, items in sets.items():
        if not items:
            continue
        images = load_images(items)
        labels = [i.label for i in items]
        scored[set_name] = score_frames(pkg, images, cfg)
        cand[set_name] = line_metrics(scored[set_name].decisions, labels)
        say(f"evaluate: candidate on {set_name} ({len(items)} frames): {_brief_metrics(cand[set_name])}")
        if incumbent is not None:
            inc_scored = score_frames(incumbent, images, cfg)
            inc[set_name] = line_metrics(inc_scored.decisions, labels)
            say(f"evaluate: incumbent on {set_name}: {_brief_metrics(inc[set_name])}")
    return cand, inc, scored


def _brief_metrics(m: LineMetrics) -> str:
    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    return (
        f"false-reject {f(m.false_reject_rate)} of {m.n_good} good, recall {f(m.recall_all)} of {m.n_defect} "
        f"defects " + " ".join(f"{c} {r:.2f}" for c, r in m.recall.items())
    )


def _reference(
    scored: dict[str, Scored], sets: dict[str, list[LabelledImage]], ref_set: str, changed: bool
) -> dict[str, Any]:
    if ref_set not in scored:
        raise DataError(
            "no unseen good frames to build the drift reference from",
            "set jobs.base_data (its test/good is the held-out set) or label more good frames",
        )
    s, items = scored[ref_set], sets[ref_set]
    idx = [k for k, i in enumerate(items) if i.label == GOOD_LABEL]
    if not idx:
        raise DataError(f"the {ref_set} frames hold no good frame for the drift reference", "label good frames")
    pick = [s.stats[k] for k in idx]
    # The monitor's classifier confidence covers EVERY part on the line, defects included: its reference is
    # every frame of the set (a line with fewer defects than the set is more confident: the harmless
    # direction of that one-sided statistic). From good frames only, the defects the line makes at its normal
    # rate tripped it ~120 frames after a promotion (the demo's drift scenario: a second, needless retraining).
    ref = reference_from_samples(
        pick,
        list(s.class_probs),
        [s.anomaly_scores[k] for k in idx],
        [s.decisions[k] for k in idx],
        frames=f"{len(idx)} {ref_set} good frames ({'new condition' if changed else 'never trained on'})",
    )
    # The line's class mix is unknown here (the set's is not the line's; good frames alone are 100 % good,
    # against which every defective part is "drift": the scenario alarmed on class_mix during good production,
    # before any change): not monitored, rather than monitored against a mix no line with defects matches.
    ref.pop("class_mix", None)
    return ref
