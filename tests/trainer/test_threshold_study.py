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
