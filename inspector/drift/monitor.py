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
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import redis

from inspector.bus.consumer import StreamConsumer
from inspector.bus.streams import Entry, decode_message
from inspector.contracts.config import StationConfig
from inspector.contracts.errors import InspectorError
from inspector.contracts.health import ConsumerRole
from inspector.contracts.manifest import MANIFEST_NAME, Manifest
from inspector.contracts.messages import Event, EventType, Verdict
from inspector.drift.detector import (
    REPORT_ACTION,
    DriftAlarm,
    DriftDetector,
    DriftRecord,
    suppression_key,
)
from inspector.drift.reference import DriftReference, parse_reference

log = logging.getLogger(__name__)
Severity = Literal["info", "warning", "critical"]
RECOVER_COUNT = 500  # verdicts re-read per step from a previous run's pending entries

__all__ = ["DriftAlarm", "DriftDetector", "DriftMonitor", "DriftRecord", "load_reference", "suppression_key"]


def load_reference(package_path: str | Path) -> tuple[Manifest, DriftReference]:
    """The manifest and parsed drift reference of a package folder (hashes are the workers' job)."""
    path = Path(package_path) / MANIFEST_NAME
    try:
        manifest = Manifest.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InspectorError(f"cannot read the drift reference of {path}: {err}", "promote a valid package") from None
    return manifest, parse_reference(manifest.drift_reference)


class DriftMonitor(StreamConsumer):
    """Consumes the verdicts stream of one station and raises drift alarms (a :class:`StreamConsumer`: own pending
    entries re-read at start, a dead monitor's entries reclaimed, Redis failures retried with backoff, a heartbeat)."""

    role: ClassVar[ConsumerRole] = ConsumerRole.DRIFT_MONITOR
    backoff_start_s: ClassVar[float] = 0.25

    def __init__(
        self,
        cfg: StationConfig,
        client: redis.Redis,
        store: Any = None,
        consumer: str = "drift-1",
        clock: Callable[[], float] = time.time,
        report_lookback_s: float = 3600.0,
    ) -> None:
        super().__init__(cfg, client, consumer)
        self.names = self.bus.names
        self.store = store
        self.clock = clock
        self.report_lookback_s = report_lookback_s
        self._last_report_id: int | None = None  # audit id of the newest operator report read
        self.version: str | None = None
        self.manifest: Manifest | None = None
        self.detector: DriftDetector | None = None
        self.alarms: list[DriftAlarm] = []
        self.skipped = Counter[str]()
        self.products = self._product_detectors()  # one window and reference per product: a changeover is no drift
        self._held: list[Entry] = []
        self.bus.ensure_group(self.names.verdicts, self.names.drift_group, start="$")

    def _product_detectors(self) -> dict[str, DriftDetector]:
        out: dict[str, DriftDetector] = {}
        for name, product in self.cfg.products.items():
            manifest, ref = load_reference(product.package)
            if ref.empty:
                log.warning(
                    "product %s: package %s has no drift reference: its drift is not monitored", name, manifest.version
                )
                continue
            out[name] = DriftDetector(ref, self.cfg.drift, self.clock, manifest.version)
        return out

    # -- reference ---------------------------------------------------------------------------------
    def refresh_model(self) -> None:
        """Follow the active model: a new version brings a new reference and fresh windows."""
        raw: dict[bytes, bytes] = self.bus.r.hgetall(self.names.active_model)  # type: ignore[assignment]  # bytes client
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
            self._event(
                EventType.MAINTENANCE,
                "info",
                f"drift monitoring resumed with the reference of {manifest.version}",
                {"lifted": sup},
            )

    # -- loop -------------------------------------------------------------------------------------------
    def setup(self) -> None:
        """The group, and the verdicts a previous run of this consumer read and never acknowledged."""
        self.bus.ensure_group(self.names.verdicts, self.names.drift_group, start="$")
        self._held = self.recover_own(self.names.verdicts, self.names.drift_group, RECOVER_COUNT)
        if self._held:
            log.info("drift monitor %s: %d verdicts left pending by its previous run", self.consumer, len(self._held))

    def step(self, block_ms: int | None = 100, count: int = 500) -> list[DriftAlarm]:
        """Read a batch of verdicts (own pending first, then a dead monitor's, then new ones), feed the detector,
        acknowledge; return the alarms raised."""
        self.refresh_model()
        self._poll_reports()
        entries, self._held = self._held, []
        entries = entries or self.reclaim_stale(
            self.names.verdicts, self.names.drift_group, self.cfg.store.reclaim_idle_ms, count
        )
        entries = entries or self.bus.read_new(
            self.names.verdicts, self.names.drift_group, self.consumer, count, block_ms
        )
        self.progress.ok(len(entries))
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

    # -- outputs ----------------------------------------------------------------------------------------
    def _raise(self, alarm: DriftAlarm) -> None:
        self.alarms.append(alarm)
        msg = (
            f"{alarm.source}{f' of product {alarm.product}' if alarm.product else ''}: {alarm.statistic} = "
            f"{alarm.value:.3g} (threshold {alarm.threshold:.3g}); "
            f"tripped: {', '.join(sorted(alarm.details))}"
        )
        self._event(
            EventType.DRIFT_ALARM, "warning", msg, alarm.as_dict(), alarm.model_version if alarm.product else None
        )
        if self.store is not None:
            try:
                from inspector.store.records import record_drift_alarm

                record_drift_alarm(
                    self.store,
                    self.cfg.station.id,
                    alarm.statistic,
                    alarm.value,
                    alarm.threshold,
                    alarm.as_dict(),
                    alarm.ts,
                )
            except Exception:  # noqa: BLE001 - a failing side output never blocks the alarm event
                log.exception("could not record the drift alarm in the store")

    def _event(
        self, etype: EventType, severity: Severity, message: str, data: dict[str, Any], version: str | None = None
    ) -> None:
        event = Event.model_validate(
            {
                "station": self.cfg.station.id,
                "type": etype,
                "severity": severity,
                "message": message,
                "model_version": version or self.version,
                "data": data,
            }
        )
        self.bus.publish_event(event)
