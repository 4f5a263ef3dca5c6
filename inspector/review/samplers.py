"""Pure samplers that choose frames for human review, each behind its own rate limits.

A sampler looks at one verdict and the time ``t`` (UTC epoch seconds, passed in: no clock, no I/O, no
global random state) and returns a ``Pick`` (reason + priority) or None. ``RateLimiter`` caps picks per
sliding minute and hour and per UTC calendar day (the daily cap); a limited pick is dropped and counted.
The random PASS audit hashes the frame id with a seed, so every worker (and a redelivery) makes the same
choice for the same frame.

``RateLimiter`` keeps its windows in the process: N workers would allow N times the limits. The station's
samplers use :class:`SharedRateLimiter` instead (:func:`default_samplers` with a Redis client): the same
sliding minute and hour windows and daily cap, kept in Redis and taken in one Lua script (check every
window, then ``ZADD`` + ``INCR`` with their expiry, atomically), so any number of workers share one limit.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Protocol

import redis

from inspector.contracts.config import PolicySection, RateLimitSection, ReviewSection
from inspector.contracts.messages import Decision, Verdict
from inspector.contracts.names import Names

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


class Limiter(Protocol):
    def allow(self, t: float) -> bool: ...


# KEYS: minute set, hour set, day counter. ARGV: t, per_minute, per_hour, per_day, member, day_ttl_s.
_TAKE = """
local t = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t - 60)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', t - 3600)
local day = tonumber(redis.call('GET', KEYS[3]) or '0')
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) or redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3])
   or day >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], t, ARGV[5])
redis.call('EXPIRE', KEYS[1], 120)
redis.call('ZADD', KEYS[2], t, ARGV[5])
redis.call('EXPIRE', KEYS[2], 3660)
redis.call('INCR', KEYS[3])
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[6]))
return 1
"""


class SharedRateLimiter:
    """:class:`RateLimiter`'s windows and daily cap in Redis, shared by every worker of a station."""

    def __init__(
        self, client: redis.Redis, names: Names, sampler: str, per_minute: int, per_hour: int, per_day: int
    ) -> None:
        self.client, self.names, self.sampler = client, names, sampler
        self.per_minute, self.per_hour, self.per_day = per_minute, per_hour, per_day
        self._take = client.register_script(_TAKE)

    def allow(self, t: float) -> bool:
        """Take one slot at time ``t`` if every shared window has room (atomic across workers)."""
        day = int(t // DAY_S)
        keys = [
            self.names.review_limit(self.sampler, "minute"),
            self.names.review_limit(self.sampler, "hour"),
            self.names.review_limit(self.sampler, f"day:{day}"),
        ]
        member = f"{t!r}:{uuid.uuid4().hex[:12]}"
        return bool(
            self._take(keys=keys, args=[repr(t), self.per_minute, self.per_hour, self.per_day, member, DAY_S + 3600])
        )


def top_class(v: Verdict) -> tuple[str, float] | None:
    probs = v.class_probs
    if not probs:
        return None
    name = max(probs, key=probs.__getitem__)
    return name, probs[name]


class Sampler:
    """Base: ``matches`` is the pure condition; ``sample`` adds the rate limit."""

    reason = "sampler"
    priority = 50

    def __init__(self, limiter: Limiter) -> None:
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

    def __init__(self, limiter: Limiter, policy: PolicySection) -> None:
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

    def __init__(self, limiter: Limiter, band: float) -> None:
        super().__init__(limiter)
        self.band = band

    def matches(self, v: Verdict) -> bool:
        return v.anomaly_score is not None and abs(v.anomaly_score - 1.0) <= self.band


class ConfidenceBandSampler(Sampler):
    """Classifier top probability inside [low, high)."""

    reason, priority = "low_confidence", 50

    def __init__(self, limiter: Limiter, band: tuple[float, float]) -> None:
        super().__init__(limiter)
        self.low, self.high = band

    def matches(self, v: Verdict) -> bool:
        top = top_class(v)
        return top is not None and self.low <= top[1] < self.high


class PassAuditSampler(Sampler):
    """A seeded random 1 in N of PASS verdicts (decided by hashing the frame id)."""

    reason, priority = "pass_audit", 10

    def __init__(self, limiter: Limiter, one_in: int, seed: int = 0) -> None:
        super().__init__(limiter)
        self.one_in, self.seed = one_in, seed

    def matches(self, v: Verdict) -> bool:
        if self.one_in <= 0 or v.decision != Decision.PASS:
            return False
        digest = hashlib.sha256(f"{self.seed}:{v.frame_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.one_in == 0


def default_samplers(
    review: ReviewSection, policy: PolicySection, client: redis.Redis | None = None, names: Names | None = None
) -> list[Sampler]:
    """The station's samplers, each with its own limits: shared in Redis when ``client`` and ``names`` are
    given (every worker of the station), else in this process only."""
    lim_s = review.limits

    def lim(reason: str) -> Limiter:
        if client is not None and names is not None:
            return SharedRateLimiter(client, names, reason, lim_s.per_minute, lim_s.per_hour, lim_s.per_day)
        return RateLimiter.from_section(lim_s)

    return [
        ReviewVerdictSampler(lim(ReviewVerdictSampler.reason)),
        DisagreementSampler(lim(DisagreementSampler.reason), policy),
        AnomalyNearThresholdSampler(lim(AnomalyNearThresholdSampler.reason), review.anomaly_band),
        ConfidenceBandSampler(lim(ConfidenceBandSampler.reason), review.confidence_band),
        PassAuditSampler(lim(PassAuditSampler.reason), review.audit_pass_one_in, review.audit_seed),
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
