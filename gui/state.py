"""GUI state without Qt: roles and login, shift counters, live status, labelling keys, drift series.

Views only render these objects and forward user input to them; every rule lives here and is tested
without a display.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from inspector.contracts.config import GuiSection, IdentitySection
from inspector.contracts.lifecycle import Action, may
from inspector.contracts.messages import Decision, Verdict
from inspector.drift.reference import DriftReference
from inspector.line.health import Health

# --------------------------------------------------------------------------- roles


class Role(StrEnum):
    OPERATOR = "operator"
    QUALITY = "quality"
    MAINTENANCE = "maintenance"


ROLE_TITLES = {Role.OPERATOR: "Operator", Role.QUALITY: "Quality engineer", Role.MAINTENANCE: "Maintenance"}

VIEWS: dict[Role, frozenset[str]] = {
    Role.OPERATOR: frozenset({"view.operator"}),
    Role.QUALITY: frozenset({"view.operator", "view.quality"}),
    Role.MAINTENANCE: frozenset({"view.operator", "view.maintenance"}),
}
# the GUI's names for the actions of the one table, inspector.contracts.lifecycle.PERMISSIONS (the CLI's too)
GUI_ACTIONS: dict[str, Action] = {
    "verdict.dispute": Action.DISPUTE, "label": Action.LABEL, "relabel": Action.RELABEL,
    "camera.changed": Action.MAINTENANCE, "retrain": Action.RETRAIN, "model.approve": Action.APPROVE,
    "model.promote": Action.PROMOTE, "model.rollback": Action.ROLLBACK, "product.switch": Action.CHANGEOVER,
    "model.shadow": Action.SHADOW,
}
# what each role may do (a role also sees the views listed for it)
PERMISSIONS: dict[Role, frozenset[str]] = {
    role: VIEWS[role] | {name for name, action in GUI_ACTIONS.items() if may(role.value, action)} for role in Role
}


def pin_hash(pin: str) -> str:
    """The salted scrypt hash to put in ``gui.<role>.pin_hash``."""
    from inspector.identity import hash_secret

    return hash_secret(pin)


class LoginError(Exception):
    pass


@dataclass(frozen=True)
class UserSession:
    """Who is at the station, in which role. Every action is stamped with :attr:`actor`."""

    name: str
    role: Role
    started_at: float = field(default_factory=time.time)

    @property
    def actor(self) -> str:
        return f"{self.name} ({self.role.value})"

    def can(self, permission: str) -> bool:
        return permission in PERMISSIONS[self.role]

    def require(self, permission: str) -> None:
        if not self.can(permission):
            raise PermissionError(f"{ROLE_TITLES[self.role]} may not {permission}")


class RolePolicy:
    """Checks a person's PIN for a role against the salted scrypt hash in ``gui.<role>.pin_hash``; after
    ``identity.lockout_failures`` wrong PINs the role's login is locked (counted and audited in ``store``)."""

    def __init__(self, gui: GuiSection, identity: IdentitySection | None = None, store: Any = None) -> None:
        from inspector.identity import PinLockout

        self.gui = gui
        self.lockout = PinLockout(identity or IdentitySection(), store)

    def needs_pin(self, role: Role) -> bool:
        return getattr(self.gui, role.value).pin_hash is not None

    def login(self, name: str, role: Role | str, pin: str = "") -> UserSession:
        role = Role(role)
        name = name.strip()
        if not name:
            raise LoginError("enter your name: every action is signed with it")
        expected = getattr(self.gui, role.value).pin_hash
        if expected is None:
            return UserSession(name, role)
        from inspector.identity import LockedOut, check_secret

        target = f"gui:{role.value}"
        try:
            self.lockout.check(target)
        except LockedOut as err:
            raise LoginError(err.message) from None
        if not check_secret(pin, expected):
            self.lockout.failed(target, name)
            raise LoginError(f"wrong PIN for {ROLE_TITLES[role]}")
        self.lockout.succeeded(target, name)
        return UserSession(name, role)


