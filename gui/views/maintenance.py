"""Maintenance view: drift charts against reference bands, alarms, camera/retrain actions, jobs, models.

Every action asks for confirmation and is signed by the person. Retraining, camera changes, approval,
promotion and rollback go through the view's job submitter (``gui.submitter``: RQ jobs run by the station's
jobs worker, audited there); reads go through ``gui.actions``; both on the DB worker thread.

The drift charts' bands are the active package's drift reference (``gui.state.DriftSeries``), read on the DB
worker thread (``actions.active_reference``) at start, on every MODEL_RELOADED event and whenever verdicts
of a model version not seen before arrive: the bands follow the active model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QListWidget,
    QMessageBox,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from gui import actions
from gui.services import Services
from gui.state import DRIFT_STATS, DRIFT_TITLES, DriftSeries, UserSession
from gui.state.rows import GATE_TABLE, JOBS_TABLE, JobBoard, ModelRow, models_table
from gui.submitter import JobSubmitter
from gui.tables import RowTableModel, selected_row, table_view
from gui.views.lineup import LineupPanel
from gui.workers import DbWorker
from inspector.contracts.config import StationConfig
from inspector.contracts.messages import Event, EventType, Verdict
from inspector.contracts.statuses import ModelStatus

ALARM_TYPES = {
    EventType.DRIFT_ALARM,
    EventType.CAMERA_HEALTH,
    EventType.MODEL_REFUSED,
    EventType.DEAD_LETTER,
    EventType.WORKER,
}
CONFIRM_MODEL_ACTION = {
    "approve": "Approve model {version} for promotion?",
    "promote": "Promote model {version} to the line? Workers reload it at once.",
    "rollback": "Roll back to the previously active model?",
}


class MaintenanceView(QWidget):
    def __init__(
        self,
        cfg: StationConfig,
        session: UserSession,
        services: Services,
        db: DbWorker,
        submitter: JobSubmitter,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.cfg, self.session, self.services, self.db, self.submitter = cfg, session, services, db, submitter
        self.drift = DriftSeries()
        self.jobs = JobBoard()
        self.jobs_model = RowTableModel(JOBS_TABLE, self)
        self.models_model = RowTableModel(models_table([]), self)
        self.gate_model = RowTableModel(GATE_TABLE, self)
        self._dirty = False
        self._reference_pending = False
        self._versions_seen: set[str | None] = set()
        self._build()
        self._timer = QTimer(self, interval=500, timeout=self._refresh_charts)
        self._timer.start()
        self.refresh_models()
        self.refresh_reference()

    # ------------------------------------------------------------------ drift reference
    def refresh_reference(self) -> None:
        """Load the active package's drift reference off the GUI thread; its bands replace the current ones."""
        if self._reference_pending:
            return
        self._reference_pending = True
        self.db.submit(
            lambda: actions.active_reference(self.cfg, self.services.store), self._set_reference, self._reference_failed
        )

    def _set_reference(self, active: actions.ActiveReference) -> None:
        self._reference_pending = False
        self.drift.set_reference(active.version, active.reference)
        self.band_note.setText(
            f"Bands: drift reference of {active.version} (1st–99th percentile)"
            if active.reference is not None
            else f"No reference bands: {active.note}"
        )
        self._dirty = True

    def _reference_failed(self, message: str) -> None:
        self._reference_pending = False
        self.band_note.setText(f"Could not read the drift reference: {message}")

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self._build_drift())
        split.addWidget(self._build_actions())
        split.setSizes([620, 640])
        root = QVBoxLayout(self)
        root.addWidget(split)

    def _build_drift(self) -> QWidget:
        pg.setConfigOptions(antialias=True, background="w", foreground="#334155")
        self.charts = pg.GraphicsLayoutWidget()
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.bands: dict[str, pg.LinearRegionItem] = {}
        for i, stat in enumerate(DRIFT_STATS):
            plot = self.charts.addPlot(row=i, col=0, title=DRIFT_TITLES[stat])
            plot.showGrid(y=True, alpha=0.2)
            plot.setMouseEnabled(x=False, y=False)
            band = pg.LinearRegionItem(
                orientation="horizontal",
                movable=False,
                brush=pg.mkBrush(34, 197, 94, 45),
                pen=pg.mkPen(34, 197, 94, 120),
            )
            band.setVisible(False)
            plot.addItem(band)
            self.bands[stat] = band
            self.curves[stat] = plot.plot(pen=pg.mkPen("#2563eb", width=2))
        self.band_note = QLabel("Bands: reading the active model's drift reference…")
        self.band_note.setStyleSheet("color:#64748b;")
        self.alarms = QListWidget()
        self.alarms.setMinimumHeight(90)
        left = QWidget()
        lv = QVBoxLayout(left)
        lv.addWidget(_heading("Drift — live statistics against reference bands"))
        lv.addWidget(self.band_note)
        lv.addWidget(self.charts, 1)
        lv.addWidget(_heading("Alarms"))
        lv.addWidget(self.alarms)
        return left

    def _build_actions(self) -> QWidget:
        self.camera_button = QPushButton("Camera or lighting changed…", clicked=self.camera_changed)
        self.retrain_button = QPushButton("Retrain now…", clicked=self.retrain)
        for b in (self.camera_button, self.retrain_button):
            b.setMinimumHeight(40)
            b.setStyleSheet("font-weight:bold;")
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.jobs_table = table_view(self.jobs_model)
        right = QWidget()
        rv = QVBoxLayout(right)
        rv.addWidget(_heading("Actions"))
        rv.addLayout(_row(self.camera_button, self.retrain_button))
        rv.addWidget(self.message)
        rv.addWidget(_heading("Jobs"))
        rv.addWidget(self.jobs_table, 1)
        self._build_models(rv)
        self.lineup = LineupPanel(self.cfg, self.session, self.services, self.db, self._selected_version, self._say)
        rv.addWidget(_heading("Line-up — product on the line, shadow candidate"))
        rv.addWidget(self.lineup, 1)
        return right

    def _build_models(self, rv: QVBoxLayout) -> None:
        self.models_table = table_view(self.models_model)
        self.models_table.selectionModel().selectionChanged.connect(self.show_gate)
        self.gate_table = table_view(self.gate_model)
        self.gate_note = QLabel("Select a model version to see its gate: every row, candidate beside incumbent.")
        self.gate_note.setWordWrap(True)
        self.gate: actions.GateView | None = None
        self.approve_button = QPushButton("Approve…", clicked=lambda: self.model_action("approve"))
        self.promote_button = QPushButton("Promote…", clicked=lambda: self.model_action("promote"))
        self.rollback_button = QPushButton("Roll back…", clicked=lambda: self.model_action("rollback"))
        self.approve_button.setEnabled(False)  # until the selected version's gate rows are on screen
        rv.addWidget(_heading("Model versions — held-out metrics"))
        rv.addWidget(self.models_table, 1)
        rv.addWidget(_heading("Gate of the selected version"))
        rv.addWidget(self.gate_note)
        rv.addWidget(self.gate_table, 1)
        rv.addLayout(_row(self.approve_button, self.promote_button, self.rollback_button))

    # ------------------------------------------------------------------ feed
    def on_verdicts(self, verdicts: list[Verdict]) -> None:
        new_versions = {v.model_version for v in verdicts} - self._versions_seen
        if new_versions:  # a model we have not seen serve: the active one may have changed
            self._versions_seen |= new_versions
            if self.drift.version not in new_versions:
                self.refresh_reference()
        for v in verdicts:
            for stat in self.drift.add(v):
                self._alarm(f"{DRIFT_TITLES[stat]} outside its reference band (part {v.part_id})")
        self._dirty = True

    def on_events(self, events: list[Event]) -> None:
        for e in events:
            if e.type is EventType.MODEL_RELOADED:
                self.refresh_reference()
            if e.type is EventType.JOB and self.jobs.update(e.data):
                self.jobs_model.set_rows(self.jobs.rows())
            elif e.type in ALARM_TYPES:
                self._alarm(f"[{e.severity}] {e.message}")

    def _alarm(self, text: str) -> None:
        self.alarms.insertItem(0, f"{time.strftime('%H:%M:%S')}  {text}")
        while self.alarms.count() > 200:
            self.alarms.takeItem(self.alarms.count() - 1)

    def _refresh_charts(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        for stat in DRIFT_STATS:
            self.curves[stat].setData(list(self.drift.values[stat]))
            band = self.drift.bands.get(stat)
            if band is not None:
                self.bands[stat].setRegion((band.low, band.high))
            self.bands[stat].setVisible(band is not None)

    # ------------------------------------------------------------------ dialogs (tests replace these)
    def confirm(self, title: str, text: str) -> bool:
        answer = QMessageBox.question(
            self,
            title,
            text,
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def ask_text(self, title: str, prompt: str) -> str | None:
        text, ok = QInputDialog.getText(self, title, prompt)
        return text.strip() if ok and text.strip() else None

    # ------------------------------------------------------------------ actions
    def camera_changed(self) -> None:
        self.session.require("camera.changed")
        note = self.ask_text("Camera or lighting changed", "What changed? (recorded in the audit trail)")
        if note is None or not self.confirm("Confirm", f"Record a camera/lighting change and recalibrate?\n\n{note}"):
            return
        # the bands stay those of the active model: the refit package, once active, brings the new reference
        actor = self.session.actor
        self._run(lambda: self.submitter.camera_changed(actor, note), "Camera change recorded; recalibration job {}.")

    def retrain(self) -> None:
        self.session.require("retrain")
        reason = self.ask_text("Retrain now", "Why retrain now? (recorded in the audit trail)")
        if reason is None or not self.confirm("Confirm retraining", f"Start a retraining job now?\n\n{reason}"):
            return
        actor = self.session.actor
        self._run(lambda: self.submitter.request_retrain(actor, reason), "Retraining job {} queued.")

    def model_action(self, kind: str) -> None:
        self.session.require(f"model.{kind}")
        version = self._selected_version()
        if kind != "rollback" and version is None:
            self.message.setText("Select a model version first.")
            return
        if not self.confirm("Confirm model change", CONFIRM_MODEL_ACTION[kind].format(version=version)):
            return
        actor, role, submitter = self.session.actor, self.session.role.value, self.submitter
        calls: dict[str, Callable[[], str]] = {
            "approve": lambda: submitter.approve_model(version or "", actor, role),
            "promote": lambda: submitter.promote_model(version or "", actor, role),
            "rollback": lambda: submitter.rollback_model(actor, role),
        }
        self._run(calls[kind], f"Model {kind} done ({{}}).", refresh=True)

    def _say(self, text: str, ok: bool) -> None:
        self.message.setText(text)
        self.message.setStyleSheet(f"color:{'#15803d' if ok else '#b91c1c'}; font-weight:bold;")

    def _run(self, fn: Callable[[], Any], ok_text: str, refresh: bool = False) -> None:
        def done(result: object) -> None:
            self._say(ok_text.format(result), True)
            if refresh:
                self.refresh_models()

        self.db.submit(fn, done, lambda msg: self._say(f"Failed: {msg}", False))

    # ------------------------------------------------------------------ models
    def refresh_models(self) -> None:
        self.db.submit(lambda: actions.list_models(self.services.store), self._show_models)

    def show_gate(self) -> None:
        """Load the selected version's gate rows off the GUI thread; Approve stays disabled until they are shown."""
        self.gate = None
        self.approve_button.setEnabled(False)
        version = self._selected_version()
        if version is None:
            return
        self.db.submit(
            lambda: actions.gate_of(self.services.store, version),
            self._show_gate,
            lambda msg: self.gate_note.setText(f"Could not read the gate: {msg}"),
        )

    def _show_gate(self, view: actions.GateView) -> None:
        if view.version != self._selected_version():
            return  # the selection moved on while the rows were read
        self.gate = view
        self.gate_model.set_rows(view.report.rows if view.report else [])
        if view.report is None:
            self.gate_note.setText(f"{view.version} ({view.status}): no gate ran — it cannot be approved or promoted.")
        else:
            verdict = "passed" if view.report.passed else f"FAILED ({len(view.report.failed)} rows)"
            self.gate_note.setText(
                f"{view.version} ({view.status}): gate {verdict} against incumbent "
                f"{view.report.incumbent_version or 'none'}, frame sets {view.report.frame_sets}."
            )
        self.approve_button.setEnabled(view.status == ModelStatus.GATED_PASS and self.session.can("model.approve"))

    def _selected_version(self) -> str | None:
        row: ModelRow | None = self.models_model.row(selected_row(self.models_table))
        return row.version if row is not None else None

    def _show_models(self, models: list[ModelRow]) -> None:
        """Show the versions; the selected one stays selected (its gate is read again: its status may have changed)."""
        selected = self._selected_version()
        self.models_model.set_rows(models, models_table(models))
        versions = [m.version for m in models]
        if selected in versions:
            self.models_table.selectRow(versions.index(selected))


def _heading(text: str) -> QLabel:
    label = QLabel(text)
    label.setStyleSheet("font-weight:bold; font-size:15px; margin-top:4px;")
    return label


def _row(*widgets: QWidget) -> QHBoxLayout:
    row = QHBoxLayout()
    for w in widgets:
        row.addWidget(w)
    return row
