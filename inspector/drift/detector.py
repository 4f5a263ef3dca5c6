"""The pure core of drift monitoring: :class:`DriftDetector` (no Redis, an injectable clock) and what it reads and
raises. Feed it :class:`DriftRecord` s; it checks the full window every ``drift.check_every`` frames, counts
consecutive tripped checks (hysteresis), keeps quiet for ``drift.cooldown_s`` after an alarm and says nothing
while suppressed. :mod:`inspector.drift.monitor` feeds it from the verdicts stream."""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from inspector import telemetry
from inspector.contracts.config import DriftSection
from inspector.contracts.messages import Decision, Verdict
from inspector.contracts.names import Names
from inspector.drift.reference import IMAGE_STATS, DriftReference
from inspector.drift.stats import categorical_test, compare_numeric, rate_test

MIN_VALUES = 20  # a statistic with fewer values in the window (e.g. few PASS frames) is not compared
CLASS_MIX = "class_mix"
REVIEW_RATE = "review_rate"
OPERATOR_REPORTS = "operator_reports"
REPORT_ACTION = "review.request"  # the audit action of LabellingService.request_review (operator: wrong verdict)
SOURCE_DRIFT = "drift"
SOURCE_OPERATOR = "operator_reports"


def suppression_key(names: Names) -> str:
    """Redis key (JSON) set while drift alarms are suppressed by a planned change."""
    return names.drift_suppressed


@dataclass(frozen=True)
class DriftRecord:
    """What the monitor needs of one verdict."""

    stats: dict[str, float]
    confidence: float | None = None
    top_class: str | None = None
    anomaly_score: float | None = None
    decision: str = "PASS"
    frame_id: str | None = None

    @classmethod
    def from_verdict(cls, v: Verdict) -> DriftRecord | None:
        """None for verdicts without image statistics (ERROR verdicts)."""
        if v.image_stats is None or v.decision is Decision.ERROR:
            return None
        top = max(v.class_probs, key=v.class_probs.get) if v.class_probs else None  # type: ignore[arg-type]
        return cls(
            stats=v.image_stats.model_dump(),
            confidence=max(v.class_probs.values()) if v.class_probs else None,
            top_class=top,
            anomaly_score=v.anomaly_score,
            decision=v.decision.value,
            frame_id=v.frame_id,
        )


@dataclass
class DriftAlarm:
    """One alarm: the statistic that tripped hardest, its number and threshold, and every tripped statistic."""

    statistic: str
    value: float
    threshold: float
    details: dict[str, Any]
    frames_seen: int
    ts: float
    model_version: str | None = None
    product: str | None = None  # a product's own window and reference (station products), None: the active model's

    @property
    def source(self) -> str:
        """``operator_reports`` when the operators' reports tripped hardest, else ``drift``."""
        return SOURCE_OPERATOR if self.statistic == OPERATOR_REPORTS else SOURCE_DRIFT

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "statistic": self.statistic,
            "value": self.value,
            "threshold": self.threshold,
            "frames_seen": self.frames_seen,
            "model_version": self.model_version,
            "tripped": self.details,
            **({"product": self.product} if self.product else {}),
        }


@dataclass
class CheckResult:
    tripped: dict[str, dict[str, Any]] = field(default_factory=dict)
    worst: tuple[str, float, float] | None = None  # (statistic, value, threshold)


# Statistics whose drift matters in one direction only: good parts looking MORE normal, or the classifier
# growing MORE confident, is no reason to retrain (image statistics stay two-sided: any change of light).
ONE_SIDED = {"anomaly_score_good": +1, "classifier_confidence": -1}


def harmless_direction(name: str, delta: float) -> bool:
    """True when the window moved the harmless way for a one-sided statistic."""
    sign = ONE_SIDED.get(name)
    return sign is not None and delta * sign <= 0