# --------------------------------------------------------------------------- counters


@dataclass
class ShiftCounters:
    total: int = 0
    passed: int = 0
    failed: int = 0
    review: int = 0
    error: int = 0
    started_at: float = field(default_factory=time.time)

    def add(self, decision: Decision) -> None:
        self.total += 1
        if decision is Decision.PASS:
            self.passed += 1
        elif decision is Decision.FAIL:
            self.failed += 1
        elif decision is Decision.REVIEW:
            self.review += 1
        else:
            self.error += 1

    @property
    def yield_pct(self) -> float | None:
        return 100.0 * self.passed / self.total if self.total else None

    def rows(self) -> list[tuple[str, str]]:
        y = self.yield_pct
        return [("Total", str(self.total)), ("Pass", str(self.passed)), ("Fail", str(self.failed)),
                ("Review", str(self.review)), ("Error", str(self.error)),
                ("Yield", "–" if y is None else f"{y:.1f} %")]


class RateMeter:
    """Events per second over a sliding window."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque()
        self._first: float | None = None

    def tick(self, t: float | None = None) -> None:
        self._times.append(time.monotonic() if t is None else t)

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()
        if not self._times:
            return 0.0
        if self._first is None:
            self._first = self._times[0]
        return len(self._times) / max(1.0, min(self.window_s, now - self._first))


# --------------------------------------------------------------------------- live status


@dataclass(frozen=True)
class Banner:
    text: str
    level: str  # "ok" | "warn" | "critical"


class LiveStatus:
    """What the operator must see at a glance: connection, inspector health, lateness."""

    def __init__(self, deadline_s: float, late_window: int = 20) -> None:
        self.deadline_s = deadline_s
        self.connected = False
        self.health: Health | None = None
        self.recent_late: deque[bool] = deque(maxlen=late_window)
        self.last_frame_at: float | None = None
        self.last_verdict_at: float | None = None

    def on_verdict(self, v: Verdict, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.last_verdict_at = now
        latency = v.latency_ms / 1000 if v.latency_ms is not None else now - v.captured_at
        self.recent_late.append(latency > self.deadline_s)

    @property
    def late(self) -> bool:
        """Most recent verdicts missed the line deadline (the line rejects them)."""
        n = len(self.recent_late)
        return n >= 3 and sum(self.recent_late) * 2 > n

    def banner(self) -> Banner:
        if not self.connected:
            return Banner("DISCONNECTED from Redis — LINE IS REJECTING", "critical")
        if self.health is not None and not self.health.ready:
            return Banner(f"LINE IS REJECTING — {self.health.reason}", "critical")
        if self.late:
            return Banner("LINE IS REJECTING — verdicts are late (over the deadline)", "critical")
        return Banner("Line running", "ok")


# --------------------------------------------------------------------------- labelling keys


@dataclass(frozen=True)
class KeyAction:
    kind: str  # "label" | "skip" | "undo"
    label: str | None = None


GOOD_LABEL = "good"
UNSURE_LABEL = "unsure"


def label_keymap(defect_classes: list[str]) -> dict[str, KeyAction]:
    """1..9 a defect class each, G good, U unsure, S skip, Z undo (keys are upper-case characters)."""
    keys = {str(i + 1): KeyAction("label", c) for i, c in enumerate(defect_classes[:9])}
    keys.update({"G": KeyAction("label", GOOD_LABEL), "U": KeyAction("label", UNSURE_LABEL),
                 "S": KeyAction("skip"), "Z": KeyAction("undo")})
    return keys


def defect_classes_for(configured: list[str], class_probs: dict[str, float] | None, good: str = "good") -> list[str]:
    """The classes on keys 1..9: configured ones, else the model's non-good classes in their order."""
    if configured:
        return list(configured)
    return [c for c in (class_probs or {}) if c != good][:9]


