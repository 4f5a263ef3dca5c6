"""Pure samplers that choose frames for human review, each behind its own rate limits.

A sampler looks at one verdict and the time ``t`` (UTC epoch seconds, passed in: no clock, no I/O, no
global random state) and returns a ``Pick`` (reason + priority) or None. ``RateLimiter`` caps picks per
sliding minute and hour and per UTC calendar day (the daily cap); a limited pick is dropped and counted.
The random PASS audit hashes the frame id with a seed, so every worker (and a redelivery) makes the same
choice for the same frame.
"""

from __future__ import annotations

import hashlib
from collections import Counter, deque
from dataclasses import dataclass, field

from inspector.contracts.config import PolicySection, RateLimitSection, ReviewSection
from inspector.contracts.messages import Decision, Verdict

DAY_S = 86_400


@dataclass(frozen=True)
class Pick:
    reason: str
    priority: int


@dataclass
class RateLimiter:
    per_minute: int
    per_hour: int
    per_day: int
    _minute: deque[float] = field(default_factory=deque)
    _hour: deque[float] = field(default_factory=deque)
    _day: int = -1
    _day_count: int = 0

    @classmethod
    def from_section(cls, s: RateLimitSection) -> RateLimiter:
        return cls(s.per_minute, s.per_hour, s.per_day)

    def _expire(self, t: float) -> None:
        for window, span in ((self._minute, 60.0), (self._hour, 3600.0)):
            while window and window[0] <= t - span:
                window.popleft()
        day = int(t // DAY_S)
        if day != self._day:
            self._day, self._day_count = day, 0

    def allow(self, t: float) -> bool:
        """Take one slot at time ``t`` if every window has room."""
        self._expire(t)
        if len(self._minute) >= self.per_minute or len(self._hour) >= self.per_hour or self._day_count >= self.per_day:
            return False
        self._minute.append(t)
        self._hour.append(t)
        self._day_count += 1
        return True


def top_class(v: Verdict) -> tuple[str, float] | None:
    if not v.class_probs:
        return None
    name = max(v.class_probs, key=lambda k: v.class_probs[k])  # type: ignore[index]
    return name, v.class_probs[name]


class Sampler:
    """Base: ``matches`` is the pure condition; ``sample`` adds the rate limit."""

    reason = "sampler"
    priority = 50

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter
        self.stats: Counter[str] = Counter()

    def matches(self, v: Verdict) -> bool:
        raise NotImplementedError

    def sample(self, v: Verdict, t: float) -> Pick | None:
        if not self.matches(v):
            return None
        if not self.limiter.allow(t):
            self.stats["rate_limited"] += 1
            return None
        self.stats["picked"] += 1
        return Pick(self.reason, self.priority)


class ReviewVerdictSampler(Sampler):
    """Every REVIEW verdict."""

    reason, priority = "review_verdict", 80

    def matches(self, v: Verdict) -> bool:
        return v.decision == Decision.REVIEW


class DisagreementSampler(Sampler):
    """The anomaly model says anomalous (normalised score >= 1) but the classifier is confidently good, or the reverse."""

    reason, priority = "models_disagree", 70

    def __init__(self, limiter: RateLimiter, policy: PolicySection) -> None:
        super().__init__(limiter)
        self.policy = policy

    def matches(self, v: Verdict) -> bool:
        top = top_class(v)
        if top is None or v.anomaly_score is None:
            return False
        name, p = top
        good = name == self.policy.good_class
        if good and p >= self.policy.pass_confidence and v.anomaly_score >= 1.0:
            return True
        return not good and p >= self.policy.fail_confidence and v.anomaly_score < 1.0


class AnomalyNearThresholdSampler(Sampler):
    """Normalised anomaly score within 1 ± band."""

    reason, priority = "anomaly_near_threshold", 60

    def __init__(self, limiter: RateLimiter, band: float) -> None:
        super().__init__(limiter)
        self.band = band

    def matches(self, v: Verdict) -> bool:
        return v.anomaly_score is not None and abs(v.anomaly_score - 1.0) <= self.band


class ConfidenceBandSampler(Sampler):
    """Classifier top probability inside [low, high)."""

    reason, priority = "low_confidence", 50

    def __init__(self, limiter: RateLimiter, band: tuple[float, float]) -> None:
        super().__init__(limiter)
        self.low, self.high = band

    def matches(self, v: Verdict) -> bool:
        top = top_class(v)
        return top is not None and self.low <= top[1] < self.high


class PassAuditSampler(Sampler):
    """A seeded random 1 in N of PASS verdicts (decided by hashing the frame id)."""

    reason, priority = "pass_audit", 10

    def __init__(self, limiter: RateLimiter, one_in: int, seed: int = 0) -> None:
        super().__init__(limiter)
        self.one_in, self.seed = one_in, seed

    def matches(self, v: Verdict) -> bool:
        if self.one_in <= 0 or v.decision != Decision.PASS:
            return False
        digest = hashlib.sha256(f"{self.seed}:{v.frame_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.one_in == 0


def default_samplers(review: ReviewSection, policy: PolicySection) -> list[Sampler]:
    def lim() -> RateLimiter:
        return RateLimiter.from_section(review.limits)

    return [
        ReviewVerdictSampler(lim()),
        DisagreementSampler(lim(), policy),
        AnomalyNearThresholdSampler(lim(), review.anomaly_band),
        ConfidenceBandSampler(lim(), review.confidence_band),
        PassAuditSampler(lim(), review.audit_pass_one_in, review.audit_seed),
    ]


def choose(samplers: list[Sampler], v: Verdict, t: float) -> tuple[list[str], int] | None:
    """Reasons of every sampler that picks ``v`` (each within its limits) and the highest priority, + 5 per
    extra reason (capped at 100); None when no sampler picks it. ERROR verdicts are never reviewed here."""
    if v.decision == Decision.ERROR:
        return None
    picks = [p for p in (s.sample(v, t) for s in samplers) if p is not None]
    if not picks:
        return None
    priority = min(100, max(p.priority for p in picks) + 5 * (len(picks) - 1))
    return [p.reason for p in picks], priority