class DriftDetector:
    """Rolling windows + checks + hysteresis + cooldown + suppression, without I/O."""

    def __init__(
        self,
        reference: DriftReference,
        cfg: DriftSection,
        clock: Callable[[], float] = time.time,
        model_version: str | None = None,
    ) -> None:
        self.ref = reference
        self.cfg = cfg
        self.clock = clock
        self.model_version = model_version
        w = cfg.window
        self.numeric: dict[str, deque[float]] = {k: deque(maxlen=w) for k in reference.numeric}
        self.top: deque[str] = deque(maxlen=w)
        self.decisions: deque[str] = deque(maxlen=w)
        self.frame_ids: deque[str | None] = deque(maxlen=w)
        self.reported: set[str] = set()  # frame ids an operator reported wrong (see note_reports)
        self.frames = 0
        self.consecutive = 0
        self.last_alarm: float | None = None
        self.suppressed = False
        self.suppressed_alarms = 0
        self.checks = 0
        self.last: CheckResult = CheckResult()

    @property
    def p_value(self) -> float:
        """``drift.p_value`` shared by all tests of one check (Bonferroni): the false-alarm rate per check."""
        n_tests = len(self.numeric) + bool(self.ref.class_mix) + (self.ref.review_rate is not None)
        return self.cfg.p_value / max(1, n_tests)

    def add(self, rec: DriftRecord) -> DriftAlarm | None:
        """Add one frame; run a check when one is due; return an alarm when one is raised."""
        self._append(rec)
        self.frames += 1
        if len(self.decisions) < self.cfg.window or self.frames % self.cfg.check_every:
            return None
        self.last = self.check()
        self.consecutive = self.consecutive + 1 if self.last.tripped else 0
        return self._maybe_alarm()

    def _append(self, rec: DriftRecord) -> None:
        for k in IMAGE_STATS:
            if k in self.numeric and k in rec.stats:
                self.numeric[k].append(rec.stats[k])
        if rec.confidence is not None and "classifier_confidence" in self.numeric:
            self.numeric["classifier_confidence"].append(rec.confidence)
        if rec.decision == "PASS" and rec.anomaly_score is not None and "anomaly_score_good" in self.numeric:
            self.numeric["anomaly_score_good"].append(rec.anomaly_score)
        if rec.top_class is not None:
            self.top.append(rec.top_class)
        self.decisions.append(rec.decision)
        self.frame_ids.append(rec.frame_id)

    def note_reports(self, frame_ids: Iterable[str]) -> None:
        """Frames an operator reported as wrongly judged (they count while their verdict is in the window)."""
        self.reported.update(frame_ids)
        if len(self.reported) > 4 * self.cfg.window:  # forget reports on frames that left the window
            self.reported &= {f for f in self.frame_ids if f is not None}

    def check(self) -> CheckResult:
        """Compare the current windows with the reference; every tripped statistic with its numbers."""
        self.checks += 1
        out = CheckResult()
        c = self.cfg
        for name, values in self.numeric.items():
            if len(values) < MIN_VALUES:
                continue
            res = compare_numeric(list(values), self.ref.numeric[name])
            telemetry.drift_numeric(name, res)
            if res is not None and harmless_direction(name, res.window_mean - res.ref_mean):
                continue
            if res is not None and res.tripped(c.psi_threshold, self.p_value, c.mean_shift_sigma):
                out.tripped[name] = res.as_dict()
                by_psi = res.psi / c.psi_threshold >= abs(res.shift) / c.mean_shift_sigma
                self._worse(
                    out, name, res.psi if by_psi else abs(res.shift), c.psi_threshold if by_psi else c.mean_shift_sigma
                )
        self._check_class_mix(out)
        self._check_review_rate(out)
        self._check_operator_reports(out)
        return out

    def operator_reports(self) -> tuple[int, int]:
        """(reported verdicts, verdicts) in the window."""
        return sum(f is not None and f in self.reported for f in self.frame_ids), len(self.frame_ids)

    def _check_operator_reports(self, out: CheckResult) -> None:
        k, n = self.operator_reports()
        if n == 0 or k < self.cfg.operator_report_min:
            return
        rate = k / n
        if rate > self.cfg.operator_report_rate:
            out.tripped[OPERATOR_REPORTS] = {
                "rate": round(rate, 4),
                "reports": k,
                "n": n,
                "threshold": self.cfg.operator_report_rate,
            }
            self._worse(out, OPERATOR_REPORTS, rate, self.cfg.operator_report_rate)

    def _check_class_mix(self, out: CheckResult) -> None:
        if not self.ref.class_mix or len(self.top) < MIN_VALUES:
            return
        value, p = categorical_test(self.ref.class_mix, Counter(self.top))
        if p < self.p_value and value > self.cfg.psi_threshold:
            out.tripped[CLASS_MIX] = {
                "psi": round(value, 4),
                "chi2_p": float(f"{p:.3g}"),
                "window": dict(Counter(self.top)),
                "reference": self.ref.class_mix,
            }
            self._worse(out, CLASS_MIX, value, self.cfg.psi_threshold)

    def _check_review_rate(self, out: CheckResult) -> None:
        if self.ref.review_rate is None or not self.decisions:
            return
        n, k = len(self.decisions), sum(d == "REVIEW" for d in self.decisions)
        delta = abs(k / n - self.ref.review_rate)
        p = rate_test(k, n, self.ref.review_rate)
        if p < self.p_value and delta > self.cfg.review_rate_delta:
            out.tripped[REVIEW_RATE] = {
                "rate": round(k / n, 4),
                "reference": self.ref.review_rate,
                "binom_p": float(f"{p:.3g}"),
                "n": n,
            }
            self._worse(out, REVIEW_RATE, delta, self.cfg.review_rate_delta)

    @staticmethod
    def _worse(out: CheckResult, name: str, value: float, threshold: float) -> None:
        if out.worst is None or value / threshold > out.worst[1] / out.worst[2]:
            out.worst = (name, float(value), float(threshold))

    def _maybe_alarm(self) -> DriftAlarm | None:
        if self.consecutive < self.cfg.hysteresis or self.last.worst is None:
            return None
        now = self.clock()
        if self.last_alarm is not None and now - self.last_alarm < self.cfg.cooldown_s:
            return None
        if self.suppressed:
            self.suppressed_alarms += 1
            return None
        self.last_alarm = now
        name, value, threshold = self.last.worst
        return DriftAlarm(name, value, threshold, dict(self.last.tripped), self.frames, now, self.model_version)
