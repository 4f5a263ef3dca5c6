"""Anomaly score normalisation travels in the manifest: 0 = typical good part, 1.0 = threshold."""

from inspector.contracts.manifest import AnomalySpec


def test_affine_normalisation_from_good_median() -> None:
    spec = AnomalySpec(threshold=30.0, score_origin=20.0)
    assert spec.normalise(20.0) == 0.0 and spec.normalise(30.0) == 1.0 and spec.normalise(40.0) == 2.0


def test_without_origin_it_is_raw_over_threshold() -> None:
    assert AnomalySpec(threshold=4.0).normalise(2.0) == 0.5


def test_origin_above_threshold_is_ignored() -> None:
    assert AnomalySpec(threshold=4.0, score_origin=9.0).normalise(2.0) == 0.5
