"""The station GUI: role login, then the operator, quality-engineer and maintenance views.

``run_gui(cfg, role=None, demo=False)`` is the entry point (``inspector gui`` / ``inspector demo``; with ``demo`` it first
starts the demo's whole station, ``inspector.demo.start_demo_station``, and signs in on it).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from gui.services import Services
from gui.state import ROLE_TITLES, LoginError, Role, RolePolicy, UserSession
from gui.submitter import JobSubmitter, RqJobSubmitter
from gui.workers import CameraThread, DbWorker, LiveFeed, ReviewNotices
from inspector.contracts.config import StationConfig

log = logging.getLogger(__name__)

APP_STYLE = """
QWidget { font-size: 14px; }
QTabBar::tab { padding: 8px 18px; font-size: 15px; }
QPushButton { padding: 6px 14px; }
"""


class LoginDialog(QDialog):
    """Name, role and PIN; the PIN is checked against ``gui.<role>.pin_hash`` (salted scrypt)."""

    def __init__(self, policy: RolePolicy, role: Role | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Sign in — inspection station")
        self.policy = policy
        self.session: UserSession | None = None
        self.name = QLineEdit(placeholderText="your name")
        self.role = QComboBox()
        for r in Role:
            self.role.addItem(ROLE_TITLES[r], r.value)
        if role is not None:
            self.role.setCurrentIndex(list(Role).index(Role(role)))
        self.pin = QLineEdit(placeholderText="PIN", echoMode=QLineEdit.EchoMode.Password)
        self.error = QLabel("")
        self.error.setStyleSheet("color:#b91c1c; font-weight:bold;")
        form = QFormLayout()
        form.addRow("Name", self.name)
        form.addRow("Role", self.role)
        form.addRow("PIN", self.pin)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.try_login)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.error)
        layout.addWidget(buttons)

    def try_login(self) -> None:
        try:
            self.session = self.policy.login(self.name.text(), self.role.currentData(), self.pin.text())
        except LoginError as err:
            self.error.setText(str(err))
            self.pin.clear()
            return
        self.accept()


class MainWindow(QMainWindow):
    """Tabs for the views the signed-in role may use; one live feed and one DB worker shared by all; the job
    submitter (RQ by default) is handed to the maintenance view."""

    def __init__(
        self,
        cfg: StationConfig,
        session: UserSession,
        services: Services | None = None,
        start_feed: bool = True,
        submitter: JobSubmitter | None = None,
    ) -> None:
        super().__init__()
        self.cfg, self.session = cfg, session
        self.services = services or Services(cfg)
        self.submitter = submitter or RqJobSubmitter(cfg)
        self.setWindowTitle(f"Inspection station {cfg.station.id} — {session.actor}")
        self.resize(1280, 820)
        self.db = DbWorker(self)
        self.db.start()
        self.feed = LiveFeed(cfg, parent=self)
        self.review_notices = ReviewNotices(cfg, parent=self)  # read only while the quality view exists
        self.tabs = QTabWidget()
        self.views: dict[str, QWidget] = {}
        self._build_views()
        self.connection = QLabel("connecting…")
        self._wire_feed()
        top = QHBoxLayout()
        who = QLabel(
            f"Signed in: <b>{session.name}</b> — {ROLE_TITLES[session.role]} · station <b>{cfg.station.id}</b>"
        )
        top.addWidget(who, 1)
        top.addWidget(self.connection)
        central = QWidget()
        root = QVBoxLayout(central)
        root.addLayout(top)
        root.addWidget(self.tabs, 1)
        self.setCentralWidget(central)
        if start_feed:
            self.feed.start()
            if "quality" in self.views:
                self.review_notices.start()

    def _build_views(self) -> None:
        from gui.views.operator import OperatorView

        deadline = self.cfg.line.deadline_ms / 1000
        self.operator = OperatorView(self.session, self.services, self.db, deadline, views=self.cfg.parts.views)
        self._add("operator", "Operator", self.operator)
        if self.session.can("view.quality"):
            from gui.views.quality import QualityView

            self.quality = QualityView(self.cfg, self.session, self.services, self.db)
            self._add("quality", "Review && labelling", self.quality)
        if self.session.can("view.maintenance"):
            from gui.views.maintenance import MaintenanceView

            self.maintenance = MaintenanceView(self.cfg, self.session, self.services, self.db, self.submitter)
            self._add("maintenance", "Maintenance", self.maintenance)
        default = {Role.QUALITY: "quality", Role.MAINTENANCE: "maintenance"}.get(self.session.role, "operator")
        self.tabs.setCurrentWidget(self.views[default])

    def _add(self, key: str, title: str, view: QWidget) -> None:
        self.views[key] = view
        self.tabs.addTab(view, title)

    def _wire_feed(self) -> None:
        f, op = self.feed, self.operator
        f.frames.connect(op.on_frames)
        f.verdicts.connect(op.on_verdicts)
        f.parts.connect(op.on_parts)
        f.health.connect(op.on_health)
        f.connection.connect(op.on_connection)
        f.connection.connect(self._on_connection)
        if "quality" in self.views:
            self.review_notices.arrived.connect(self.quality.on_review_notice)
        if "maintenance" in self.views:
            f.verdicts.connect(self.maintenance.on_verdicts)
            f.events.connect(self.maintenance.on_events)

    def _on_connection(self, up: bool) -> None:
        self.connection.setText("● connected" if up else "● DISCONNECTED")
        self.connection.setStyleSheet(f"color: {'#15803d' if up else '#b91c1c'}; font-weight: bold;")

    def shutdown(self) -> None:
        self.feed.stop()
        self.review_notices.stop()
        self.db.stop()

    def closeEvent(self, event) -> None:  # type: ignore[no-untyped-def] # noqa: N802 - Qt override
        self.shutdown()
        super().closeEvent(event)


def run_gui(cfg: StationConfig, role: Role | str | None = None, demo: bool = False) -> int:
    """Open the GUI (login first); with ``demo`` or ``gui.camera_source`` it also runs the camera."""
    from inspector.bus.connection import resolve_url

    background: list[Any] = []
    if demo:  # the demo's whole station (inspector.demo.start_demo_station: supervisor, workers, line, PLC, camera)
        from rich.console import Console

        from inspector.demo import start_demo_station

        station = start_demo_station(cfg, console=Console(stderr=True))
        background.append(station)
        cfg = station.cfg
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setStyleSheet(APP_STYLE)
    resolve_url(cfg)  # start the embedded Redis now if this station uses one (the demo's supervisor owns it)
    from inspector.store.db import open_store

    policy = RolePolicy(cfg.gui, cfg.identity, open_store(cfg, lazy=True))  # wrong PINs counted and audited
    login = LoginDialog(policy, Role(role) if role else None)
    if login.exec() != QDialog.DialogCode.Accepted or login.session is None:
        for b in background:
            b.stop()
        return 1
    if cfg.gui.camera_source and not demo:  # the demo station streams its own camera
        camera = CameraThread(cfg)
        camera.start()
        background.append(camera)
    window = MainWindow(cfg, login.session)
    window.show()
    switch = QPushButton("Sign out")
    switch.clicked.connect(window.close)
    window.statusBar().addPermanentWidget(switch)
    code = app.exec()
    for b in background:
        b.stop()
    return int(code)
