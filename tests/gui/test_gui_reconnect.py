"""The GUI survives a Redis restart: 'disconnected' while down, live again when it is back."""

from __future__ import annotations

from pathlib import Path

from pytestqt.qtbot import QtBot

from gui.app import MainWindow
from gui.services import Services
from gui.state import Role
from inspector.bus.connection import EmbeddedRedis
from inspector.contracts.config import StationConfig
from tests.gui.conftest import session


def test_survives_redis_restart(qtbot: QtBot, tmp_path: Path, station_config: StationConfig, screenshot) -> None:  # type: ignore[no-untyped-def]
    server = EmbeddedRedis(tmp_path / "own-redis")
    url = server.start()
    cfg = station_config.model_copy(update={"redis": station_config.redis.model_copy(update={"url": url})})
    win = MainWindow(cfg, session(Role.OPERATOR, "Olga Operator"), Services(cfg, store=object()))
    qtbot.addWidget(win)
    win.resize(1280, 800)
    win.show()
    try:
        qtbot.waitUntil(lambda: win.operator.status.connected, timeout=5000)
        server.kill()
        qtbot.waitUntil(lambda: not win.operator.status.connected, timeout=4000)
        qtbot.waitUntil(lambda: "DISCONNECTED" in win.operator.banner.text(), timeout=1000)
        qtbot.waitUntil(lambda: "DISCONNECTED" in win.connection.text(), timeout=1000)  # its own queued slot
        screenshot(win, "operator_redis_down")
        server.start()  # same port and data folder
        qtbot.waitUntil(lambda: win.operator.status.connected, timeout=8000)
    finally:
        win.shutdown()
        server.stop()
