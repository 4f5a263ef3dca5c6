"""Parts seen by several views (``parts.views``): one fail-safe outcome per part, from every view's verdict.

:class:`PartDecider` mirrors :class:`~inspector.line.decider.LineDecider` (pure logic, injectable clock): the
line runner feeds it frame metas and verdicts, and it collects the verdicts of a part's views by part id.
A part is decided when every view has a verdict, or at ``captured_at`` (its first view) ``+ line.deadline_ms``:

- FAIL if any view failed (naming the view and its defect class), else REVIEW if any view was unsure, else
  ERROR if a view erred or is not one of ``parts.views`` -- all reject;
- a view with no verdict by the deadline rejects the part (``no_verdict_by_deadline``, the missing views named);
- ACCEPT only when every view PASSed before the deadline (all in after it: ``late_verdict``, reject);
- exactly one outcome per part: later verdicts, and a second verdict of the same view, are ignored.

:class:`PartCommitter` writes each part verdict once (SET NX of the part's done key and XADD to the parts
stream, in one Lua script), so a restarted line process never gives a part a second verdict: the runner
sends a part's outcome to the line only when its commit was the first.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import redis

from inspector.bus.streams import decode_message
from inspector.contracts.config import StationConfig
from inspector.contracts.errors import InspectorError
from inspector.contracts.messages import Decision, FrameMeta, PartVerdict, Verdict, ViewResult
from inspector.contracts.names import STREAM_FIELD_MESSAGE, Names
from inspector.line.decider import LineDecider, Outcome, Part, Reason, Signal
from inspector.line.health import REDIS_ERRORS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartOutcome(Outcome):
    """A part's outcome for the line outputs, with the part verdict the line process commits once."""

    verdict: PartVerdict | None = None

    def payload(self) -> dict[str, object]:
        """The MQTT decision message of the part: the line's fields plus which view decided and each view's result."""
        out = super().payload()
        if self.verdict is not None:
            out.update(
                failed_view=self.verdict.failed_view,
                defect_class=self.verdict.defect_class,
                missing=list(self.verdict.missing),
                views={v: r.decision.value for v, r in self.verdict.views.items()},
            )
        return out


@dataclass
class _InFlight:
    part: Part  # the first frame seen of the part (its id is the shared part id)
    deadline: float
    frames: dict[str | None, str] = field(default_factory=dict)  # view -> frame id seen on the frames stream
    verdicts: dict[str, Verdict] = field(default_factory=dict)  # view -> its verdict
    foreign: list[Verdict] = field(default_factory=list)  # verdicts of views that are not in parts.views


_ORDER = (Decision.FAIL, Decision.REVIEW, Decision.ERROR)  # which view decides a rejected part
_REASON = {Decision.FAIL: Reason.FAIL, Decision.REVIEW: Reason.REVIEW, Decision.ERROR: Reason.ERROR}


