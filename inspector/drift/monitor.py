"""Drift monitor: rolling windows of the verdicts stream against the active package's drift reference.

:class:`DriftDetector` is the pure core (no Redis, an injectable clock): feed it :class:`DriftRecord` s, it
checks the full window every ``drift.check_every`` frames, counts consecutive tripped checks (hysteresis),
keeps quiet for ``drift.cooldown_s`` after an alarm and says nothing while suppressed.

:class:`DriftMonitor` consumes ``…:verdicts`` with the consumer group ``Names.drift_group``, loads the
reference of the package named by the ``active_model`` hash (and starts afresh when it changes), and turns
each alarm into a ``DRIFT_ALARM`` event on ``…:events`` and a ``drift_alarms`` row (with an audit row). A
planned change (maintenance "camera or lighting changed") sets the suppression key; alarms stay suppressed
until a package fitted after that moment becomes active.

Alarms are events, nothing else: the monitor calls no retraining code. The retrain trigger
(``jobs.trigger.RetrainTrigger``) consumes ``DRIFT_ALARM`` events from every source (this monitor, periodic
validation) with its own consumer group, so an alarm raised while the trigger is down is acted on when it
comes back, and one policy (dedupe, lock, cooldown, suppression) applies to all sources. Each event's data
names its ``source``: ``drift`` (statistics of the verdicts) or ``operator_reports`` (below).

Operator reports. An operator who presses "wrong verdict" calls ``LabellingService.request_review``, which
writes a ``review.request`` audit row on ``frame:<id>``; that row is the system-of-record trace of the
report (whichever client made it). The monitor reads new such rows from the store (by audit id, so each is
read once) and the detector counts how many of the frames in its window were reported: the statistic
``operator_reports`` trips when at least ``drift.operator_report_min`` of the window's verdicts were
reported AND their share exceeds ``drift.operator_report_rate``. It shares the hysteresis and cooldown of
the other statistics (a single bad minute of an annoyed operator does not retrain), and an alarm whose
worst statistic is ``operator_reports`` carries ``source = "operator_reports"``. Counting reports per
verdict in the window (not per minute) keeps the rate independent of line speed; a report on a frame that
already left the window is not counted (the window is the monitor's notion of "now").
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import redis

from inspector import telemetry
from inspector.bus.streams import StationBus, decode_message
from inspector.contracts.config import DriftSection, StationConfig
from inspector.contracts.errors import InspectorError
from inspector.contracts.manifest import MANIFEST_NAME, Manifest
from inspector.contracts.messages import Decision, Event, EventType, Verdict
from inspector.contracts.names import Names
from inspector.drift.reference import IMAGE_STATS, DriftReference, parse_reference
from inspector.drift.stats import categorical_test, compare_numeric, rate_test

log = logging.getLogger(__name__)

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
        return cls(stats=v.image_stats.model_dump(), confidence=max(v.class_probs.values()) if v.class_probs else None,
                   top_class=top, anomaly_score=v.anomaly_score, decision=v.decision.value, frame_id=v.frame_id)


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
        return {"source": self.source, "statistic": self.statistic, "value": self.value, "threshold": self.threshold,
                "frames_seen": self.frames_seen, "model_version": self.model_version, "tripped": self.details,
                **({"product": self.product} if self.product else {})}


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

    def __init__(self, reference: DriftReference, cfg: DriftSection, clock: Callable[[], float] = time.time,
                 model_version: str | None = None) -> None:
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
                self._worse(out, name, res.psi if by_psi else abs(res.shift),
                            c.psi_threshold if by_psi else c.mean_shift_sigma)
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
            out.tripped[OPERATOR_REPORTS] = {"rate": round(rate, 4), "reports": k, "n": n,
                                             "threshold": self.cfg.operator_report_rate}
            self._worse(out, OPERATOR_REPORTS, rate, self.cfg.operator_report_rate)

    def _check_class_mix(self, out: CheckResult) -> None:
        if not self.ref.class_mix or len(self.top) < MIN_VALUES:
            return
        value, p = categorical_test(self.ref.class_mix, Counter(self.top))
        if p < self.p_value and value > self.cfg.psi_threshold:
            out.tripped[CLASS_MIX] = {"psi": round(value, 4), "chi2_p": float(f"{p:.3g}"),
                                      "window": dict(Counter(self.top)), "reference": self.ref.class_mix}
            self._worse(out, CLASS_MIX, value, self.cfg.psi_threshold)

    def _check_review_rate(self, out: CheckResult) -> None:
        if self.ref.review_rate is None or not self.decisions:
            return
        n, k = len(self.decisions), sum(d == "REVIEW" for d in self.decisions)
        delta = abs(k / n - self.ref.review_rate)
        p = rate_test(k, n, self.ref.review_rate)
        if p < self.p_value and delta > self.cfg.review_rate_delta:
            out.tripped[REVIEW_RATE] = {"rate": round(k / n, 4), "reference": self.ref.review_rate,
                                        "binom_p": float(f"{p:.3g}"), "n": n}
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


def load_reference(package_path: str | Path) -> tuple[Manifest, DriftReference]:
    """The manifest and parsed drift reference of a package folder (hashes are the workers' job)."""
    path = Path(package_path) / MANIFEST_NAME
    try:
        manifest = Manifest.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InspectorError(f"cannot read the drift reference of {path}: {err}", "promote a valid package") from None
    return manifest, parse_reference(manifest.drift_reference)


class DriftMonitor:
    """Consumes the verdicts stream of one station and raises drift alarms."""

    def __init__(self, cfg: StationConfig, client: redis.Redis, store: Any = None, consumer: str = "drift-1",
                 clock: Callable[[], float] = time.time, report_lookback_s: float = 3600.0) -> None:
        self.cfg = cfg
        self.bus = StationBus(client, cfg)
        self.names = self.bus.names
        self.store = store
        self.consumer = consumer
        self.clock = clock
        self.report_lookback_s = report_lookback_s
        self._last_report_id: int | None = None  # audit id of the newest operator report read
        self.version: str | None = None
        self.manifest: Manifest | None = None
        self.detector: DriftDetector | None = None
        self.alarms: list[DriftAlarm] = []
        self.skipped = Counter[str]()
        self.products = self._product_detectors()  # one window and reference per product: a changeover is no drift
        self.bus.ensure_group(self.names.verdicts, self.names.drift_group, start="$")

    def _product_detectors(self) -> dict[str, DriftDetector]:
        out: dict[str, DriftDetector] = {}
        for name, product in self.cfg.products.items():
            manifest, ref = load_reference(product.package)
            if ref.empty:
                log.warning("product %s: package %s has no drift reference: its drift is not monitored", name,
                            manifest.version)
                continue
            out[name] = DriftDetector(ref, self.cfg.drift, self.clock, manifest.version)
        return out

    # -- reference ---------------------------------------------------------------------------------
    def refresh_model(self) -> None:
        """Follow the active model: a new version brings a new reference and fresh windows."""
        raw = self.bus.r.hgetall(self.names.active_model)
        version = raw.get(b"version", b"").decode() or None
        if version is None or version == self.version:
            return
        manifest, ref = load_reference(raw[b"path"].decode())
        self.version, self.manifest = version, manifest
        self.detector = DriftDetector(ref, self.cfg.drift, self.clock, version)
        if ref.empty:
            log.warning("package %s has no drift reference: drift is not monitored", version)
        self._maybe_lift_suppression(manifest)

    def suppression(self) -> dict[str, Any] | None:
        raw = self.bus.r.get(suppression_key(self.names))
        return json.loads(raw) if raw else None

    def _maybe_lift_suppression(self, manifest: Manifest) -> None:
        sup = self.suppression()
        if sup and manifest.created_at > float(sup.get("since", 0)):
            self.bus.r.delete(suppression_key(self.names))
            self._event(EventType.MAINTENANCE, "info",
                        f"drift monitoring resumed with the reference of {manifest.version}", {"lifted": sup})

    # -- loop -------------------------------------------------------------------------------------------
    def step(self, block_ms: int | None = 100, count: int = 500) -> list[DriftAlarm]:
        """Read a batch of verdicts, feed the detector, acknowledge; return the alarms raised."""
        self.refresh_model()
        self._poll_reports()
        entries = self.bus.read_new(self.names.verdicts, self.names.drift_group, self.consumer, count, block_ms)
        if not entries:
            return []
        suppressed = self.suppression() is not None
        for detector in [self.detector, *self.products.values()]:
            if detector is not None:
                detector.suppressed = suppressed
        raised = [a for a in (self._feed(e.message_raw) for e in entries) if a is not None]
        self.bus.r.xack(self.names.verdicts, self.names.drift_group, *[e.entry_id for e in entries])
        for alarm in raised:
            self._raise(alarm)
        return raised

    def _feed(self, raw: bytes | None) -> DriftAlarm | None:
        try:
            v = decode_message(raw)
        except InspectorError:
            self.skipped["unreadable"] += 1
            return None
        if isinstance(v, Verdict) and v.product is not None:
            return self._feed_product(v)
        if not isinstance(v, Verdict) or self.detector is None or v.model_version != self.version:
            self.skipped["other_model" if isinstance(v, Verdict) else "not_verdict"] += 1
            return None
        rec = DriftRecord.from_verdict(v)
        if rec is None:
            self.skipped["no_stats"] += 1
            return None
        return self.detector.add(rec)

    def _feed_product(self, v: Verdict) -> DriftAlarm | None:
        """A product's frame goes to that product's window, against its own package's reference."""
        detector = self.products.get(v.product or "")
        if detector is None or v.model_version != detector.model_version:
            self.skipped["other_model"] += 1
            return None
        rec = DriftRecord.from_verdict(v)
        if rec is None:
            self.skipped["no_stats"] += 1
            return None
        alarm = detector.add(rec)
        return None if alarm is None else replace(alarm, product=v.product)

    def _poll_reports(self) -> None:
        """Hand the detector the frames operators reported since the last poll (audit rows, read once by id).
        The first poll looks back ``report_lookback_s``. A store error is logged; drift monitoring goes on."""
        if self.store is None or (self.detector is None and not self.products):
            return
        try:
            from sqlalchemy import select

            from inspector.store.models import AuditRow

            q = select(AuditRow.id, AuditRow.target).where(AuditRow.action == REPORT_ACTION)
            if self._last_report_id is None:
                q = q.where(AuditRow.ts >= self.clock() - self.report_lookback_s)
            else:
                q = q.where(AuditRow.id > self._last_report_id)
            with self.store.session() as s:
                rows = s.execute(q.order_by(AuditRow.id)).all()
        except Exception:  # noqa: BLE001 - a failing side input never stops drift monitoring
            log.exception("could not read operator reports from the store")
            return
        if rows:
            self._last_report_id = int(rows[-1].id)
        reported = [t.split(":", 1)[1] for _, t in rows if t.startswith("frame:")]
        for detector in [self.detector, *self.products.values()]:
            if detector is not None:
                detector.note_reports(reported)

    def run(self, stop: threading.Event, block_ms: int = 500) -> None:
        while not stop.is_set():
            try:
                self.step(block_ms)
            except (redis.ConnectionError, redis.TimeoutError) as err:
                log.warning("drift monitor: Redis unavailable (%s); retrying", err)
                stop.wait(1.0)

    # -- outputs ----------------------------------------------------------------------------------------
    def _raise(self, alarm: DriftAlarm) -> None:
        self.alarms.append(alarm)
        msg = (f"{alarm.source}{f' of product {alarm.product}' if alarm.product else ''}: {alarm.statistic} = "
               f"{alarm.value:.3g} (threshold {alarm.threshold:.3g}); "
               f"tripped: {', '.join(sorted(alarm.details))}")
        self._event(EventType.DRIFT_ALARM, "warning", msg, alarm.as_dict(), alarm.model_version if alarm.product else None)
        if self.store is not None:
            try:
                from inspector.store.records import record_drift_alarm

                record_drift_alarm(self.store, self.cfg.station.id, alarm.statistic, alarm.value, alarm.threshold,
                                   alarm.as_dict(), alarm.ts)
            except Exception:  # noqa: BLE001 - a failing side output never blocks the alarm event
                log.exception("could not record the drift alarm in the store")

    def _event(self, etype: EventType, severity: str, message: str, data: dict[str, Any],
               version: str | None = None) -> None:
        self.bus.publish_event(Event(station=self.cfg.station.id, type=etype, severity=severity,  # type: ignore[arg-type]
                                     message=message, model_version=version or self.version, data=data))
