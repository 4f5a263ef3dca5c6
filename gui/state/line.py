"""What the operator sees of the line, without Qt: shift counters, rates, the line banner."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from inspector.contracts.messages import Decision, Verdict
from inspector.line.health import Health


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
        return [
            ("Total", str(self.total)),
            ("Pass", str(self.passed)),
            ("Fail", str(self.failed)),
            ("Review", str(self.review)),
            ("Error", str(self.error)),
            ("Yield", "–" if y is None else f"{y:.1f} %"),
        ]


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
