"""Operator view with parts.views on a real Redis: the last part is shown with every view, counted per part."""

from __future__ import annotations

import redis
from pytestqt.qtbot import QtBot

from gui.app import MainWindow
from gui.services import Services
from gui.state import Role
from inspector.bus.streams import StationBus
from inspector.contracts.config import StationConfig, parse_config
from inspector.contracts.messages import Decision, FrameMeta, PartVerdict, Verdict, ViewResult
from inspector.contracts.names import Names
from inspector.line.parts import PartCommitter
from tests.gui.conftest import publish_part, session


def _view(frame: tuple[FrameMeta, Verdict], view: str) -> tuple[FrameMeta, Verdict]:
    meta, v = frame
    return meta.model_copy(update={"view": view}), v.model_copy(update={"view": view})


def test_operator_shows_every_view_of_the_last_part(
    qtbot: QtBot, station_config: StationConfig, redis_client: redis.Redis, screenshot
) -> None:  # type: ignore[no-untyped-def]
    data = station_config.model_dump(mode="json")
    data["parts"], data["camera"]["id"] = {"views": ["top", "side"]}, "top"
    cfg = parse_config(data, environ={})
    names = Names(cfg.redis.prefix, cfg.station.id)
    redis_client.set(names.heartbeat("w1"), "1", px=30_000)
    redis_client.set(names.camera_heartbeat(cfg.camera.id), "1", px=30_000)
    from inspector.store import open_store

    store = open_store(cfg)
    win = MainWindow(cfg, session(Role.OPERATOR, "Olga Operator"), Services(cfg, store=store))
    qtbot.addWidget(win)
    win.resize(1280, 900)
    win.show()
    try:
        op = win.operator
        qtbot.waitUntil(lambda: op.status.connected, timeout=5000)
        assert set(op.view_images) == {"top", "side"}
        bus = StationBus(redis_client, cfg)
        top = _view(publish_part(bus, 1, Decision.PASS, with_verdict=False), "top")
        side = _view(publish_part(bus, 2, Decision.FAIL, "scratch", with_verdict=False), "side")
        qtbot.waitUntil(lambda: side[0].frame_id in op.frames, timeout=2000)
        assert bus.commit_verdicts([(top[1], ""), (side[1], "")]) == [True, True]
        part = PartVerdict(
            station=cfg.station.id,
            part_id="part-000000001",
            decision=Decision.FAIL,
            reject=True,
            signal="REJECT",
            reason="fail",
            failed_view="side",
            defect_class="scratch",
            reasons=["view side: FAIL (scratch)"],
            captured_at=top[0].captured_at,
            decided_at=side[0].captured_at,
            views={
                "top": ViewResult(frame_id=top[0].frame_id, decision=Decision.PASS),
                "side": ViewResult(frame_id=side[0].frame_id, decision=Decision.FAIL, defect_class="scratch"),
            },
        )
        assert PartCommitter(redis_client, cfg).commit(part)
        qtbot.waitUntil(lambda: op.last_part is not None and op.indicator.text() == "FAIL", timeout=2000)
        qtbot.waitUntil(lambda: op.view_labels["side"].text() == "side: FAIL · scratch", timeout=1000)
        assert op.view_labels["top"].text() == "top: PASS"
        assert op.defect.text() == "Defect: scratch (side)"
        assert op.counters.total == 1 and op.counters.failed == 1, "the shift counts parts, not frames"
        screenshot(win, "operator_two_view_part")
    finally:
        win.shutdown()
        store.close()