class PartDecider(LineDecider):
    """Tracks parts in flight by part id and turns their views' verdicts into exactly one outcome per part
    (LineDecider's deadline heap, keyed by part id instead of frame id)."""

    def __init__(
        self,
        views: Sequence[str],
        deadline_s: float,
        station: str,
        clock: Callable[[], float] = time.time,
        stale_after_s: float = 30.0,
        remember: int = 50_000,
    ) -> None:
        super().__init__(deadline_s, clock, stale_after_s, remember)
        if not views:
            raise ValueError("views must name at least one view")
        self.views = list(views)
        self.station = station
        self._pending: dict[str, _InFlight] = {}  # type: ignore[assignment]

    # ------------------------------------------------------------------ inputs
    def register(self, meta: FrameMeta) -> None:  # type: ignore[override]
        """A view of a part was captured: the part must have every view by its first capture + deadline."""
        if meta.part_id in self._decided:
            return
        state = self._state(Part.from_meta(meta))
        if state is not None:
            state.frames.setdefault(meta.view, meta.frame_id)

    def on_verdict(self, verdict: Verdict, now: float | None = None) -> PartOutcome | None:  # type: ignore[override]
        """The part's outcome when this verdict completes it (or decides it), else None."""
        now = self.clock() if now is None else now
        if verdict.part_id in self._decided:
            self.ignored += 1
            return None
        state = self._state(Part.from_verdict(verdict), now)
        if state is None:
            return None
        if verdict.view not in self.views:
            state.foreign.append(verdict)  # a view the station does not know: the part is rejected now
            return self._decide(state, now)
        if verdict.view in state.verdicts:
            self.ignored += 1  # a second verdict of one view of a part: the first one stands
            return None
        state.verdicts[verdict.view] = verdict
        if len(state.verdicts) == len(self.views):
            return self._decide(state, now)
        return None

    def expire(self, now: float | None = None) -> list[PartOutcome]:  # type: ignore[override]
        """Decide every pending part whose deadline has passed (its missing views reject it)."""
        now = self.clock() if now is None else now
        out: list[PartOutcome] = []
        while self._heap and self._heap[0][0] <= now:
            _, part_id = heapq.heappop(self._heap)
            state = self._pending.get(part_id)
            if state is not None and state.deadline <= now:
                out.append(self._decide(state, now))
        return out

    # ------------------------------------------------------------------ internals
    def _state(self, part: Part, now: float | None = None) -> _InFlight | None:
        state = self._pending.get(part.part_id)
        now = self.clock() if now is None else now
        if state is None:
            if now - part.captured_at > self.deadline_s + self.stale_after_s:
                self.ignored += 1  # a backlog frame or verdict of a part that left long ago
                return None
            state = self._pending[part.part_id] = _InFlight(part, part.captured_at + self.deadline_s)
            heapq.heappush(self._heap, (state.deadline, part.part_id))
        elif part.captured_at < state.part.captured_at:  # an earlier view arrived later: it sets the deadline
            state.part, state.deadline = part, part.captured_at + self.deadline_s
            heapq.heappush(self._heap, (state.deadline, part.part_id))
        return state

    def _decide(self, state: _InFlight, now: float) -> PartOutcome:
        """The part's one outcome, fail-safe: the first rejecting view in ``_ORDER`` decides, a missing view
        rejects it, and it is accepted only when every view passed (before the deadline, else late)."""
        self._pending.pop(state.part.part_id, None)
        self._mark_decided(state.part.part_id)
        missing = [v for v in self.views if v not in state.verdicts]
        reasons, decider = self._view_findings(state)
        if missing:
            reasons.append(f"no verdict by the deadline from view(s): {', '.join(missing)}")
        decision, reason = self._part_decision(decider, missing, late=now > state.deadline)
        if reason is Reason.LATE:
            reasons.append("every view passed, after the deadline")
        view, verdict = decider if decider is not None else (None, None)
        signal = Signal.ACCEPT if reason is Reason.PASS else Signal.REJECT
        seen = verdict or next(iter(state.verdicts.values()), None)
        part_verdict = PartVerdict(
            station=self.station,
            part_id=state.part.part_id,
            decision=decision,
            reject=signal is Signal.REJECT,
            signal=signal.value,
            reason=reason.value,
            failed_view=view,
            defect_class=verdict.defect_class if verdict else None,
            reasons=reasons,
            views=_view_results(state),
            missing=missing,
            captured_at=state.part.captured_at,
            decided_at=now,
            product=seen.product if seen else None,
        )
        return PartOutcome(
            state.part,
            signal,
            reason,
            None if reason is Reason.TIMEOUT else decision,
            now,
            defect_class=part_verdict.defect_class,
            model_version=seen.model_version if seen else None,
            verdict=part_verdict,
        )

    def _view_findings(self, state: _InFlight) -> tuple[list[str], tuple[str, Verdict | None] | None]:
        """One reason per unknown view and per rejecting view, and the view that decides the part (the first
        FAIL, else REVIEW, else ERROR or unknown view), None when no view rejects it."""
        known = ", ".join(self.views)
        foreign: dict[str, Verdict | None] = {str(f.view): f for f in state.foreign}
        foreign.update({str(v): None for v in state.frames if v not in self.views and str(v) not in foreign})
        reasons = [f"view {v!r} is not one of parts.views ({known})" for v in foreign]
        decider: tuple[str, Verdict | None] | None = None
        for decision in _ORDER:
            own = [
                (v, state.verdicts[v])
                for v in self.views
                if v in state.verdicts and state.verdicts[v].decision is decision
            ]
            for view, verdict in own:
                what = verdict.defect_class or "; ".join(verdict.reasons[:1]) or decision.value.lower()
                reasons.append(f"view {view}: {decision.value} ({what})")
            hits: list[tuple[str, Verdict | None]] = list(own)
            if decision is Decision.ERROR:
                hits += list(foreign.items())
            if hits and decider is None:
                decider = hits[0]
        return reasons, decider

    def _part_decision(
        self, decider: tuple[str, Verdict | None] | None, missing: list[str], late: bool
    ) -> tuple[Decision, Reason]:
        """The part's decision and reason: the deciding view's (ERROR when it is not one of ``parts.views``),
        else a timeout when a view is missing, else a pass (late when after the deadline)."""
        if decider is not None:
            _, verdict = decider
            decision = verdict.decision if verdict is not None and verdict.view in self.views else Decision.ERROR
            return decision, _REASON[decision]
        if missing:
            return Decision.ERROR, Reason.TIMEOUT
        if late:
            return Decision.PASS, Reason.LATE
        return Decision.PASS, Reason.PASS


