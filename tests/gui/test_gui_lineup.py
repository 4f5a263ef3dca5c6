"""Maintenance view, line-up panel: changeover to another product and shadow mode for the selected version,
through the same product and shadow functions as the CLI (audited, registry-backed); the operator cannot."""

from __future__ import annotations

import shutil
import time

from pytestqt.qtbot import QtBot

from gui.app import MainWindow
from gui.services import Services
from gui.state import Role, UserSession
from inspector.bus.connection import client_for_url
from inspector.contracts.config import StationConfig, parse_config
from inspector.contracts.lifecycle import GateReport, ModelStatus
from inspector.contracts.names import Names
from inspector.products import current_product
from inspector.runtime.package import load_package
from inspector.store.records import register_model
from inspector.store.shadow import record_shadow_verdicts
from tests.gui.conftest import session


def test_changeover_and_shadow_from_the_maintenance_view(
    qtbot: QtBot, station_config: StationConfig, tiny_package, tmp_path, screenshot
) -> None:  # type: ignore[no-untyped-def]
    doc = station_config.model_dump(mode="json", exclude_none=True)
    doc["products"] = {"bracket": {"package": str(tiny_package)}, "housing": {"package": str(tiny_package)}}
    cfg = parse_config(doc, environ={})
    from inspector.store import open_store

    services = Services(cfg, store=open_store(cfg))
    shutil.copytree(tiny_package, tmp_path / "cand")
    sha = load_package(tmp_path / "cand").package_sha256
    gate = GateReport(passed=True, rows=[], evaluated_at=time.time()).model_dump(mode="json")
    register_model(services.store, "cand-2", str(tmp_path / "cand"), sha, {"gate": gate}, "job", ModelStatus.GATED_PASS)
    record_shadow_verdicts(
        services.store,
        [
            {
                "version": "cand-2",
                "frame_id": f"f{i}",
                "part_id": f"P{i}",
                "camera": "cam0",
                "captured_at": time.time(),
                "decided_at": time.time(),
                "decision": "PASS",
                "reject": False,
                "infer_ms": 4.0,
                "latency_ms": 30.0,
            }
            for i in range(3)
        ],
    )
    win = MainWindow(cfg, session(Role.MAINTENANCE, "Max Maint"), services)
    qtbot.addWidget(win)
    win.resize(1280, 1000)
    win.show()
    try:
        _drive(qtbot, win, cfg, services, screenshot)
    finally:
        win.close()
        services.store.close()


def _drive(qtbot, win, cfg, services, screenshot) -> None:  # type: ignore[no-untyped-def]
    view = win.maintenance
    panel = view.lineup
    panel.confirm = lambda title, text: True
    qtbot.waitUntil(lambda: "bracket" in panel.product_label.text(), timeout=5000)
    panel.products.setCurrentText("housing")
    panel.change_button.click()
    client = client_for_url(cfg.redis.url or "", cfg.redis)
    qtbot.waitUntil(lambda: current_product(client, cfg) == "housing", timeout=5000)
    qtbot.waitUntil(lambda: "housing" in panel.product_label.text(), timeout=5000)
    rows = services.store.audit.entries(limit=5, action="product.switch")
    assert rows and rows[0].actor == "Max Maint (maintenance)" and rows[0].details["source"] == "gui"

    qtbot.waitUntil(lambda: view.models_model.rowCount() == 1, timeout=5000)
    view.models_table.selectRow(0)
    panel.shadow_button.click()
    names = Names(cfg.redis.prefix, cfg.station.id)
    qtbot.waitUntil(lambda: client.hget(names.shadow_model, "version") == b"cand-2", timeout=5000)
    panel.report_button.click()
    qtbot.waitUntil(lambda: panel.last_report is not None, timeout=5000)
    assert panel.report_model.cell(0, 1) == "3"  # judged in shadow (no active verdicts to compare with yet)
    screenshot(win, "maintenance-lineup")


def test_the_operator_cannot_change_over_or_shadow() -> None:
    user = UserSession("Op", Role.OPERATOR)
    assert not user.can("product.switch") and not user.can("model.shadow")
    assert UserSession("Max", Role.MAINTENANCE).can("product.switch")
