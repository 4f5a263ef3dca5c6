"""``python -m trainer.threshold_study``: one row per held-out fold, then the shipped cross-fit rule, on the demo's
synthetic parts (64 px input, 50 good training parts)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from jobs.scenario import DriftScenario, write_base_data
from trainer.anomaly import AnomalyConfig
from trainer.threshold_study import app, study


def test_study_rows_hold_out_every_good_once_and_end_with_the_shipped_rule(tmp_path: Path) -> None:
    data = write_base_data(
        tmp_path / "base", DriftScenario(image_size=128, train_good=50, test_good=10, test_defects=4)
    )
    rows = study(data, folds=5, cfg=AnomalyConfig(image_size=(64, 64)))
    assert len(rows) == 6
    folds, shipped = rows[:5], rows[5]
    assert sum(r["threshold_images"] for r in folds) == 50 and shipped["threshold_images"] == 50
    assert "holdout rule" in folds[2]["rule"] and "cross-fit (default)" in shipped["rule"]
    for r in rows:
        assert 0.0 <= r["recall"] <= 1.0 and 0.0 <= r["false_reject_rate"] <= 1.0
        assert r["false_reject_ci95"] is not None
    assert shipped["image_auroc"] > 0.9, shipped  # the synthetic defects are plain to see


def test_study_refuses_fewer_than_two_folds(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, [str(tmp_path), "--folds", "1"])
    assert result.exit_code == 2 and "--folds 1: use 2 or more" in result.output


def test_rank_rows_walk_the_out_of_fold_ranks_around_the_shipped_threshold() -> None:
    """759 out-of-fold goods at 2 %: the shipped rank is 745 (the conformal one); each row's threshold is that
    rank's score, its test false rejects and recall are counted at it, and its chances follow the rank."""
    import numpy as np

    from trainer.threshold_study import rank_rows

    oof = np.random.default_rng(0).permutation(np.arange(1.0, 760.0))  # rank k scores k
    test = np.array([744.5, 745.5, 746.5, 800.0, 745.5, 744.0])
    is_defect = np.array([False, False, False, True, True, True])
    rows = rank_rows(oof, test, is_defect, 0.02, above=2)
    assert [r["rule"] for r in rows] == [
        "out-of-fold rank 744",
        "out-of-fold rank 745 (shipped)",
        "out-of-fold rank 746",
        "out-of-fold rank 747",
    ]
    assert [r["threshold"] for r in rows] == [744.0, 745.0, 746.0, 747.0]
    assert [r["false_rejects"] for r in rows] == [3, 2, 1, 0]
    assert [r["recall"] for r in rows] == [round(2 / 3, 4), round(2 / 3, 4), round(1 / 3, 4), round(1 / 3, 4)]
    assert [r["expected_frr"] for r in rows] == [round(16 / 760, 4), round(15 / 760, 4), round(14 / 760, 4), 0.0171]
    p = [r["p_frr_over_target"] for r in rows]
    assert p == sorted(p, reverse=True) and 0.3 < p[1] < 0.6  # a higher rank: less chance of exceeding the target
