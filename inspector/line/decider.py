"""Fail-safe line decisions: exactly one ACCEPT or REJECT per part, by a deadline.

Pure logic with an injectable clock, no I/O: the runner feeds it frame metas (capture) and verdicts,
and calls :meth:`LineDecider.expire` often enough to honour deadlines.

Rules (DESIGN.md, "The line fails safe"):

- ACCEPT only for a PASS verdict that arrives before ``captured_at + deadline``;
- REJECT for FAIL, REVIEW and ERROR, for a PASS that arrives late, and for a part with no verdict
  by its deadline;
- a part gets exactly one outcome: a verdict arriving after the part was rejected for time-out is
  ignored, and so is a second verdict for the same frame.
"""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum

from inspector.contracts.messages import Decision, FrameMeta, Verdict


class Signal(StrEnum):
    ACCEPT = "ACCEPT"
    REJECT = "REJECT"


class Reason(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    REVIEW = "review"
    ERROR = "error"
    LATE = "late_verdict"
    TIMEOUT = "no_verdict_by_deadline"


@dataclass(frozen=True)
class Part:
    frame_id: str
    part_id: str
    camera: str
    seq: int
    captured_at: float

    @classmethod
    def from_meta(cls, meta: FrameMeta) -> Part:
        return cls(meta.frame_id, meta.part_id, meta.camera, meta.seq, meta.captured_at)

    @classmethod
    def from_verdict(cls, v: Verdict) -> Part:
        return cls(v.frame_id, v.part_id, v.camera, v.seq, v.captured_at)


@dataclass(frozen=True)
class Outcome:
    """The signal for one part, as the line controller receives it."""

    part: Part
    signal: Signal
    reason: Reason
    decision: Decision | None
    decided_at: float
    defect_class: str | None = None  # of the verdict that decided the part (None: no verdict)
    model_version: str | None = None

    def payload(self) -> dict[str, object]:
        """JSON body of the MQTT decision message."""
        return {
            "part_id": self.part.part_id,
            "frame_id": self.part.frame_id,
            "camera": self.part.camera,
            "seq": self.part.seq,
            "signal": self.signal.value,
            "reason": self.reason.value,
            "decision": self.decision.value if self.decision else None,
            "defect_class": self.defect_class,
            "model_version": self.model_version,
            "captured_at": self.part.captured_at,
            "decided_at": self.decided_at,
        }


_DECISION_REASON = {
    Decision.PASS: Reason.PASS,
    Decision.FAIL: Reason.FAIL,
    Decision.REVIEW: Reason.REVIEW,
    Decision.ERROR: Reason.ERROR,
}


class LineDecider:
    """Tracks parts in flight and turns verdicts and deadlines into exactly one outcome per part."""

    def __init__(
        self,
        deadline_s: float,
        clock: Callable[[], float] = time.time,
        stale_after_s: float = 30.0,
        remember: int = 50_000,
    ) -> None:
        if deadline_s <= 0:
            raise ValueError("deadline_s must be positive")
        self.deadline_s = deadline_s
        self.clock = clock
        self.stale_after_s = stale_after_s
        self._pending: dict[str, Part] = {}
        self._heap: list[tuple[float, str]] = []
        self._decided: OrderedDict[str, None] = OrderedDict()
        self._remember = remember
        self.ignored = 0

    # ------------------------------------------------------------------ inputs
    def register(self, part: Part) -> None:
        """A part was captured: it must have a PASS by ``captured_at + deadline`` or it is rejected."""
        if part.frame_id in self._pending or part.frame_id in self._decided:
            return
        if self.clock() - part.captured_at > self.deadline_s + self.stale_after_s:
            self.ignored += 1  # a backlog frame whose part left long ago
            return
        self._pending[part.frame_id] = part
        heapq.heappush(self._heap, (part.captured_at + self.deadline_s, part.frame_id))

    def on_verdict(self, verdict: Verdict, now: float | None = None) -> Outcome | None:
        """The outcome this verdict decides, or None when its part already has one (or is long gone)."""
        now = self.clock() if now is None else now
        if verdict.frame_id in self._decided:
            self.ignored += 1
            return None
        registered = self._pending.pop(verdict.frame_id, None)
        part = registered or Part.from_verdict(verdict)
        if registered is None and now - part.captured_at > self.deadline_s + self.stale_after_s:
            # never registered and long gone (backlog after a restart): no signal, the line has moved on
            self._mark_decided(part.frame_id)
            self.ignored += 1
            return None
        outcome = self._decide(part, verdict.decision, now)
        return replace(outcome, defect_class=verdict.defect_class, model_version=verdict.model_version)

    def expire(self, now: float | None = None) -> list[Outcome]:
        """REJECT every pending part whose deadline has passed."""
        now = self.clock() if now is None else now
        out: list[Outcome] = []
        while self._heap and self._heap[0][0] <= now:
            _, frame_id = heapq.heappop(self._heap)
            part = self._pending.pop(frame_id, None)
            if part is not None:
                out.append(self._finish(part, Signal.REJECT, Reason.TIMEOUT, None, now))
        return out

    # ------------------------------------------------------------------ queries
    def next_deadline(self) -> float | None:
        """Epoch time of the earliest pending deadline (stale heap entries are dropped)."""
        while self._heap and self._heap[0][1] not in self._pending:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    @property
    def pending(self) -> int:
        return len(self._pending)

    # ------------------------------------------------------------------ internals
    def _decide(self, part: Part, decision: Decision, now: float) -> Outcome:
        if decision is Decision.PASS and now > part.captured_at + self.deadline_s:
            return self._finish(part, Signal.REJECT, Reason.LATE, decision, now)
        signal = Signal.ACCEPT if decision is Decision.PASS else Signal.REJECT
        return self._finish(part, signal, _DECISION_REASON[decision], decision, now)

    def _finish(self, part: Part, signal: Signal, reason: Reason, decision: Decision | None, now: float) -> Outcome:
        self._mark_decided(part.frame_id)
        return Outcome(part, signal, reason, decision, now)

    def _mark_decided(self, frame_id: str) -> None:
        self._decided[frame_id] = None
        while len(self._decided) > self._remember:
            self._decided.popitem(last=False)