@dataclass
class LabelProgress:
    labelled: int = 0
    skipped: int = 0
    undone: int = 0

    def text(self, remaining: int | None) -> str:
        left = "?" if remaining is None else str(remaining)
        return f"labelled {self.labelled} · skipped {self.skipped} · undone {self.undone} · {left} waiting"


# --------------------------------------------------------------------------- drift series

DRIFT_STATS = ("brightness", "contrast", "sharpness", "confidence", "anomaly_good")
DRIFT_TITLES = {"brightness": "Brightness", "contrast": "Contrast", "sharpness": "Sharpness",
                "confidence": "Top-class confidence", "anomaly_good": "Anomaly score (good parts)"}


# Chart statistic -> the drift reference's statistic (``inspector.drift.reference``), the one the monitor alarms on.
REFERENCE_STATS = {"brightness": "brightness", "contrast": "contrast", "sharpness": "sharpness",
                   "confidence": "classifier_confidence", "anomaly_good": "anomaly_score_good"}
BAND_QUANTILES = ("p01", "p99")


@dataclass(frozen=True)
class Band:
    low: float
    high: float

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high


def band_of(hist: dict[str, Any]) -> Band | None:
    """The 1st..99th percentile of a reference histogram (mean ± 3 std for a histogram without quantiles)."""
    lo, hi = (hist.get(q) for q in BAND_QUANTILES)
    if lo is None or hi is None:
        if hist.get("mean") is None or hist.get("std") is None:
            return None
        lo, hi = hist["mean"] - 3 * hist["std"], hist["mean"] + 3 * hist["std"]
    return Band(float(lo), float(hi))


def bands_from_reference(ref: DriftReference) -> dict[str, Band]:
    """Bands of the chart statistics from the active package's drift reference (statistics it lacks: none)."""
    out: dict[str, Band] = {}
    for stat, ref_name in REFERENCE_STATS.items():
        hist = ref.numeric.get(ref_name)
        band = band_of(hist) if hist else None
        if band is not None:
            out[stat] = band
    return out


class DriftSeries:
    """Rolling per-statistic series from verdicts, against the bands of the ACTIVE package's drift reference.

    The bands are the 1st..99th percentiles that ``Manifest.drift_reference`` recorded for the frames the
    model was fitted and calibrated on: the very reference ``inspector.drift.monitor`` alarms on, so the chart
    and the alarms never disagree about what normal is. Bands are no longer learned from the first verdicts
    the GUI happens to see: those are whatever the line shows when the GUI starts (possibly already drifted,
    possibly another model's), which is not a reference. A package without a reference gets no band (the
    view says so). ``version``: the model version the bands belong to (the view follows the active model).
    """

    def __init__(self, maxlen: int = 600) -> None:
        self.values: dict[str, deque[float]] = {s: deque(maxlen=maxlen) for s in DRIFT_STATS}
        self.bands: dict[str, Band] = {}
        self.version: str | None = None

    def set_band(self, stat: str, low: float, high: float) -> None:
        self.bands[stat] = Band(low, high)

    def set_reference(self, version: str | None, ref: DriftReference | None) -> None:
        """Bands from ``ref`` (None: no band) for model ``version``."""
        self.version = version
        self.bands = bands_from_reference(ref) if ref is not None else {}

    def add(self, v: Verdict) -> list[str]:
        """Add one verdict; returns the statistics now outside their band."""
        out: list[str] = []
        for stat, x in self._extract(v).items():
            self.values[stat].append(x)
            band = self.bands.get(stat)
            if band is not None and not band.contains(x):
                out.append(stat)
        return out

    def _extract(self, v: Verdict) -> dict[str, float]:
        vals: dict[str, float] = {}
        if v.image_stats is not None:
            vals.update(brightness=v.image_stats.brightness, contrast=v.image_stats.contrast,
                        sharpness=v.image_stats.sharpness)
        if v.class_probs:
            vals["confidence"] = max(v.class_probs.values())
        if v.anomaly_score is not None and v.decision is Decision.PASS:
            vals["anomaly_good"] = v.anomaly_score
        return vals
