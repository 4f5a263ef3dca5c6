"""The decision: a pure function from model outputs and policy to PASS / FAIL / REVIEW, with reasons.

Rules, in order:
1. No usable model output: ERROR.
2. The classifier is *sure of a defect* (top class is a defect with p >= fail_confidence), or the
   anomaly score is clearly above the threshold (normalised score > 1 + margin): FAIL.
   If the other model clearly contradicts (classifier sure the part is good while the anomaly model
   fires, or the anomaly model clearly normal while the classifier is sure of a defect), the verdict is
   ``policy.on_disagreement`` (REVIEW by default): a person should look.
3. The classifier is unsure (good below pass_confidence and no sure defect) or the anomaly score is
   within the margin around the threshold: REVIEW.
4. Otherwise PASS.
The line rejects every part that is not PASS unless the policy says otherwise for REVIEW / ERROR.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from inspector.contracts.config import PolicySection
from inspector.contracts.messages import Decision


@dataclass(frozen=True)
class DecisionResult:
    decision: Decision
    defect_class: str | None
    reasons: tuple[str, ...]
    reject: bool


def line_rejects(decision: Decision, policy: PolicySection) -> bool:
    if decision is Decision.PASS:
        return False
    if decision is Decision.REVIEW:
        return policy.reject_review
    if decision is Decision.ERROR:
        return policy.reject_error
    return True


def _result(decision: Decision, defect: str | None, reasons: list[str], policy: PolicySection) -> DecisionResult:
    return DecisionResult(decision, defect, tuple(reasons), line_rejects(decision, policy))


def _classifier_view(probs: Mapping[str, float], policy: PolicySection) -> tuple[str, str | None, float, str]:
    """(state, defect class, top probability, reason) with state in good | defect | unsure."""
    top = max(probs, key=lambda k: probs[k])
    p = float(probs[top])
    if top == policy.good_class:
        if p >= policy.pass_confidence:
            return "good", None, p, f"classifier: {top} p={p:.3f}"
        return "unsure", None, p, f"classifier unsure: {top} p={p:.3f} < {policy.pass_confidence}"
    if p >= policy.fail_confidence:
        return "defect", top, p, f"classifier: {top} p={p:.3f}"
    return "unsure", top, p, f"classifier unsure: {top} p={p:.3f} < {policy.fail_confidence}"


def _anomaly_view(score: float, policy: PolicySection) -> tuple[str, str]:
    """(state, reason) with state in normal | near | anomalous; 1.0 is the package threshold."""
    m = policy.anomaly_review_margin
    if score > 1.0 + m:
        return "anomalous", f"anomaly score {score:.2f} > {1.0 + m:.2f}"
    if score >= 1.0 - m:
        return "near", f"anomaly score {score:.2f} near threshold (1±{m})"
    return "normal", f"anomaly score {score:.2f} normal"


def _named_defect(class_probs: Mapping[str, float] | None, policy: PolicySection) -> str | None:
    defects = {k: v for k, v in (class_probs or {}).items() if k != policy.good_class}
    return max(defects, key=lambda k: defects[k]) if defects else None


def _decide_by_score(
    class_probs: Mapping[str, float] | None, anomaly_score: float, policy: PolicySection
) -> DecisionResult:
    """A fused defect score decides; the classifier only names the defect class."""
    state, reason = _anomaly_view(float(anomaly_score), policy)
    defect = _named_defect(class_probs, policy)
    reasons = [reason.replace("anomaly score", "defect score")]
    if defect is not None and class_probs is not None and state != "normal":
        reasons.append(f"most likely {defect} p={float(class_probs[defect]):.3f}")
    if state == "anomalous":
        return _result(Decision.FAIL, defect or "anomaly", reasons, policy)
    if state == "near":
        return _result(Decision.REVIEW, defect, reasons, policy)
    return _result(Decision.PASS, None, reasons, policy)


def decide(
    class_probs: Mapping[str, float] | None,
    anomaly_score: float | None,
    policy: PolicySection,
    classifier_decides: bool = True,
) -> DecisionResult:
    """PASS / FAIL / REVIEW / ERROR for one part from its model outputs.

    ``classifier_decides=False`` (the package's ``outputs.classifier_decides``): the anomaly score is a fused
    defect score and alone decides with the same threshold and review band; the classifier names the class."""
    if not class_probs and anomaly_score is None:
        return _result(Decision.ERROR, None, ["no model output"], policy)
    if not classifier_decides and anomaly_score is not None:
        return _decide_by_score(class_probs, anomaly_score, policy)
    reasons: list[str] = []
    cls_state, defect, cls_reason = None, None, ""
    if class_probs:
        cls_state, defect, _, cls_reason = _classifier_view(class_probs, policy)
        reasons.append(cls_reason)
    an_state = None
    if anomaly_score is not None:
        an_state, an_reason = _anomaly_view(float(anomaly_score), policy)
        reasons.append(an_reason)

    fails = cls_state == "defect" or an_state == "anomalous"
    if fails:
        contradicted = (an_state == "anomalous" and cls_state == "good") or (
            cls_state == "defect" and an_state == "normal"
        )
        if contradicted:
            reasons.append("models disagree")
            if policy.on_disagreement == "review":
                return _result(Decision.REVIEW, defect, reasons, policy)
        return _result(Decision.FAIL, defect or "anomaly", reasons, policy)
    if cls_state == "unsure" or an_state == "near":
        return _result(Decision.REVIEW, defect, reasons, policy)
    return _result(Decision.PASS, None, reasons, policy)
