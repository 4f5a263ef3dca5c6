"""Maintenance view: actions reach the jobs adapter and the audit trail, signed by the person; drift charts."""

from __future__ import annotations

import shutil

import redis
from pytestqt.qtbot import QtBot

from gui import actions
from gui.app import MainWindow
from gui.services import Services
from gui.state import Role
from inspector.bus.streams import StationBus
from inspector.contracts.config import StationConfig
from inspector.contracts.lifecycle import ModelStatus
from inspector.contracts.messages import Decision
from inspector.runtime.package import load_package
from inspector.store import records
from jobs.queues import station_queue
from tests.gui.conftest import give_drift_reference, publish_part, session


def test_maintenance_actions_reach_jobs_and_audit(qtbot: QtBot, station_config: StationConfig,
                                                  redis_client: redis.Redis, services: Services,
                                                  screenshot, monkeypatch, tiny_package, tmp_path) -> None:  # type: ignore[no-untyped-def]
    submitted: list[actions.JobRequest] = []
    default = actions.JOB_SUBMITTER[0]

    def recorder(cfg: StationConfig, job: actions.JobRequest) -> str:
        submitted.append(job)
        return default(cfg, job)  # still announce it on the events stream (the jobs table shows it)

    actions.set_job_submitter(recorder)
    monkeypatch.setattr(actions, "JOB_SUBMITTER", actions.JOB_SUBMITTER)  # restored below
    store = services.store
    for version, metrics in (("v1", {"accuracy": 0.962, "f1_macro": 0.941, "fr_rate": 0.012}),
                             ("v2", {"accuracy": 0.975, "f1_macro": 0.958, "fr_rate": 0.009})):
        shutil.copytree(tiny_package, tmp_path / version)
        give_drift_reference(tmp_path / version, [110.0 + i % 20 for i in range(200)])
        records.register_model(store, version, str(tmp_path / version),
                               load_package(tmp_path / version).package_sha256, metrics,
                               status=ModelStatus.APPROVED)  # its gate passed and it was approved
    records.promote_model(store, "v1", "setup")

    win = MainWindow(station_config, session(Role.MAINTENANCE, "Max Maint"), services)
    qtbot.addWidget(win)
    win.resize(1280, 860)
    win.show()
    view = win.maintenance
    view.confirm = lambda title, text: True  # the confirmation dialogs, answered yes
    view.ask_text = lambda title, prompt: "new LED bar fitted"
    qtbot.waitUntil(lambda: win.operator.status.connected, timeout=5000)

    bus = StationBus(redis_client, station_config)
    for seq in range(70):
        publish_part(bus, seq, Decision.PASS if seq % 9 else Decision.FAIL, None if seq % 9 else "scratch")
    qtbot.waitUntil(lambda: len(view.drift.values["brightness"]) == 70, timeout=3000)
    qtbot.waitUntil(lambda: view.bands["brightness"].isVisible(), timeout=2000)

    view.retrain_button.click()
    qtbot.waitUntil(lambda: "queued" in view.message.text(), timeout=5000)
    view.camera_button.click()
    qtbot.waitUntil(lambda: "recorded" in view.message.text(), timeout=5000)
    assert [j.kind for j in submitted] == ["retrain"]  # the camera change starts a collection, not a job
    assert all(j.requested_by == "Max Maint (maintenance)" for j in submitted)
    assert station_queue(station_config, redis_client).count == 1, "the retrain job waits on the RQ queue"
    qtbot.waitUntil(lambda: len(view.jobs) >= 1, timeout=3000)

    qtbot.waitUntil(lambda: view.models_table.rowCount() == 2, timeout=3000)
    row = [m.version for m in view.models].index("v2")
    view.models_table.selectRow(row)
    view.promote_button.click()
    qtbot.waitUntil(lambda: "promote done" in view.message.text(), timeout=5000)
    assert records.active_model(store).version == "v2"
    assert redis_client.hget(bus.names.active_model, "version") == b"v2", "workers are told to hot-reload v2"
    view.rollback_button.click()
    qtbot.waitUntil(lambda: "rollback done" in view.message.text(), timeout=5000)
    assert records.active_model(store).version == "v1"

    audit = {e.action: e for e in reversed(store.audit.entries(limit=20))}  # newest wins
    for action in ("retrain.request", "maintenance.camera_changed", "model.promote", "model.rollback"):
        assert audit[action].actor == "Max Maint (maintenance)", action
    assert audit["maintenance.camera_changed"].new["note"] == "new LED bar fitted"
    assert redis_client.hget(bus.names.active_model, "version") == b"v1"
    qtbot.wait(600)  # one chart refresh
    screenshot(win, "maintenance")
    win.shutdown()
    actions.set_job_submitter(default)
