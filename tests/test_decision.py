"""decide(): pure mapping from model outputs and policy to PASS / FAIL / REVIEW / ERROR."""

import pytest

from inspector.contracts.config import PolicySection
from inspector.contracts.messages import Decision
from inspector.decision import decide

P = PolicySection()


@pytest.mark.parametrize(
    ("probs", "score", "decision", "defect"),
    [
        ({"good": 0.99, "scratch": 0.01}, 0.3, Decision.PASS, None),
        ({"good": 0.01, "scratch": 0.99}, 2.0, Decision.FAIL, "scratch"),
        (None, 2.0, Decision.FAIL, "anomaly"),
        (None, 0.2, Decision.PASS, None),
        (None, 1.0, Decision.REVIEW, None),
        ({"good": 0.6, "scratch": 0.4}, 0.2, Decision.REVIEW, None),
        ({"good": 0.99, "scratch": 0.01}, 3.0, Decision.REVIEW, None),  # disagreement
        ({"good": 0.02, "spot": 0.98}, 0.1, Decision.REVIEW, "spot"),  # disagreement
        ({"good": 0.05, "spot": 0.95}, None, Decision.FAIL, "spot"),
        (None, None, Decision.ERROR, None),
    ],
)
def test_decisions(probs, score, decision, defect) -> None:  # type: ignore[no-untyped-def]
    r = decide(probs, score, P)
    assert r.decision is decision
    assert r.defect_class == defect
    assert r.reasons


def test_fail_safe_rejects_everything_but_pass() -> None:
    assert decide({"good": 0.99}, 0.1, P).reject is False
    assert decide({"good": 0.6, "x": 0.4}, None, P).reject is True
    assert decide(None, None, P).reject is True
    lenient = PolicySection(reject_review=False)
    assert decide({"good": 0.6, "x": 0.4}, None, lenient).reject is False


def test_disagreement_can_fail() -> None:
    r = decide({"good": 0.99, "x": 0.01}, 3.0, PolicySection(on_disagreement="fail"))
    assert r.decision is Decision.FAIL and "models disagree" in r.reasons


def test_fused_score_decides_and_the_classifier_names_the_class() -> None:
    policy = PolicySection()
    unsure_good = {"good": 0.55, "crack": 0.30, "break": 0.15}
    # an unsure classifier does not send a part the fused score passes to REVIEW
    assert decide(unsure_good, 0.2, policy, classifier_decides=False).decision is Decision.PASS
    assert decide(unsure_good, 0.2, policy).decision is Decision.REVIEW  # the default: both models decide
    fail = decide(unsure_good, 1.5, policy, classifier_decides=False)
    assert fail.decision is Decision.FAIL and fail.defect_class == "crack" and fail.reject
    near = decide({"good": 0.99, "crack": 0.01}, 0.9, policy, classifier_decides=False)
    assert near.decision is Decision.REVIEW and near.reject
    assert decide(None, 1.5, policy, classifier_decides=False).defect_class == "anomaly"
