"""The promotion gate: a candidate's line metrics beside the incumbent's, on the same frames, against limits.

Rows (every one must pass, and there must be at least one):

* ``enough_frames`` on the fixed held-out set: at least ``jobs.min_gate_frames`` good and defect frames;
* ``errors``: the candidate scored every frame of every set (no ERROR verdict);
* ``false_reject_ceiling`` on the held-out set: good parts rejected at most ``jobs.false_reject_ceiling``,
  counted in whole parts (:func:`ceiling_rate`);
* ``recall_floor`` per defect class on the held-out set: at least ``jobs.recall_floors[class]``
  (default ``jobs.recall_floor``), counted in whole parts (:func:`floor_rate`);
* ``no_regression`` on every set the incumbent was scored on (held-out and recent labelled frames): per
  class recall, false-reject rate and balanced accuracy no worse than the incumbent's by more than
  ``jobs.regression_tolerance`` plus one frame's worth of the set (a set of 20 cracks cannot tell 0.95 from
  0.90; a one-frame allowance keeps the gate from failing on a single frame of noise).

Pure: no I/O, so the trainer, the refit, periodic validation and the maintenance view share it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

from inspector.contracts.config import JobsSection
from inspector.contracts.lifecycle import GateReport, GateRow, LineMetrics

HELDOUT = "heldout"
RECENT = "recent"
CONFIRMED = "confirmed"


def ceiling_rate(ceiling: float, n_good: int) -> float:
    """The false-reject ceiling in whole parts: ``ceil(ceiling * n)`` of ``n`` good parts (2 % of 97 held-out
    parts is 1.94 parts: the gate allows 2, i.e. 2.06 %; read strictly it would allow 1, a 1 % ceiling)."""
    if n_good <= 0:
        return ceiling
    return math.ceil(ceiling * n_good - 1e-9) / n_good


def floor_rate(floor: float, n: int) -> float:
    """A recall floor in whole parts: ``floor(floor * n)`` of ``n`` defects (0.85 of 16 frays is 13.6: 13 must be
    caught). Limits are rates; on n parts they are met in whole parts, rounded in the candidate's favour by less
    than one part, never more."""
    if n <= 0:
        return floor
    return math.floor(floor * n + 1e-9) / n


def _slack(tol: float, n: int) -> float:
    return tol + (1.0 / n if n > 0 else 0.0)


def _regression_rows(name: str, cand: LineMetrics, inc: LineMetrics, tol: float) -> list[GateRow]:
    rows = []
    for cls, r in sorted(cand.recall.items()):
        if cls not in inc.recall:
            continue
        limit = inc.recall[cls] - _slack(tol, cand.n_per_class.get(cls, 0))
        rows.append(
            GateRow(
                gate="no_regression",
                metric=f"recall:{cls}",
                frame_set=name,
                candidate=r,
                incumbent=inc.recall[cls],
                limit=round(limit, 6),
                passed=r >= limit - 1e-9,
            )
        )
    if cand.false_reject_rate is not None and inc.false_reject_rate is not None:
        limit = inc.false_reject_rate + _slack(tol, cand.n_good)
        rows.append(
            GateRow(
                gate="no_regression",
                metric="false_reject_rate",
                frame_set=name,
                candidate=cand.false_reject_rate,
                incumbent=inc.false_reject_rate,
                limit=round(limit, 6),
                passed=cand.false_reject_rate <= limit + 1e-9,
            )
        )
    if cand.balanced_accuracy is not None and inc.balanced_accuracy is not None:
        one_frame = 1.0 / (2 * min(cand.n_good, cand.n_defect)) if min(cand.n_good, cand.n_defect) else 0.0
        limit = inc.balanced_accuracy - tol - one_frame
        rows.append(
            GateRow(
                gate="no_regression",
                metric="balanced_accuracy",
                frame_set=name,
                candidate=cand.balanced_accuracy,
                incumbent=inc.balanced_accuracy,
                limit=round(limit, 6),
                passed=cand.balanced_accuracy >= limit - 1e-9,
            )
        )
    return rows


def evaluate_gates(
    candidate: Mapping[str, LineMetrics | None],
    incumbent: Mapping[str, LineMetrics | None],
    jobs: JobsSection,
    incumbent_version: str | None = None,
    primary: str = HELDOUT,
) -> GateReport:
    """The gate report of a candidate. ``candidate`` / ``incumbent``: line metrics per frame set, scored on
    the same frames; ``primary`` is the set the absolute limits apply to (the fixed held-out set; the
    confirmed frames of a camera-changed refit)."""
    main = candidate.get(primary)
    rows = _enough_frames_rows(main, primary, jobs)
    if main is not None:
        rows += _absolute_limit_rows(main, incumbent.get(primary), primary, jobs)
    rows += _per_set_rows(candidate, incumbent, jobs)
    return GateReport(
        passed=bool(rows) and all(r.passed for r in rows),
        rows=rows,
        incumbent_version=incumbent_version,
        frame_sets={k: v.n for k, v in candidate.items() if v is not None},
        settings=_gate_settings(jobs),
        evaluated_at=time.time(),
    )


def _enough_frames_rows(main: LineMetrics | None, primary: str, jobs: JobsSection) -> list[GateRow]:
    """``enough_frames`` on the primary set: good frames, and defect frames where the set has (or must have) some."""
    n_min = float(jobs.min_gate_frames)
    if main is None:
        return [GateRow(gate="enough_frames", metric="n", frame_set=primary, candidate=0.0, limit=n_min, passed=False)]
    rows = [
        GateRow(
            gate="enough_frames",
            metric="n_good",
            frame_set=primary,
            candidate=float(main.n_good),
            limit=n_min,
            passed=main.n_good >= n_min,
        )
    ]
    if main.n_defect or primary == HELDOUT:
        rows.append(
            GateRow(
                gate="enough_frames",
                metric="n_defect",
                frame_set=primary,
                candidate=float(main.n_defect),
                limit=n_min,
                passed=main.n_defect >= n_min,
            )
        )
    return rows


def _absolute_limit_rows(
    main: LineMetrics, inc_main: LineMetrics | None, primary: str, jobs: JobsSection
) -> list[GateRow]:
    """The absolute limits on the primary set: the false-reject ceiling and each defect class's recall floor."""
    frr = main.false_reject_rate
    ceiling = ceiling_rate(jobs.false_reject_ceiling, main.n_good)
    rows = [
        GateRow(
            gate="false_reject_ceiling",
            metric="false_reject_rate",
            frame_set=primary,
            candidate=frr,
            incumbent=inc_main.false_reject_rate if inc_main else None,
            limit=round(ceiling, 6),
            passed=frr is not None and frr <= ceiling + 1e-9,
        )
    ]
    for cls, r in sorted(main.recall.items()):
        floor = floor_rate(jobs.recall_floors.get(cls, jobs.recall_floor), main.n_per_class.get(cls, 0))
        rows.append(
            GateRow(
                gate="recall_floor",
                metric=f"recall:{cls}",
                frame_set=primary,
                candidate=r,
                incumbent=inc_main.recall.get(cls) if inc_main else None,
                limit=round(floor, 6),
                passed=r >= floor - 1e-9,
            )
        )
    return rows


def _per_set_rows(
    candidate: Mapping[str, LineMetrics | None], incumbent: Mapping[str, LineMetrics | None], jobs: JobsSection
) -> list[GateRow]:
    """On every scored set: ``errors``, and ``no_regression`` against the incumbent where it was scored too."""
    rows: list[GateRow] = []
    for name, cand in sorted(candidate.items()):
        if cand is None:
            continue
        rows.append(
            GateRow(
                gate="errors",
                metric="error_verdicts",
                frame_set=name,
                candidate=float(cand.errors),
                limit=0.0,
                passed=cand.errors == 0,
            )
        )
        inc = incumbent.get(name)
        if inc is not None:
            rows += _regression_rows(name, cand, inc, jobs.regression_tolerance)
    return rows


def _gate_settings(jobs: JobsSection) -> dict[str, float | dict[str, float]]:
    """The limits the report was evaluated with, recorded beside its rows."""
    return {
        "recall_floor": jobs.recall_floor,
        "recall_floors": dict(jobs.recall_floors),
        "false_reject_ceiling": jobs.false_reject_ceiling,
        "regression_tolerance": jobs.regression_tolerance,
        "min_gate_frames": float(jobs.min_gate_frames),
    }
