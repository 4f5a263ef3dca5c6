"""Quality-engineer view: review queue by priority, the frame with model outputs, keyboard labelling, history.

Keys: 1..9 a defect class each, G good, U unsure, S skip, Z undo. The next item is leased in the same
background call that stores the label, so it appears at once; keys typed while a call runs are queued,
never lost or applied to the wrong item.
"""

from __future__ import annotations

import time
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from gui.render import compose, decision_colour, decode_frame
from gui.services import Services
from gui.state import LabellingSession, Loaded, Step, UserSession
from gui.state.labelling import load_next, perform
from gui.state.rows import HISTORY_TABLE, QUEUE_TABLE, HistoryRow, QueueRow
from gui.tables import RowTableModel, selected_row, table_view
from gui.widgets import ImageView
from gui.workers import DbWorker
from inspector.contracts.config import StationConfig

QUEUE_POLL_MS = 10_000  # the SQL poll of the queue: a fallback when no review notice arrived for this long
HISTORY_PERIODS = (("Last hour", 3600), ("Today", 86400), ("Last 7 days", 7 * 86400), ("All", 0))


class QualityView(QWidget):
    """Wires the widgets to the labelling session (``gui.state.LabellingSession``) and the queue/history models."""

    def __init__(
        self, cfg: StationConfig, session: UserSession, services: Services, db: DbWorker, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.cfg, self.session, self.services, self.db = cfg, session, services, db
        self.user = session.name
        self.labelling = LabellingSession(self.user, list(cfg.gui.defect_classes), cfg.policy.good_class)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.queue_model = RowTableModel(QUEUE_TABLE, self)
        self.history_model = RowTableModel(HISTORY_TABLE, self)
        self._build()
        self._queue_timer = QTimer(self, interval=QUEUE_POLL_MS, timeout=self.refresh_queue)
        self._queue_timer.start()
        self.load_next()
        self.refresh_queue()
        self.refresh_history()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        top = QSplitter(Qt.Orientation.Horizontal)
        top.addWidget(self._build_queue())
        top.addWidget(self._build_item())
        top.setSizes([470, 790])
        main = QSplitter(Qt.Orientation.Vertical)
        main.addWidget(top)
        main.addWidget(self._build_history())
        main.setSizes([560, 220])
        root = QVBoxLayout(self)
        root.addWidget(main)
        self._update_keys_help()

    def _build_queue(self) -> QWidget:
        self.queue = table_view(self.queue_model, keyboard=False)  # keys belong to labelling
        self.queue_title = QLabel("Review queue")
        self.queue_title.setStyleSheet("font-weight:bold; font-size:15px;")
        left = QWidget()
        lv = QVBoxLayout(left)
        lv.addWidget(self.queue_title)
        lv.addWidget(self.queue, 1)
        return left

    def _build_item(self) -> QWidget:
        self.image = ImageView(min_side=300)
        self.header = QLabel("Loading…")
        self.header.setStyleSheet("font-size:18px; font-weight:bold;")
        self.outputs = QLabel("")
        self.outputs.setTextFormat(Qt.TextFormat.RichText)
        self.outputs.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.keys_help = QLabel("")
        self.keys_help.setStyleSheet("background:#f1f5f9; border-radius:6px; padding:8px; font-size:14px;")
        self.progress_label = QLabel("")
        self.progress_label.setStyleSheet("font-size:14px; color:#334155;")
        self.message = QLabel("")
        info = QVBoxLayout()
        for label, stretch in (
            (self.header, 0),
            (self.outputs, 1),
            (self.keys_help, 0),
            (self.progress_label, 0),
            (self.message, 0),
        ):
            label.setWordWrap(True)
            info.addWidget(label, stretch)
        info_w = QWidget()
        info_w.setLayout(info)
        info_w.setFixedWidth(330)
        centre = QWidget()
        cv = QHBoxLayout(centre)
        cv.addWidget(self.image, 1)
        cv.addWidget(info_w)
        return centre

    def _build_history(self) -> QWidget:
        self.history = table_view(self.history_model)
        self.history.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.who = QComboBox()
        self.who.addItem(f"Mine ({self.user})", self.user)
        self.who.addItem("Everyone", None)
        self.who.currentIndexChanged.connect(self.refresh_history)
        self.label_filter = QLineEdit(placeholderText="label filter")
        self.label_filter.returnPressed.connect(self.refresh_history)
        self.since = QComboBox()
        for text, secs in HISTORY_PERIODS:
            self.since.addItem(text, secs)
        self.since.setCurrentIndex(1)
        self.since.currentIndexChanged.connect(self.refresh_history)
        self.relabel_to = QComboBox()
        self.relabel_button = QPushButton("Relabel selected", clicked=self.relabel_selected)
        bar = QHBoxLayout()
        for widget in (QLabel("<b>History</b>"), self.who, self.label_filter, self.since):
            bar.addWidget(widget)
        bar.addStretch(1)
        for widget in (QLabel("to"), self.relabel_to, self.relabel_button):
            bar.addWidget(widget)
        w = QWidget()
        v = QVBoxLayout(w)
        v.addLayout(bar)
        v.addWidget(self.history, 1)
        return w

    def _update_keys_help(self) -> None:
        self.keys_help.setText("Keys: " + " · ".join(f"<b>{k}</b> {name}" for k, name in self.labelling.key_legend()))
        current = self.relabel_to.currentText()
        self.relabel_to.clear()
        self.relabel_to.addItems(self.labelling.relabel_choices())
        if current:
            self.relabel_to.setCurrentText(current)

    # ------------------------------------------------------------------ keyboard
    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt override
        if not self.labelling.press(event.text()):
            super().keyPressEvent(event)
            return
        self._pump()

    def _pump(self) -> None:
        step = self.labelling.next_step()
        if step is None:
            if self.labelling.notice:
                self.message.setText(self.labelling.notice)
            return
        user, labelling = self.user, self.services.labelling
        self.db.submit(lambda: perform(step, labelling, user), lambda loaded: self._done(step, loaded), self._error)

    def load_next(self) -> None:
        step = self.labelling.start_loading()
        user = self.user
        self.db.submit(
            lambda: load_next(self.services.labelling, user), lambda loaded: self._done(step, loaded), self._error
        )

    def _done(self, step: Step, loaded: Loaded) -> None:
        if self.labelling.finished(step, loaded):
            self._update_keys_help()
        self._show(loaded)
        if step.kind is not None:
            self.refresh_history()
            self.refresh_queue()
        self._pump()

    def _error(self, message: str) -> None:
        self.labelling.failed()
        self.message.setText(f"<span style='color:#b91c1c'><b>Not saved:</b> {message}</span>")
        self.load_next()

    # ------------------------------------------------------------------ display
    def _show(self, loaded: Loaded) -> None:
        self.progress_label.setText(self.labelling.progress_text())
        item = loaded.item
        if item is None:
            self.header.setText("Queue empty — nothing to review")
            self.outputs.setText("")
            self.image.set_rgb(compose(None, None))
            return
        r, g, b = decision_colour(item.decision)
        self.header.setText(f"Part {item.part_id}  ·  priority {item.priority}")
        probs = sorted((item.class_probs or {}).items(), key=lambda kv: -kv[1])
        prob_rows = "".join(f"<tr><td>{k}</td><td align='right'>{p:.1%}</td></tr>" for k, p in probs)
        anomaly = "–" if item.anomaly_score is None else f"{item.anomaly_score:.2f} (1.00 = threshold)"
        reasons = "".join(f"<li>{x}</li>" for x in item.reasons)
        self.outputs.setText(
            f"<p><span style='background:rgb({r},{g},{b}); color:white; padding:2px 8px; font-size:18px;'>"
            f"<b>{item.decision}</b></span>&nbsp; {item.defect_class or ''}</p>"
            f"<p><b>Model</b> {item.model_version or '?'}<br><b>Anomaly</b> {anomaly}</p>"
            f"<table cellspacing='4'>{prob_rows}</table><p><b>Reasons</b></p><ul>{reasons}</ul>"
        )
        self.image.set_rgb(compose(decode_frame(loaded.image) if loaded.image else None, None))
        self.message.setText("")

    def refresh_queue(self) -> None:
        from inspector.review.open_queue import open_items

        labelling = self.services.labelling
        self.db.submit(lambda: [QueueRow.of(i) for i in open_items(labelling)], self._show_queue)

    def on_review_notice(self, count: int) -> None:
        """New review items announced on the review stream (``gui.workers.ReviewNotices``): refresh now, and
        push the fallback poll back by a full period."""
        self._queue_timer.start()
        self.refresh_queue()

    def _show_queue(self, rows: list[QueueRow]) -> None:
        self.queue_title.setText(f"Review queue — {len(rows)} open (by priority)")
        self.queue_model.set_rows(rows)

    # ------------------------------------------------------------------ history / relabel
    def refresh_history(self) -> None:
        user = self.who.currentData()
        label = self.label_filter.text().strip() or None
        secs = int(self.since.currentData() or 0)
        since = time.time() - secs if secs else None
        self.db.submit(
            lambda: [
                HistoryRow.of(r)
                for r in self.services.labelling.history(user=user, label=label, since=since, limit=200)
            ],
            self.history_model.set_rows,
        )

    def relabel_selected(self) -> None:
        self.session.require("relabel")
        row: Any = self.history_model.row(selected_row(self.history))
        if row is None:
            self.message.setText("Select a history row to relabel.")
            return
        frame_id, label = row.frame_id, self.relabel_to.currentText()
        self.db.submit(
            lambda: self.services.labelling.relabel(frame_id, self.user, label, note="relabel from GUI"),
            lambda _r: (self.message.setText(f"Frame {frame_id[:12]} relabelled as {label}."), self.refresh_history()),
            self._error,
        )
