"""LineDecider: pure rules, driven by a fake clock."""

from __future__ import annotations

from inspector.contracts.messages import Decision, Verdict
from inspector.line.decider import LineDecider, Part, Reason, Signal
from inspector.line.health import evaluate

T0 = 1_000_000.0


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def part(n: int, captured_at: float = T0) -> Part:
    return Part(f"f{n}", f"p{n}", "cam0", n, captured_at)


def verdict(p: Part, decision: Decision) -> Verdict:
    return Verdict(
        station="s",
        frame_id=p.frame_id,
        camera=p.camera,
        seq=p.seq,
        part_id=p.part_id,
        captured_at=p.captured_at,
        decision=decision,
        reject=decision is not Decision.PASS,
    )


def test_timely_pass_accepts_and_other_decisions_reject() -> None:
    clock = Clock()
    d = LineDecider(0.5, clock=clock)
    for n in range(4):
        d.register(part(n))
    clock.t = T0 + 0.2
    outs = [d.on_verdict(verdict(part(n), dec)) for n, dec in enumerate(Decision)]
    assert [(o.signal, o.reason) for o in outs if o] == [
        (Signal.ACCEPT, Reason.PASS),
        (Signal.REJECT, Reason.FAIL),
        (Signal.REJECT, Reason.REVIEW),
        (Signal.REJECT, Reason.ERROR),
    ]
    assert d.pending == 0


def test_late_pass_is_rejected() -> None:
    clock = Clock()
    d = LineDecider(0.5, clock=clock)
    d.register(part(1))
    clock.t = T0 + 0.501
    out = d.on_verdict(verdict(part(1), Decision.PASS))
    assert out is not None and out.signal is Signal.REJECT and out.reason is Reason.LATE
    assert out.payload()["decision"] == "PASS"


def test_missing_verdict_rejected_at_deadline_exactly_once() -> None:
    clock = Clock()
    d = LineDecider(0.5, clock=clock)
    d.register(part(1))
    clock.t = T0 + 0.49
    assert d.expire() == []
    assert d.next_deadline() == T0 + 0.5
    clock.t = T0 + 0.5
    outs = d.expire()
    assert [(o.part.part_id, o.signal, o.reason) for o in outs] == [("p1", Signal.REJECT, Reason.TIMEOUT)]
    # the verdict that finally arrives, and a duplicate registration, change nothing
    clock.t = T0 + 0.6
    assert d.on_verdict(verdict(part(1), Decision.PASS)) is None
    d.register(part(1))
    assert d.expire() == [] and d.pending == 0


def test_duplicate_verdict_gives_one_outcome() -> None:
    d = LineDecider(0.5, clock=Clock())
    d.register(part(1))
    assert d.on_verdict(verdict(part(1), Decision.PASS)) is not None
    assert d.on_verdict(verdict(part(1), Decision.FAIL)) is None


def test_verdict_before_frame_meta_uses_verdict_capture_time() -> None:
    clock = Clock(T0 + 0.1)
    d = LineDecider(0.5, clock=clock)
    out = d.on_verdict(verdict(part(7), Decision.PASS))
    assert out is not None and out.signal is Signal.ACCEPT
    d.register(part(7))  # the frame meta read afterwards does not start a second deadline
    clock.t = T0 + 5
    assert d.expire() == []


def test_stale_backlog_is_ignored() -> None:
    clock = Clock(T0 + 3600)
    d = LineDecider(0.5, clock=clock, stale_after_s=30)
    d.register(part(1))
    assert d.pending == 0
    assert d.on_verdict(verdict(part(2), Decision.FAIL)) is None


def test_health_rules() -> None:
    assert evaluate(True, 1, True).ready
    assert not evaluate(False, 1, True).ready
    assert evaluate(True, 0, True).reason.startswith("inspector down")
    assert evaluate(True, 2, False).reason == "camera silent"
    assert evaluate(True, 2, False, require_camera=False).ready
