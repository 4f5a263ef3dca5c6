"""PSI, KS against a histogram, mean shift, coarsening, categorical and rate tests."""

from __future__ import annotations

import numpy as np
import pytest

from inspector.drift.reference import histogram, parse_reference, reference_from_samples
from inspector.drift.stats import bin_counts, categorical_test, coarsen, compare_numeric, psi, rate_test


def test_psi_zero_for_identical_and_large_for_shifted() -> None:
    assert psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0)
    assert psi([50, 50, 0], [0, 50, 50]) > 1.0
    with pytest.raises(ValueError):
        psi([1, 2], [1, 2, 3])


def test_coarsen_keeps_total_and_min_share() -> None:
    edges, counts = np.linspace(0, 1, 21), np.array([1] * 20)
    e, c = coarsen(edges, counts, min_share=0.1)
    assert c.sum() == 20 and len(e) == len(c) + 1 and (c / 20 >= 0.1).all()
    assert e[0] == 0 and e[-1] == 1


def test_bin_counts_puts_outliers_in_end_bins() -> None:
    assert bin_counts([-5, 0.5, 99], [0, 1, 2]).tolist() == [2, 1]


def test_same_distribution_does_not_trip_shifted_does() -> None:
    rng = np.random.default_rng(0)
    ref = histogram(rng.normal(100, 10, 500))
    same = compare_numeric(rng.normal(100, 10, 100), ref)
    moved = compare_numeric(rng.normal(70, 7, 100), ref)
    assert same is not None and moved is not None
    assert not same.tripped(0.25, 0.001, 1.0)
    assert moved.tripped(0.25, 0.001, 1.0) and moved.shift < -2 and moved.ks_p < 1e-6


def test_categorical_and_rate_tests() -> None:
    assert categorical_test({"good": 0.9, "defect": 0.1}, {"good": 88, "defect": 12})[1] > 0.05
    value, p = categorical_test({"good": 0.9, "defect": 0.1}, {"good": 20, "defect": 80})
    assert value > 1 and p < 1e-10
    assert rate_test(2, 100, 0.02) > 0.5 and rate_test(40, 100, 0.02) < 1e-10


def test_reference_from_samples_round_trips() -> None:
    stats = [
        {"brightness": 100.0 + i % 7, "contrast": 20.0, "sharpness": 5.0, "mean_r": 1.0, "mean_g": 1.0, "mean_b": 1.0}
        for i in range(50)
    ]
    ref = reference_from_samples(
        stats, [{"good": 0.95, "defect": 0.05}] * 50, [0.3] * 50, ["PASS"] * 48 + ["REVIEW"] * 2
    )
    parsed = parse_reference(ref)
    assert ref["schema"] == 1 and set(parsed.numeric) >= {"brightness", "classifier_confidence", "anomaly_score_good"}
    assert parsed.class_mix == {"defect": 0.0, "good": 1.0} and parsed.review_rate == pytest.approx(0.04)
    assert parse_reference({}).empty
