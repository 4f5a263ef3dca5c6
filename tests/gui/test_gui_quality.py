"""Quality-engineer view: ten items labelled by keyboard are stored; undo; history and relabel."""

from __future__ import annotations

import redis
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from gui.app import MainWindow
from gui.services import Services
from gui.state import Role
from inspector.bus.streams import StationBus
from inspector.contracts.config import StationConfig
from tests.gui.conftest import queue_items, session

KEYS = ["1", "2", "3", "g", "u", "1", "g", "2", "g", "3"]
EXPECTED = ["scratch", "spot", "chip", "good", "unsure", "scratch", "good", "spot", "good", "chip"]


def test_label_ten_items_by_keyboard(
    qtbot: QtBot, station_config: StationConfig, redis_client: redis.Redis, services: Services, screenshot
) -> None:  # type: ignore[no-untyped-def]
    bus = StationBus(redis_client, station_config)
    frame_ids = queue_items(bus, services, 10)
    win = MainWindow(station_config, session(Role.QUALITY, "Quinn Quality"), services, start_feed=False)
    qtbot.addWidget(win)
    win.resize(1280, 820)
    win.show()
    view = win.quality
    labelling = view.labelling
    qtbot.waitUntil(lambda: labelling.item is not None and not labelling.busy, timeout=5000)
    assert labelling.item.priority == 59  # highest priority first
    qtbot.waitUntil(lambda: view.queue_model.rowCount() == 10, timeout=3000)
    assert [view.queue_model.cell(r, 0) for r in range(3)] == ["59", "58", "57"]
    screenshot(win, "quality_review_queue")

    seen = []
    for i, key in enumerate(KEYS):
        seen.append(labelling.item.frame_id)
        qtbot.keyClick(view, key)
        qtbot.waitUntil(lambda i=i: labelling.progress.labelled == i + 1 and not labelling.busy, timeout=3000)
    assert labelling.item is None and "Queue empty" in view.header.text()
    assert sorted(seen) == sorted(frame_ids)

    history = services.labelling.history(user="Quinn Quality")
    assert len(history) == 10
    by_frame = {r.frame_id: r.label for r in history if r.current}
    assert [by_frame[f] for f in seen] == EXPECTED
    assert services.labelling.queue_stats()["labelled"] == 10

    # Z undoes the last label: that item comes back at once, and G labels it again
    qtbot.keyClick(view, Qt.Key.Key_Z)
    qtbot.waitUntil(lambda: labelling.progress.undone == 1 and not labelling.busy, timeout=3000)
    assert labelling.item is not None and labelling.item.frame_id == seen[-1]
    qtbot.keyClick(view, "g")
    qtbot.waitUntil(lambda: labelling.progress.labelled == 11 and not labelling.busy, timeout=3000)
    assert services.labelling.current_label(seen[-1]).label == "good"

    # audit trail is signed by the labeller
    entries = services.store.audit.entries(limit=50, action="label")
    assert entries and all(e.actor == "Quinn Quality" for e in entries)

    # history with filters, then relabel the selected row
    view.who.setCurrentIndex(1)
    view.label_filter.setText("good")
    view.refresh_history()
    qtbot.waitUntil(lambda: view.history_model.rowCount() == 4, timeout=3000)
    view.history.selectRow(0)
    view.relabel_to.setCurrentText("chip")
    view.relabel_button.click()
    qtbot.waitUntil(lambda: "relabelled as chip" in view.message.text(), timeout=3000)
    assert services.labelling.current_label(view.history_model.row(0).frame_id).label == "chip"
    view.label_filter.setText("")
    view.refresh_history()
    qtbot.waitUntil(lambda: view.history_model.rowCount() >= 12, timeout=3000)
    screenshot(win, "quality_after_labelling")
    win.shutdown()