def _view_results(state: _InFlight) -> dict[str, ViewResult]:
    """Each view's result in the part verdict."""
    return {
        v: ViewResult(
            frame_id=x.frame_id,
            decision=x.decision,
            defect_class=x.defect_class,
            model_version=x.model_version,
            camera=x.camera,
        )
        for v, x in state.verdicts.items()
    }


_COMMIT_PART = """
local fresh = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', tonumber(ARGV[2]))
if fresh then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'm', ARGV[4])
  return 1
end
return 0
"""


class PartCommitter:
    """Writes each part verdict to the parts stream exactly once (the part's done key, SET NX, in one script)."""

    def __init__(self, client: redis.Redis, cfg: StationConfig) -> None:
        self.client, self.cfg = client, cfg
        self.names = Names(cfg.redis.prefix, cfg.station.id)
        self._script = client.register_script(_COMMIT_PART)
        self.held: list[PartVerdict] = []

    def first(self, verdict: PartVerdict) -> bool:
        """Commit; False only when the part had a verdict already. With Redis unreachable the part verdict is
        held and committed when Redis answers again, and True is returned: the line gets its signal on time."""
        try:
            self.flush_held()
            return self.commit(verdict)
        except REDIS_ERRORS as err:
            self.held.append(verdict)
            del self.held[:-10_000]
            log.warning(
                "line: part verdict of %s not committed yet (%s); held, %d waiting",
                verdict.part_id,
                err,
                len(self.held),
            )
            return True

    def flush_held(self) -> None:
        while self.held:
            self.commit(self.held[0])
            self.held.pop(0)

    def commit(self, verdict: PartVerdict) -> bool:
        """True when this is the part's first verdict (send it to the line); False: it had one already."""
        fresh = self._script(
            keys=[self.names.part_done(verdict.part_id), self.names.parts],
            args=[verdict.id, self.cfg.retention.stream_max_age_s, self.cfg.redis.verdicts_maxlen, verdict.to_json()],
        )
        return bool(fresh)


def replay_recent(client: redis.Redis, names: Names, decider: PartDecider) -> list[PartOutcome]:
    """What a previous line process read but may not have decided (its parts live only in its memory): the frames
    and verdicts of the last deadline (+ 2 s), up to where the line's group has read, fed to ``decider`` again.
    Parts it did decide are decided again and refused by their done key (no second signal); the others get
    their one outcome now or at their deadline."""
    since_ms = int((decider.clock() - decider.deadline_s - 2.0) * 1000)
    out: list[PartOutcome] = []
    for stream in (names.frames, names.verdicts):
        try:
            groups = {_text(g["name"]): g for g in client.xinfo_groups(stream)}
        except redis.ResponseError:
            continue  # no stream yet
        group = groups.get(names.line_group)
        if group is None:
            continue
        last = _text(group["last-delivered-id"])
        if last in ("0-0", "0"):
            continue
        for _eid, fields in client.xrange(stream, f"{since_ms}-0", last):
            try:
                msg = decode_message((fields or {}).get(STREAM_FIELD_MESSAGE))
            except (InspectorError, ValueError):
                continue
            if isinstance(msg, FrameMeta):
                decider.register(msg)
            elif isinstance(msg, Verdict):
                decided = decider.on_verdict(msg)
                if decided is not None:
                    out.append(decided)
    return out


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def read_part_verdicts(client: redis.Redis, names: Names) -> list[PartVerdict]:
    """Every part verdict on the parts stream, oldest first (tests, ``inspector trace``)."""
    return [PartVerdict.from_json(fields[STREAM_FIELD_MESSAGE]) for _eid, fields in client.xrange(names.parts)]
