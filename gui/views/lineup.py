"""The maintenance view's panel for what runs on the line: the product (changeover) and a shadow candidate.

Changeover switches the product whose model judges the frames from the next one on; shadow mode judges live
frames with the selected model version beside the active one (never on the line) and shows how they agree,
the parts where they differ and the candidate's latency, read from the store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtWidgets import QComboBox, QHBoxLayout, QHeaderView, QLabel, QPushButton, QVBoxLayout, QWidget

from gui import actions
from gui.services import Services
from gui.state import UserSession
from gui.state.rows import SHADOW_DIFFERENCES_TABLE, SHADOW_REPORT_TABLE, shadow_report_lines
from gui.tables import RowTableModel, table_view
from gui.workers import DbWorker
from inspector.contracts.config import StationConfig


class LineupPanel(QWidget):
    def __init__(
        self,
        cfg: StationConfig,
        session: UserSession,
        services: Services,
        db: DbWorker,
        selected_version: Callable[[], str | None],
        say: Callable[[str, bool], None],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.cfg, self.session, self.services, self.db = cfg, session, services, db
        self.selected_version, self.say = selected_version, say
        self.product_label = QLabel("Product: this station makes one product" if not cfg.products else "Product: …")
        self.products = QComboBox()
        self.products.addItems(list(cfg.products))
        self.change_button = QPushButton("Change over…", clicked=self.change_over)
        for w in (self.products, self.change_button):
            w.setVisible(bool(cfg.products))
        self.change_button.setEnabled(session.can("product.switch"))
        self.shadow_button = QPushButton("Shadow selected version…", clicked=self.shadow_selected)
        self.shadow_button.setEnabled(session.can("model.shadow"))
        self.report_button = QPushButton("Shadow report of selected", clicked=self.refresh_report)
        self.report_model = RowTableModel(SHADOW_REPORT_TABLE, self)
        self.report_model.set_rows(shadow_report_lines(None))
        self.differences_model = RowTableModel(SHADOW_DIFFERENCES_TABLE, self)
        self.report, self.differences = table_view(self.report_model), table_view(self.differences_model)
        for table in (self.report, self.differences):
            table.setMinimumHeight(200)
        self.report.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        self.report.setColumnWidth(0, 215)  # the value column takes the rest
        self.last_report: Any = None

        root = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(self.product_label, 1)
        row.addWidget(self.products)
        row.addWidget(self.change_button)
        root.addLayout(row)
        row = QHBoxLayout()
        row.addWidget(self.shadow_button)
        row.addWidget(self.report_button)
        root.addLayout(row)
        body = QHBoxLayout()
        body.addWidget(self.report, 1)
        body.addWidget(self.differences, 1)
        root.addLayout(body)
        self.refresh_product()

    def confirm(self, title: str, text: str) -> bool:  # replaced in tests
        from PySide6.QtWidgets import QMessageBox

        return QMessageBox.question(self, title, text) == QMessageBox.StandardButton.Yes

    # ------------------------------------------------------------------ product
    def refresh_product(self) -> None:
        if self.cfg.products:
            self.db.submit(
                lambda: actions.line_product(self.cfg),
                self._show_product,
                lambda msg: self.product_label.setText(f"Product: unknown ({msg})"),
            )

    def _show_product(self, product: str | None) -> None:
        self.product_label.setText(f"Product on the line: {product}")
        if product is not None:
            self.products.setCurrentText(product)

    def change_over(self) -> None:
        self.session.require("product.switch")
        product = self.products.currentText()
        if not self.confirm(
            "Confirm changeover",
            f"Change the line over to {product}? Its model judges the frames from the next one on.",
        ):
            return
        self.db.submit(
            lambda: actions.change_over(
                self.cfg, self.services.store, self.session.actor, product, self.session.role.value
            ),
            lambda text: (self.say(f"Changeover: {text}.", True), self.refresh_product()),
            lambda msg: self.say(f"Changeover failed: {msg}", False),
        )

    # ------------------------------------------------------------------ shadow
    def shadow_selected(self) -> None:
        self.session.require("model.shadow")
        version = self.selected_version()
        if version is None:
            self.say("Select a model version first.", False)
            return
        if not self.confirm(
            "Confirm shadow mode",
            f"Judge live frames with {version} in shadow? Its verdicts are stored, never sent to the line.",
        ):
            return
        self.db.submit(
            lambda: actions.start_shadow(
                self.cfg, self.services.store, self.session.actor, version, self.session.role.value
            ),
            lambda v: self.say(f"{v} judges live frames in shadow.", True),
            lambda msg: self.say(f"Shadow mode refused: {msg}", False),
        )

    def refresh_report(self) -> None:
        version = self.selected_version()
        if version is None:
            self.say("Select a model version first.", False)
            return
        self.db.submit(
            lambda: actions.shadow_report(self.services.store, version),
            self._show_report,
            lambda msg: self.say(f"Could not read the shadow report: {msg}", False),
        )

    def _show_report(self, rep: Any) -> None:
        self.last_report = rep
        self.report_model.set_rows(shadow_report_lines(rep))
        self.differences_model.set_rows(rep.differences)
