"""Quality-engineer view: review queue by priority, the frame with model outputs, keyboard labelling, history.

Keys: 1..9 a defect class each, G good, U unsure, S skip, Z undo. The next item is leased in the same
background call that stores the label, so it appears at once; keys typed while a call runs are queued,
never lost or applied to the wrong item.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from gui.render import compose, decision_colour, decode_frame
from gui.services import Services, open_review_queue
from gui.state import GOOD_LABEL, UNSURE_LABEL, KeyAction, LabelProgress, UserSession, defect_classes_for, label_keymap
from gui.widgets import ImageView
from gui.workers import DbWorker
from inspector.contracts.config import StationConfig

QUEUE_COLUMNS = ["Prio", "Part", "Decision", "Defect", "Status", "Reasons"]
HISTORY_COLUMNS = ["When", "Frame", "Label", "By", "State", "Note"]


def _table(columns: list[str]) -> QTableWidget:
    t = QTableWidget(0, len(columns))
    t.setHorizontalHeaderLabels(columns)
    t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    t.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # keys belong to labelling
    t.verticalHeader().setVisible(False)
    t.horizontalHeader().setStretchLastSection(True)
    t.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    return t


def _fill(table: QTableWidget, rows: list[list[str]]) -> None:
    table.setRowCount(len(rows))
    for r, row in enumerate(rows):
        for c, text in enumerate(row):
            table.setItem(r, c, QTableWidgetItem(text))


class QualityView(QWidget):
    def __init__(self, cfg: StationConfig, session: UserSession, services: Services, db: DbWorker,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.cfg, self.session, self.services, self.db = cfg, session, services, db
        self.user = session.name
        self.item: Any = None
        self.classes = list(cfg.gui.defect_classes)
        self.keymap = label_keymap(self.classes)
        self.progress = LabelProgress()
        self.keys: deque[KeyAction] = deque()
        self.busy = False
        self.remaining: int | None = None
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self._build()
        self._queue_timer = QTimer(self, interval=2000, timeout=self.refresh_queue)
        self._queue_timer.start()
        self.load_next()
        self.refresh_queue()
        self.refresh_history()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        self.queue = _table(QUEUE_COLUMNS)
        self.queue_title = QLabel("Review queue")
        self.queue_title.setStyleSheet("font-weight:bold; font-size:15px;")
        left = QWidget()
        lv = QVBoxLayout(left)
        lv.addWidget(self.queue_title)
        lv.addWidget(self.queue, 1)

        self.image = ImageView(min_side=300)
        self.header = QLabel("Loading…")
        self.header.setStyleSheet("font-size:18px; font-weight:bold;")
        self.header.setWordWrap(True)
        self.outputs = QLabel("")
        self.outputs.setWordWrap(True)
        self.outputs.setTextFormat(Qt.TextFormat.RichText)
        self.outputs.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.keys_help = QLabel("")
        self.keys_help.setWordWrap(True)
        self.keys_help.setStyleSheet("background:#f1f5f9; border-radius:6px; padding:8px; font-size:14px;")
        self.progress_label = QLabel("")
        self.progress_label.setStyleSheet("font-size:14px; color:#334155;")
        self.progress_label.setWordWrap(True)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        info = QVBoxLayout()
        info.addWidget(self.header)
        info.addWidget(self.outputs, 1)
        info.addWidget(self.keys_help)
        info.addWidget(self.progress_label)
        info.addWidget(self.message)
        info_w = QWidget()
        info_w.setLayout(info)
        info_w.setFixedWidth(330)
        centre = QWidget()
        cv = QHBoxLayout(centre)
        cv.addWidget(self.image, 1)
        cv.addWidget(info_w)

        top = QSplitter(Qt.Orientation.Horizontal)
        top.addWidget(left)
        top.addWidget(centre)
        top.setSizes([470, 790])
        main = QSplitter(Qt.Orientation.Vertical)
        main.addWidget(top)
        main.addWidget(self._build_history())
        main.setSizes([560, 220])
        root = QVBoxLayout(self)
        root.addWidget(main)
        self._update_keys_help()

    def _build_history(self) -> QWidget:
        self.history = _table(HISTORY_COLUMNS)
        self.history.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.who = QComboBox()
        self.who.addItem(f"Mine ({self.user})", self.user)
        self.who.addItem("Everyone", None)
        self.who.currentIndexChanged.connect(self.refresh_history)
        self.label_filter = QLineEdit(placeholderText="label filter")
        self.label_filter.returnPressed.connect(self.refresh_history)
        self.since = QComboBox()
        for text, secs in (("Last hour", 3600), ("Today", 86400), ("Last 7 days", 7 * 86400), ("All", 0)):
            self.since.addItem(text, secs)
        self.since.setCurrentIndex(1)
        self.since.currentIndexChanged.connect(self.refresh_history)
        self.relabel_to = QComboBox()
        self.relabel_button = QPushButton("Relabel selected", clicked=self.relabel_selected)
        bar = QHBoxLayout()
        bar.addWidget(QLabel("<b>History</b>"))
        bar.addWidget(self.who)
        bar.addWidget(self.label_filter)
        bar.addWidget(self.since)
        bar.addStretch(1)
        bar.addWidget(QLabel("to"))
        bar.addWidget(self.relabel_to)
        bar.addWidget(self.relabel_button)
        w = QWidget()
        v = QVBoxLayout(w)
        v.addLayout(bar)
        v.addWidget(self.history, 1)
        self._history_rows: list[Any] = []
        return w

    def _update_keys_help(self) -> None:
        parts = [f"<b>{i + 1}</b> {c}" for i, c in enumerate(self.classes[:9])]
        parts += ["<b>G</b> good", "<b>U</b> unsure", "<b>S</b> skip", "<b>Z</b> undo"]
        self.keys_help.setText("Keys: " + " · ".join(parts))
        current = self.relabel_to.currentText()
        self.relabel_to.clear()
        self.relabel_to.addItems([*self.classes, GOOD_LABEL, UNSURE_LABEL])
        if current:
            self.relabel_to.setCurrentText(current)

    # ------------------------------------------------------------------ keyboard
    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt override
        action = self.keymap.get(event.text().upper()) if event.text() else None
        if action is None:
            super().keyPressEvent(event)
            return
        self.keys.append(action)
        self._pump()

    def _pump(self) -> None:
        if self.busy or not self.keys:
            return
        action = self.keys.popleft()
        if action.kind == "undo":
            self._run(self._undo_job(), "undone")
        elif self.item is None:
            self.keys.clear()
            self.message.setText("Nothing to label: the queue is empty.")
        elif action.kind == "skip":
            self._run(self._skip_job(self.item.id), "skipped")
        else:
            self._run(self._label_job(self.item.id, action.label or ""), "labelled")

    # ------------------------------------------------------------------ background jobs
    def _next_job(self) -> tuple[Any, bytes | None, int]:
        svc = self.services.labelling
        item = svc.lease_next(self.user)
        image = None
        if item is not None and item.image_sha256:
            try:
                image = svc.image(item)
            except Exception:  # noqa: BLE001 - show the item without its picture
                image = None
        stats = svc.queue_stats()
        return item, image, int(stats.get("pending", 0))

    def _label_job(self, item_id: int, label: str):  # type: ignore[no-untyped-def]
        def job() -> tuple[Any, bytes | None, int]:
            self.services.labelling.label(item_id, self.user, label)
            return self._next_job()
        return job

    def _skip_job(self, item_id: int):  # type: ignore[no-untyped-def]
        def job() -> tuple[Any, bytes | None, int]:
            self.services.labelling.skip(item_id, self.user)
            return self._next_job()
        return job

    def _undo_job(self):  # type: ignore[no-untyped-def]
        def job() -> tuple[Any, bytes | None, int]:
            self.services.labelling.undo_last(self.user)
            return self._next_job()
        return job

    def _run(self, job: Any, counted: str) -> None:
        self.busy = True

        def done(result: tuple[Any, bytes | None, int]) -> None:
            setattr(self.progress, counted, getattr(self.progress, counted) + 1)
            self._show(result)
            self.refresh_history()
            self.refresh_queue()

        self.db.submit(job, done, self._error)

    def load_next(self) -> None:
        self.busy = True
        self.db.submit(self._next_job, self._show, self._error)

    def _error(self, message: str) -> None:
        self.busy = False
        self.keys.clear()
        self.message.setText(f"<span style='color:#b91c1c'><b>Not saved:</b> {message}</span>")
        self.load_next()

    # ------------------------------------------------------------------ display
    def _show(self, result: tuple[Any, bytes | None, int]) -> None:
        item, image, remaining = result
        self.item, self.remaining, self.busy = item, remaining, False
        self.progress_label.setText(f"Labeller <b>{self.user}</b> · {self.progress.text(remaining)}")
        if item is None:
            self.header.setText("Queue empty — nothing to review")
            self.outputs.setText("")
            self.image.set_rgb(compose(None, None))
        else:
            self._show_item(item, image)
        self._pump()

    def _show_item(self, item: Any, image: bytes | None) -> None:
        if not self.cfg.gui.defect_classes:
            found = defect_classes_for([], item.class_probs, self.cfg.policy.good_class)
            if found and found != self.classes:
                self.classes = found
                self.keymap = label_keymap(found)
                self._update_keys_help()
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
            f"<table cellspacing='4'>{prob_rows}</table><p><b>Reasons</b></p><ul>{reasons}</ul>")
        self.image.set_rgb(compose(decode_frame(image) if image else None, None))
        self.message.setText("")

    def refresh_queue(self) -> None:
        self.db.submit(lambda: open_review_queue(self.services.store), self._show_queue)

    def _show_queue(self, rows: list[Any]) -> None:
        self.queue_title.setText(f"Review queue — {len(rows)} open (by priority)")
        _fill(self.queue, [[str(r.priority), r.part_id, r.decision, r.defect_class or "–",
                            "leased" if r.status == "leased" else r.status, "; ".join(r.reasons)]
                           for r in rows])

    # ------------------------------------------------------------------ history / relabel
    def refresh_history(self) -> None:
        user = self.who.currentData()
        label = self.label_filter.text().strip() or None
        secs = int(self.since.currentData() or 0)
        since = time.time() - secs if secs else None
        self.db.submit(lambda: self.services.labelling.history(user=user, label=label, since=since, limit=200),
                       self._show_history)

    def _show_history(self, rows: list[Any]) -> None:
        self._history_rows = rows
        _fill(self.history, [[time.strftime("%H:%M:%S", time.localtime(r.created_at)), r.frame_id[:12], r.label,
                              r.user, "undone" if r.undone else ("current" if r.current else "superseded"),
                              r.note or ""] for r in rows])

    def relabel_selected(self) -> None:
        self.session.require("relabel")
        row = self.history.currentRow()
        if row < 0 or row >= len(self._history_rows):
            self.message.setText("Select a history row to relabel.")
            return
        frame_id, label = self._history_rows[row].frame_id, self.relabel_to.currentText()
        self.db.submit(lambda: self.services.labelling.relabel(frame_id, self.user, label, note="relabel from GUI"),
                       lambda _r: (self.message.setText(f"Frame {frame_id[:12]} relabelled as {label}."),
                                   self.refresh_history()),
                       self._error)
