"""GUI state without Qt: role login with PIN hashes, counters, banner, keymap, drift bands."""

from __future__ import annotations

import pytest

from gui.state import (
    DriftSeries,
    LiveStatus,
    LoginError,
    Role,
    RolePolicy,
    ShiftCounters,
    label_keymap,
    pin_hash,
)
from inspector.contracts.config import GuiSection, RoleSection
from inspector.contracts.messages import Decision, ImageStats, Verdict
from inspector.line.health import evaluate


def verdict(decision: Decision = Decision.PASS, latency_ms: float = 50, brightness: float = 100) -> Verdict:
    return Verdict(
        station="s",
        frame_id="f",
        camera="c",
        seq=1,
        part_id="p",
        captured_at=0.0,
        decision=decision,
        reject=decision is not Decision.PASS,
        latency_ms=latency_ms,
        class_probs={"good": 0.9},
        image_stats=ImageStats(brightness=brightness, contrast=1, sharpness=1, mean_r=1, mean_g=1, mean_b=1),
    )


def test_login_checks_pin_hash_and_signs_actions() -> None:
    policy = RolePolicy(GuiSection(maintenance=RoleSection(pin_hash=pin_hash("4711"))))
    with pytest.raises(LoginError):
        policy.login("Max", Role.MAINTENANCE, "0000")
    with pytest.raises(LoginError):
        policy.login("  ", Role.OPERATOR)
    s = policy.login("Max", "maintenance", "4711")
    assert s.actor == "Max (maintenance)" and s.can("retrain") and not s.can("label")
    op = policy.login("Olga", Role.OPERATOR)  # no PIN configured for operators
    assert op.can("verdict.dispute") and not op.can("model.promote")
    with pytest.raises(PermissionError):
        op.require("retrain")


def test_counters_and_yield() -> None:
    c = ShiftCounters()
    assert c.yield_pct is None
    for d in [Decision.PASS] * 3 + [Decision.FAIL, Decision.REVIEW, Decision.ERROR]:
        c.add(d)
    assert (c.total, c.passed, c.failed, c.review, c.error) == (6, 3, 1, 1, 1)
    assert dict(c.rows())["Yield"] == "50.0 %"


def test_banner_priorities() -> None:
    st = LiveStatus(deadline_s=0.5)
    assert "DISCONNECTED" in st.banner().text
    st.connected = True
    st.health = evaluate(True, 0, True)
    assert st.banner().text == "LINE IS REJECTING — inspector down (no worker heartbeat)"
    st.health = evaluate(True, 1, False)
    assert "camera silent" in st.banner().text
    st.health = evaluate(True, 1, True)
    assert st.banner().level == "ok"
    for _ in range(5):
        st.on_verdict(verdict(latency_ms=900))
    assert "late" in st.banner().text


def test_keymap() -> None:
    km = label_keymap(["scratch", "spot"])
    assert km["1"].label == "scratch" and km["2"].label == "spot" and "3" not in km
    assert km["G"].label == "good" and km["U"].label == "unsure"
    assert km["S"].kind == "skip" and km["Z"].kind == "undo"


def test_drift_band_and_alarm() -> None:
    from inspector.drift.reference import parse_reference, reference_from_samples

    ref = reference_from_samples([{"brightness": 100.0 + i % 11} for i in range(500)])
    d = DriftSeries()
    for _ in range(60):  # verdicts before the reference is known teach nothing
        assert d.add(verdict(brightness=180)) == []
    assert d.bands == {}
    d.set_reference("v1", parse_reference(ref))
    band = d.bands["brightness"]
    assert (band.low, band.high) == (ref["image_stats"]["brightness"]["p01"], ref["image_stats"]["brightness"]["p99"])
    assert d.add(verdict(brightness=105)) == [] and "brightness" in d.add(verdict(brightness=180))
    d.set_reference("v2", None)
    assert d.bands == {} and d.version == "v2"
