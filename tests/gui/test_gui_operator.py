"""Operator view on a real Redis: live frames and verdicts within a second, the down banner, wrong-verdict."""

from __future__ import annotations

import time

import pytest
import redis
from pytestqt.qtbot import QtBot

from gui.app import MainWindow
from gui.services import Services
from gui.state import Role
from inspector.bus.streams import StationBus
from inspector.contracts.config import StationConfig
from inspector.contracts.messages import Decision
from inspector.contracts.names import Names
from tests.gui.conftest import publish_part, session


def healthy(r: redis.Redis, cfg: StationConfig) -> None:
    names = Names(cfg.redis.prefix, cfg.station.id)
    r.set(names.heartbeat("w1"), "1", px=30_000)
    r.set(names.camera_heartbeat(cfg.camera.id), "1", px=30_000)


@pytest.fixture
def window(qtbot: QtBot, station_config: StationConfig, services: Services):  # type: ignore[no-untyped-def]
    win = MainWindow(station_config, session(Role.OPERATOR, "Olga Operator"), services)
    qtbot.addWidget(win)
    win.resize(1280, 800)
    win.show()
    qtbot.waitUntil(lambda: win.operator.status.connected, timeout=5000)
    yield win
    win.shutdown()


def test_frames_and_verdicts_appear_within_one_second(
    qtbot: QtBot, window: MainWindow, station_config: StationConfig, redis_client: redis.Redis, screenshot
) -> None:  # type: ignore[no-untyped-def]
    healthy(redis_client, station_config)
    bus = StationBus(redis_client, station_config)
    op = window.operator
    for seq in range(5):
        publish_part(bus, seq, Decision.PASS)
    t0 = time.monotonic()
    meta, verdict = publish_part(bus, 5, Decision.FAIL, "scratch")
    qtbot.waitUntil(lambda: op.shown_frame_id == meta.frame_id and op.indicator.text() == "FAIL", timeout=1000)
    assert time.monotonic() - t0 < 1.0
    assert op.defect.text() == "Defect: scratch"
    assert op.counters.total == 6 and op.counters.failed == 1
    assert op.counter_grid.values["Yield"].text() == "83.3 %"
    qtbot.waitUntil(lambda: op.banner.banner.level == "ok", timeout=1000)
    screenshot(window, "operator_live_fail")
    # toggles re-render without the overlay
    op.region_box.setChecked(False)
    op.heat_box.setChecked(False)
    qtbot.wait(120)


def test_banner_when_inspector_down(qtbot: QtBot, window: MainWindow, screenshot) -> None:  # type: ignore[no-untyped-def]
    op = window.operator  # no worker heartbeat in this station at all
    qtbot.waitUntil(lambda: "LINE IS REJECTING" in op.banner.text(), timeout=1500)
    assert "no worker heartbeat" in op.banner.text()
    screenshot(window, "operator_inspector_down")


def test_wrong_verdict_reaches_review_queue(
    qtbot: QtBot,
    window: MainWindow,
    station_config: StationConfig,
    redis_client: redis.Redis,
    services: Services,
    screenshot,
) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("inspector.review.labelling", reason="LabellingService not available yet")
    from inspector.store import records

    healthy(redis_client, station_config)
    bus = StationBus(redis_client, station_config)
    meta, verdict = publish_part(bus, 1, Decision.FAIL, "scratch")
    records.record_verdicts(services.store, [verdict])  # what the verdict recorder does in a station
    op = window.operator
    qtbot.waitUntil(lambda: op.wrong.isEnabled(), timeout=2000)
    qtbot.mouseClick(op.wrong, __import__("PySide6.QtCore", fromlist=["Qt"]).Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "sent to review" in op.feedback.text(), timeout=5000)
    stats = services.labelling.queue_stats()
    item = services.labelling.lease_next("Quinn QE")
    assert item is not None and item.frame_id == meta.frame_id, stats
    screenshot(window, "operator_wrong_verdict")
