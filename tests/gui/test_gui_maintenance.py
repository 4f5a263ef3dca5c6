"""Maintenance view: actions reach the jobs adapter and the audit trail, signed by the person; drift charts."""

from __future__ import annotations

import shutil

import redis
from pytestqt.qtbot import QtBot

from gui.app import MainWindow
from gui.services import Services
from gui.state import Role
from gui.submitter import RqJobSubmitter
from inspector.bus.streams import StationBus
from inspector.contracts.config import StationConfig
from inspector.contracts.jobqueue import CAMERA_CHANGED_FUNC, REQUEST_RETRAIN_FUNC
from inspector.contracts.lifecycle import ModelStatus
from inspector.contracts.messages import Decision
from inspector.runtime.package import load_package
from inspector.store import records
from jobs.queues import station_queue
from tests.gui.conftest import give_drift_reference, publish_part, run_requested_job, session


def test_maintenance_actions_reach_jobs_and_audit(
    qtbot: QtBot,
    station_config: StationConfig,
    redis_client: redis.Redis,
    services: Services,
    screenshot,
    tiny_package,
    tmp_path,
) -> None:  # type: ignore[no-untyped-def]
    """Every action is an RQ job of the station's queue, named by dotted path and signed by the person; the
    station's jobs worker runs it (in-process here), so retraining waits on the queue and promotion is audited."""
    store = services.store
    for version, metrics in (
        ("v1", {"accuracy": 0.962, "f1_macro": 0.941, "fr_rate": 0.012}),
        ("v2", {"accuracy": 0.975, "f1_macro": 0.958, "fr_rate": 0.009}),
    ):
        shutil.copytree(tiny_package, tmp_path / version)
        give_drift_reference(tmp_path / version, [110.0 + i % 20 for i in range(200)])
        records.register_model(
            store,
            version,
            str(tmp_path / version),
            load_package(tmp_path / version).package_sha256,
            metrics,
            status=ModelStatus.APPROVED,
        )  # its gate passed and it was approved
    records.promote_model(store, "v1", "setup")

    win = MainWindow(
        station_config, session(Role.MAINTENANCE, "Max Maint"), services, submitter=RqJobSubmitter(station_config)
    )
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

    queue = station_queue(station_config, redis_client)
    view.retrain_button.click()
    qtbot.waitUntil(lambda: queue.count == 1, timeout=5000)
    request = queue.jobs[0]
    assert request.func_name == REQUEST_RETRAIN_FUNC == "jobs.requested.request_retrain"
    assert request.args == [station_config.station.id, "Max Maint (maintenance)", "new LED bar fitted"]
    run_requested_job(qtbot, station_config, redis_client, 0)
    qtbot.waitUntil(lambda: "queued" in view.message.text(), timeout=5000)
    assert [j.func_name for j in queue.jobs] == ["jobs.pipeline.retrain"], "the retrain job waits on the RQ queue"
    assert queue.jobs[0].id in view.message.text()
    qtbot.waitUntil(lambda: view.jobs_model.rowCount() >= 1, timeout=3000)
    assert view.jobs_model.cell(0, 0) == queue.jobs[0].id and view.jobs_model.cell(0, 5) == "Max Maint (maintenance)"

    view.camera_button.click()
    qtbot.waitUntil(lambda: queue.jobs[0].func_name == CAMERA_CHANGED_FUNC, timeout=5000)  # before the retraining
    run_requested_job(qtbot, station_config, redis_client, 1)
    qtbot.waitUntil(lambda: "recorded" in view.message.text(), timeout=5000)

    qtbot.waitUntil(lambda: view.models_model.rowCount() == 2, timeout=3000)
    row = [m.version for m in view.models_model.rows].index("v2")
    view.models_table.selectRow(row)
    view.promote_button.click()
    run_requested_job(qtbot, station_config, redis_client, 1)
    qtbot.waitUntil(lambda: "promote done" in view.message.text(), timeout=5000)
    assert records.active_model(store).version == "v2"
    assert redis_client.hget(bus.names.active_model, "version") == b"v2", "workers are told to hot-reload v2"
    view.rollback_button.click()
    run_requested_job(qtbot, station_config, redis_client, 1)
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
