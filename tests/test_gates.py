"""The promotion gate: rows per check, candidate beside incumbent, limits, sampling allowance."""

from __future__ import annotations

from inspector.contracts.config import JobsSection
from inspector.contracts.lifecycle import LineMetrics
from inspector.evaluation import line_metrics
from inspector.gates import evaluate_gates

JOBS = JobsSection(
    recall_floor=0.8,
    recall_floors={"crack": 0.5},
    false_reject_ceiling=0.05,
    regression_tolerance=0.01,
    min_gate_frames=10,
)


def _m(frr: float, recall: dict[str, float], n_good: int = 50, n_per: int = 50, errors: int = 0) -> LineMetrics:
    n_def = n_per * len(recall)
    rec_all = sum(recall.values()) / len(recall) if recall else None
    ba = ((1 - frr) + rec_all) / 2 if rec_all is not None else 1 - frr
    return LineMetrics(
        n=n_good + n_def,
        n_good=n_good,
        n_defect=n_def,
        false_reject_rate=frr,
        recall=recall,
        n_per_class={c: n_per for c in recall},
        recall_all=rec_all,
        balanced_accuracy=ba,
        errors=errors,
    )


def _failed(report) -> set[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    return {(r.gate, r.metric, r.frame_set) for r in report.failed}


def test_passing_candidate_and_first_model() -> None:
    cand = _m(0.02, {"crack": 0.6, "blowhole": 0.9})
    assert evaluate_gates({"heldout": cand}, {"heldout": _m(0.03, {"crack": 0.6, "blowhole": 0.88})}, JOBS).passed
    first = evaluate_gates({"heldout": cand}, {}, JOBS)  # no incumbent: no regression rows
    assert first.passed and not [r for r in first.rows if r.gate == "no_regression"]


def test_each_limit_fails_its_own_row() -> None:
    bad = evaluate_gates({"heldout": _m(0.08, {"crack": 0.4, "blowhole": 0.7})}, {}, JOBS)
    assert _failed(bad) == {
        ("false_reject_ceiling", "false_reject_rate", "heldout"),
        ("recall_floor", "recall:crack", "heldout"),
        ("recall_floor", "recall:blowhole", "heldout"),
    }
    few = evaluate_gates({"heldout": _m(0.0, {"crack": 1.0}, n_per=3)}, {}, JOBS)
    assert _failed(few) == {("enough_frames", "n_defect", "heldout")}
    err = evaluate_gates({"heldout": _m(0.0, {"crack": 1.0}, errors=1)}, {}, JOBS)
    assert _failed(err) == {("errors", "error_verdicts", "heldout")}
    assert not evaluate_gates({}, {}, JOBS).passed  # no held-out set: never passes


def test_no_regression_allows_one_frame_of_noise_and_no_more() -> None:
    inc = _m(0.02, {"crack": 0.90, "blowhole": 0.9}, n_per=20)
    one_frame = _m(0.02, {"crack": 0.85, "blowhole": 0.9}, n_per=20)  # one crack of 20 fewer
    assert evaluate_gates({"heldout": one_frame}, {"heldout": inc}, JOBS).passed
    two_frames = _m(0.02, {"crack": 0.80, "blowhole": 0.9}, n_per=20)
    report = evaluate_gates({"heldout": two_frames}, {"heldout": inc}, JOBS)
    assert ("no_regression", "recall:crack", "heldout") in _failed(report)
    row = next(r for r in report.rows if r.gate == "no_regression" and r.metric == "recall:crack")
    assert row.incumbent == 0.90 and row.candidate == 0.80 and abs(row.limit - (0.90 - 0.01 - 0.05)) < 1e-9


def test_recent_set_regression_rows_beside_heldout() -> None:
    cand = {"heldout": _m(0.02, {"crack": 0.9}), "recent": _m(0.0, {"crack": 0.5}, n_good=20, n_per=20)}
    inc = {"heldout": _m(0.02, {"crack": 0.9}), "recent": _m(0.0, {"crack": 0.9}, n_good=20, n_per=20)}
    report = evaluate_gates(cand, inc, JOBS, incumbent_version="v1")
    assert ("no_regression", "recall:crack", "recent") in _failed(report)
    assert report.frame_sets == {"heldout": 100, "recent": 40} and report.incumbent_version == "v1"


def test_line_metrics_counts_review_and_error_as_rejects() -> None:
    m = line_metrics(["PASS", "REVIEW", "FAIL", "PASS", "ERROR"], ["good", "good", "crack", "crack", "good"])
    assert m.false_reject_rate == 2 / 3 and m.recall == {"crack": 0.5} and m.errors == 1
    assert m.n_per_class == {"crack": 2}


def test_false_reject_ceiling_counts_whole_parts() -> None:
    from inspector.gates import ceiling_rate

    assert abs(ceiling_rate(0.02, 97) - 2 / 97) < 1e-12  # 1.94 parts -> 2 parts allowed
    assert abs(ceiling_rate(0.02, 100) - 0.02) < 1e-12  # exactly 2 parts: no rounding
    two = evaluate_gates(
        {"heldout": _m(2 / 97, {"crack": 0.9}, n_good=97)}, {}, JOBS.model_copy(update={"false_reject_ceiling": 0.02})
    )
    three = evaluate_gates(
        {"heldout": _m(3 / 97, {"crack": 0.9}, n_good=97)}, {}, JOBS.model_copy(update={"false_reject_ceiling": 0.02})
    )
    assert two.passed and ("false_reject_ceiling", "false_reject_rate", "heldout") in _failed(three)


def test_recall_floor_counts_whole_parts() -> None:
    from inspector.gates import floor_rate

    assert abs(floor_rate(0.85, 16) - 13 / 16) < 1e-12 and abs(floor_rate(0.85, 20) - 0.85) < 1e-12
    jobs = JOBS.model_copy(update={"recall_floors": {}, "recall_floor": 0.85})
    assert evaluate_gates({"heldout": _m(0.0, {"fray": 13 / 16}, n_per=16)}, {}, jobs).passed
    assert not evaluate_gates({"heldout": _m(0.0, {"fray": 12 / 16}, n_per=16)}, {}, jobs).passed
