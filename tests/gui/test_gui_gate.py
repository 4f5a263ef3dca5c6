"""Maintenance view: every gate row of the selected version is on screen, candidate beside incumbent, before
anyone can approve; a failed gate cannot be approved from the GUI; approval and promotion go through the registry."""

from __future__ import annotations

import shutil
import time

from pytestqt.qtbot import QtBot

from gui.app import MainWindow
from gui.services import Services
from gui.state import Role
from gui.submitter import RqJobSubmitter
from inspector.contracts.config import StationConfig
from inspector.contracts.lifecycle import GateReport, GateRow, ModelStatus
from inspector.runtime.package import load_package
from inspector.store import records
from jobs import registry
from tests.gui.conftest import run_requested_job, session


def _report(passed: bool) -> GateReport:
    rows = [
        GateRow(
            gate="false_reject_ceiling",
            metric="false_reject_rate",
            frame_set="heldout",
            candidate=0.01,
            incumbent=0.02,
            limit=0.02,
            passed=True,
        ),
        GateRow(
            gate="recall_floor",
            metric="recall:crack",
            frame_set="heldout",
            candidate=0.9 if passed else 0.4,
            incumbent=0.6,
            limit=0.7,
            passed=passed,
        ),
    ]
    return GateReport(
        passed=passed, rows=rows, incumbent_version="v1", frame_sets={"heldout": 150}, evaluated_at=time.time()
    )


def test_gate_rows_shown_before_approval(
    qtbot: QtBot, station_config: StationConfig, services: Services, redis_client, tiny_package, tmp_path, screenshot
) -> None:  # type: ignore[no-untyped-def]
    store = services.store
    for version, passed in (("v2-bad", False), ("v2-good", True)):
        shutil.copytree(tiny_package, tmp_path / version)
        registry.register_candidate(
            store,
            version,
            str(tmp_path / version),
            load_package(tmp_path / version).package_sha256,
            _report(passed),
            "job",
        )
    win = MainWindow(
        station_config, session(Role.MAINTENANCE, "Max Maint"), services, submitter=RqJobSubmitter(station_config)
    )
    qtbot.addWidget(win)
    win.resize(1280, 900)
    win.show()
    view = win.maintenance
    view.confirm = lambda title, text: True
    qtbot.waitUntil(lambda: view.models_model.rowCount() == 2, timeout=5000)
    assert not view.approve_button.isEnabled()

    view.models_table.selectRow([m.version for m in view.models_model.rows].index("v2-bad"))
    qtbot.waitUntil(lambda: view.gate is not None and view.gate.version == "v2-bad", timeout=5000)
    assert view.gate_model.rowCount() == 2
    cells = [[view.gate_model.cell(r, c) for c in range(7)] for r in range(2)]
    assert ["recall_floor", "recall:crack", "heldout", "0.400", "0.600", "0.700", "FAIL"] in cells
    assert "FAILED (1 rows)" in view.gate_note.text()
    assert not view.approve_button.isEnabled(), "a failed gate must not be approvable"
    view.promote_button.click()
    run_requested_job(qtbot, station_config, redis_client, 0)
    qtbot.waitUntil(lambda: "Failed" in view.message.text(), timeout=5000)
    assert "refused" in view.message.text() and records.active_model(store) is None

    view.models_table.selectRow([m.version for m in view.models_model.rows].index("v2-good"))
    qtbot.waitUntil(lambda: view.gate is not None and view.gate.version == "v2-good", timeout=5000)
    assert view.approve_button.isEnabled()
    screenshot(win, "maintenance_gate")
    view.approve_button.click()
    run_requested_job(qtbot, station_config, redis_client, 0)
    qtbot.waitUntil(lambda: "approve done" in view.message.text(), timeout=5000)
    assert registry.get_version(store, "v2-good").status == ModelStatus.APPROVED
    audit = [e for e in store.audit.entries(limit=10) if e.action == "model.approve"]
    assert audit and audit[0].actor == "Max Maint (maintenance)"
    view.models_table.selectRow([m.version for m in view.models_model.rows].index("v2-good"))
    view.promote_button.click()
    run_requested_job(qtbot, station_config, redis_client, 0)
    qtbot.waitUntil(lambda: "promote done" in view.message.text(), timeout=5000)
    assert records.active_model(store).version == "v2-good"
    win.shutdown()
