"""The maintenance view's drift bands are the active package's drift reference, and follow the active model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import redis
from pytestqt.qtbot import QtBot

from gui.app import MainWindow
from gui.services import Services
from gui.state import Role
from inspector.bus.streams import StationBus
from inspector.contracts.config import StationConfig
from inspector.contracts.messages import Decision, Event, EventType
from tests.gui.conftest import give_drift_reference, publish_part, session


def _region(view, stat: str) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    lo, hi = view.bands[stat].getRegion()
    return float(lo), float(hi)


def test_bands_are_the_active_reference_quantiles_not_the_first_verdicts(
    qtbot: QtBot,
    station_config: StationConfig,
    redis_client: redis.Redis,
    services: Services,
    tiny_package: Path,
    tmp_path: Path,
) -> None:
    bus = StationBus(redis_client, station_config)
    packages = {}
    for version, brightness in (
        ("v1", [200.0 + i % 40 for i in range(300)]),
        ("v2", [60.0 + i % 10 for i in range(300)]),
    ):
        packages[version] = shutil.copytree(tiny_package, tmp_path / version)
        ref = give_drift_reference(packages[version], brightness, version=version)
        packages[version + "_ref"] = ref["image_stats"]["brightness"]
    redis_client.hset(bus.names.active_model, mapping={"version": "v1", "path": str(packages["v1"])})

    win = MainWindow(station_config, session(Role.MAINTENANCE, "Max Maint"), services)
    qtbot.addWidget(win)
    win.show()
    view = win.maintenance
    qtbot.waitUntil(lambda: win.operator.status.connected, timeout=5000)
    for seq in range(60):  # the first verdicts: brightness 120..126, far from v1's reference (200..239)
        publish_part(bus, seq, Decision.PASS)
    qtbot.waitUntil(lambda: len(view.drift.values["brightness"]) == 60, timeout=3000)
    qtbot.waitUntil(lambda: view.drift.version == "v1" and view.bands["brightness"].isVisible(), timeout=3000)
    v1 = packages["v1_ref"]
    assert _region(view, "brightness") == pytest.approx((v1["p01"], v1["p99"]))
    assert view.drift.bands["brightness"].low == v1["p01"] and view.drift.bands["brightness"].high == v1["p99"]
    assert not view.drift.bands["brightness"].contains(123.0)  # the first verdicts' level is outside it
    assert "v1" in view.band_note.text()
    assert "confidence" not in view.drift.bands and not view.bands["confidence"].isVisible()  # not in the reference

    # the active model changes: the workers announce it; the bands follow
    redis_client.hset(bus.names.active_model, mapping={"version": "v2", "path": str(packages["v2"])})
    bus.publish_event(
        Event(station=station_config.station.id, type=EventType.MODEL_RELOADED, message="v2 loaded", model_version="v2")
    )
    v2 = packages["v2_ref"]
    qtbot.waitUntil(lambda: view.drift.version == "v2", timeout=3000)
    qtbot.waitUntil(lambda: _region(view, "brightness") == pytest.approx((v2["p01"], v2["p99"])), timeout=2000)
    win.shutdown()
