from __future__ import annotations

from inspector.contracts.config import PolicySection, RateLimitSection, ReviewSection
from inspector.contracts.messages import Decision
from inspector.review.samplers import (
    AnomalyNearThresholdSampler,
    ConfidenceBandSampler,
    DisagreementSampler,
    PassAuditSampler,
    RateLimiter,
    ReviewVerdictSampler,
    choose,
    default_samplers,
)
from inspector.store.fakes import make_verdict

T0 = 1_700_000_000.0 - (1_700_000_000.0 % 86_400)  # midnight UTC
NOLIMIT = RateLimiter(10**9, 10**9, 10**9)


def v(decision: Decision = Decision.PASS, good: float = 0.99, score: float = 0.3, seq: int = 0):  # type: ignore[no-untyped-def]
    return make_verdict("s", seq, decision, class_probs={"good": good, "scratch": 1 - good}, anomaly_score=score)


def test_rate_limits_per_minute_hour_and_daily_cap() -> None:
    lim = RateLimiter(per_minute=3, per_hour=5, per_day=7)
    assert [lim.allow(T0 + i) for i in range(4)] == [True, True, True, False]
    assert lim.allow(T0 + 61) and lim.allow(T0 + 62)
    assert not lim.allow(T0 + 130)  # hour full (5)
    assert lim.allow(T0 + 3601) and lim.allow(T0 + 3602)  # hour window slid: 7 today
    assert not lim.allow(T0 + 7300)  # daily cap
    assert not lim.allow(T0 + 86_399)
    assert lim.allow(T0 + 86_400)  # a new UTC day


def test_sampler_conditions() -> None:
    policy = PolicySection()
    assert ReviewVerdictSampler(NOLIMIT).matches(v(Decision.REVIEW))
    assert not ReviewVerdictSampler(NOLIMIT).matches(v())
    band = ConfidenceBandSampler(NOLIMIT, (0.5, 0.9))
    assert band.matches(v(good=0.7)) and band.matches(v(good=0.3)) and not band.matches(v(good=0.95))
    near = AnomalyNearThresholdSampler(NOLIMIT, 0.2)
    assert near.matches(v(score=0.85)) and near.matches(v(score=1.19)) and not near.matches(v(score=1.3))
    dis = DisagreementSampler(NOLIMIT, policy)
    assert dis.matches(v(good=0.97, score=1.5))  # anomalous, classifier confidently good
    assert dis.matches(v(good=0.03, score=0.2))  # normal, classifier confidently defective
    assert not dis.matches(v(good=0.97, score=0.2)) and not dis.matches(v(good=0.6, score=1.5))


def test_audit_sampling_is_about_one_in_n_and_seeded() -> None:
    audit = PassAuditSampler(NOLIMIT, one_in=40, seed=7)
    verdicts = [v(seq=i) for i in range(8_000)]
    picked = [x.frame_id for x in verdicts if audit.matches(x)]
    assert 150 <= len(picked) <= 250  # 200 expected
    assert picked == [x.frame_id for x in verdicts if PassAuditSampler(NOLIMIT, 40, 7).matches(x)]
    assert not PassAuditSampler(NOLIMIT, 0).matches(verdicts[0])
    assert not audit.matches(v(Decision.FAIL))


def test_choose_reasons_priority_and_limits() -> None:
    review = ReviewSection(limits=RateLimitSection(per_minute=2, per_hour=100, per_day=100), audit_pass_one_in=0)
    samplers = default_samplers(review, PolicySection())
    reasons, prio = choose(samplers, v(Decision.REVIEW, good=0.7, score=1.1), T0)  # type: ignore[misc]
    assert reasons == ["review_verdict", "anomaly_near_threshold", "low_confidence"] and prio == 90
    assert choose(samplers, v(), T0) is None  # a sure PASS
    assert choose(samplers, v(Decision.ERROR, good=0.7), T0) is None
    assert choose(samplers, v(Decision.REVIEW), T0 + 1) == (["review_verdict"], 80)
    assert choose(samplers, v(Decision.REVIEW), T0 + 2) is None  # 2 per minute for this sampler
    assert samplers[0].stats["rate_limited"] == 1
    assert choose(samplers, v(good=0.7), T0 + 3) == (["low_confidence"], 50)
    assert choose(samplers, v(good=0.7), T0 + 4) is None  # low_confidence used its 2 this minute
    assert choose(samplers, v(good=0.7), T0 + 61) == (["low_confidence"], 50)
