"""Anomaly score normalisation travels in the manifest: 0 = typical good part, 1.0 = threshold."""

from inspector.contracts.manifest import AnomalySpec


def test_affine_normalisation_from_good_median() -> None:
    spec = AnomalySpec(threshold=30.0, score_origin=20.0)
    assert spec.normalise(20.0) == 0.0 and spec.normalise(30.0) == 1.0 and spec.normalise(40.0) == 2.0


def test_without_origin_it_is_raw_over_threshold() -> None:
    assert AnomalySpec(threshold=4.0).normalise(2.0) == 0.5


def test_origin_above_threshold_is_ignored() -> None:
    assert AnomalySpec(threshold=4.0, score_origin=9.0).normalise(2.0) == 0.5


def test_threshold_placed_for_the_review_band_rejects_exactly_above_the_good_quantile() -> None:
    from inspector.contracts.config import PolicySection
    from inspector.contracts.manifest import AnomalySpec
    from inspector.decision import decide

    spec = AnomalySpec.placed(3.0, 1.0, 0.15)
    assert abs(spec.normalise(3.0) - 0.85) < 1e-12 and abs(spec.reject_raw - 3.0) < 1e-12
    policy = PolicySection(anomaly_review_margin=0.15)
    assert decide(None, spec.normalise(2.99), policy).decision.value == "PASS"
    assert decide(None, spec.normalise(3.0), policy).decision.value == "REVIEW"  # the line rejects from the quantile
    assert (
        decide(None, spec.normalise(spec.origin + 1.2 * (spec.threshold - spec.origin)), policy).decision.value
        == "FAIL"
    )
