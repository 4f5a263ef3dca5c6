"""Operator view: the live frame with its verdict, a big decision indicator, shift counters, line banner."""

from __future__ import annotations

import time
from collections import OrderedDict

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from gui.render import Overlay, compose, decode_frame
from gui.services import Services
from gui.state import LiveStatus, RateMeter, ShiftCounters, UserSession
from gui.widgets import BannerLabel, DecisionIndicator, ImageView, KeyValueGrid
from gui.workers import DbWorker, FrameItem
from inspector.contracts.messages import PartVerdict, Verdict
from inspector.line.health import Health

COUNTER_KEYS = ["Total", "Pass", "Fail", "Review", "Error", "Yield"]
PERF_KEYS = ["Frames/s", "Verdicts/s", "Latency ms", "Workers"]


class OperatorView(QWidget):
    def __init__(
        self,
        session: UserSession,
        services: Services,
        db: DbWorker,
        deadline_s: float,
        parent: QWidget | None = None,
        views: list[str] | None = None,
    ) -> None:
        super().__init__(parent)
        self.views = list(views or [])  # parts.views: the last part is shown with all its views, counted per part
        self.view_verdicts: OrderedDict[str, Verdict] = OrderedDict()
        self.last_part: PartVerdict | None = None
        self.session, self.services, self.db = session, services, db
        self.counters = ShiftCounters()
        self.status = LiveStatus(deadline_s)
        self.frame_rate, self.verdict_rate = RateMeter(), RateMeter()
        self.frames: OrderedDict[str, FrameItem] = OrderedDict()
        self.last_verdict: Verdict | None = None
        self.last_verdict_t = 0.0
        self.latest_frame: FrameItem | None = None
        self.shown_frame_id: str | None = None
        self._dirty = False
        self._build()
        self._timer = QTimer(self, interval=66, timeout=self._refresh)
        self._timer.start()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        self.banner = BannerLabel()
        side = QWidget()
        side.setLayout(self._build_side())
        side.setFixedWidth(340)
        body = QHBoxLayout()
        body.addLayout(self._build_images(), 1)
        body.addWidget(side)
        root = QVBoxLayout(self)
        root.addWidget(self.banner)
        root.addLayout(body, 1)

    def _build_images(self) -> QVBoxLayout:
        """The live frame, one small picture per view of a part (parts.views), the overlay toggles."""
        self.image = ImageView(min_side=360)
        self.heat_box = QCheckBox("Anomaly heatmap", checked=True, toggled=self._mark_dirty)
        self.region_box = QCheckBox("Defect regions", checked=True, toggled=self._mark_dirty)
        toggles = QHBoxLayout()
        toggles.addWidget(self.heat_box)
        toggles.addWidget(self.region_box)
        toggles.addStretch(1)
        left = QVBoxLayout()
        left.addWidget(self.image, 1)
        self.view_images: dict[str, ImageView] = {}
        self.view_labels: dict[str, QLabel] = {}
        if self.views:
            strip = QHBoxLayout()
            for view in self.views:
                box = QVBoxLayout()
                self.view_images[view] = ImageView(min_side=140)
                self.view_labels[view] = QLabel(f"{view}: –", alignment=Qt.AlignmentFlag.AlignCenter)
                self.view_labels[view].setStyleSheet("font-size: 14px; font-weight: bold;")
                box.addWidget(self.view_images[view], 1)
                box.addWidget(self.view_labels[view])
                strip.addLayout(box)
            left.addLayout(strip)
        left.addLayout(toggles)
        return left

    def _build_side(self) -> QVBoxLayout:
        """The decision indicator, the part, shift counters, performance, the wrong-verdict button."""
        self.indicator = DecisionIndicator()
        self.defect = QLabel("Defect: –", objectName="defect")
        self.defect.setStyleSheet("font-size: 22px; font-weight: bold;")
        self.part = QLabel("Part: –")
        self.part.setStyleSheet("font-size: 14px; color: #475569;")
        self.part.setWordWrap(True)
        if self.views:
            self.part.setMinimumHeight(self.part.fontMetrics().lineSpacing() * 3)  # part id, signal and the reasons
        self.counter_grid = KeyValueGrid(COUNTER_KEYS, point_size=16)
        self.counter_grid.set_rows(self.counters.rows())
        self.perf_grid = KeyValueGrid(PERF_KEYS, point_size=12)
        self.wrong = QPushButton("Wrong verdict → send to review", clicked=self.dispute)
        self.wrong.setMinimumHeight(48)
        self.wrong.setStyleSheet("font-size: 16px; font-weight: bold;")
        self.wrong.setEnabled(False)
        self.feedback = QLabel("")
        self.feedback.setWordWrap(True)
        right = QVBoxLayout()
        for widget in (self.indicator, self.defect, self.part):
            right.addWidget(widget)
        right.addSpacing(8)
        right.addWidget(_title("Shift"))
        right.addWidget(self.counter_grid)
        right.addSpacing(8)
        right.addWidget(_title("Performance"))
        right.addWidget(self.perf_grid)
        right.addStretch(1)
        right.addWidget(self.wrong)
        right.addWidget(self.feedback)
        return right

    # ------------------------------------------------------------------ feed slots
    def on_frames(self, items: list[FrameItem]) -> None:
        for item in items:
            self.frame_rate.tick()
            self.frames[item.meta.frame_id] = item
            self.latest_frame = item
        while len(self.frames) > 96:
            self.frames.popitem(last=False)
        self._dirty = True

    def on_verdicts(self, verdicts: list[Verdict]) -> None:
        for v in verdicts:
            if self.views:  # counted per part (on_parts); kept to draw the part's views
                self.view_verdicts[v.frame_id] = v
                while len(self.view_verdicts) > 200:
                    self.view_verdicts.popitem(last=False)
            else:
                self.counters.add(v.decision)
            self.status.on_verdict(v)
            self.verdict_rate.tick()
            self.last_verdict, self.last_verdict_t = v, time.monotonic()
        self._dirty = True

    def on_parts(self, parts: list[PartVerdict]) -> None:
        """The line's part verdicts (parts.views): the shift counts parts, the view shows the last one."""
        for p in parts:
            self.counters.add(p.decision)
            self.last_part = p
        self._dirty = True

    def on_health(self, health: Health) -> None:
        self.status.health = health
        self.perf_grid.set("Workers", str(health.workers))

    def on_connection(self, up: bool) -> None:
        self.status.connected = up
        self.banner.set_banner(self.status.banner())

    # ------------------------------------------------------------------ rendering
    def _mark_dirty(self, *_: object) -> None:
        self._dirty = True

    def _refresh(self) -> None:
        self.banner.set_banner(self.status.banner())
        self.perf_grid.set("Frames/s", f"{self.frame_rate.rate():.1f}")
        self.perf_grid.set("Verdicts/s", f"{self.verdict_rate.rate():.1f}")
        if not self._dirty:
            return
        self._dirty = False
        self._render()

    def _render(self) -> None:
        """The latest verdict drawn on its own frame; the newest raw frame when no fresh verdict has one."""
        v = self.last_verdict if time.monotonic() - self.last_verdict_t < 2.0 else None
        item = self.frames.get(v.frame_id) if v is not None else None
        if item is None:
            item, v = self.latest_frame, None
        overlay = Overlay(heatmap=self.heat_box.isChecked(), regions=self.region_box.isChecked())
        img = decode_frame(item.data) if item is not None else None
        self.image.set_rgb(compose(img, v, overlay))
        self.shown_frame_id = item.meta.frame_id if item is not None else None
        self._show_verdict(self.last_verdict)
        if self.views:
            self._show_part(self.last_part, overlay)

    def _show_part(self, p: PartVerdict | None, overlay: Overlay) -> None:
        """Every view of the last part, each drawn with its own verdict; the indicator shows the part's."""
        self.counter_grid.set_rows(self.counters.rows())
        if p is None:
            return
        for view in self.views:
            result = p.views.get(view)
            item = self.frames.get(result.frame_id) if result else None
            verdict = self.view_verdicts.get(result.frame_id) if result else None
            img = decode_frame(item.data) if item is not None else None
            self.view_images[view].set_rgb(compose(img, verdict, overlay, size=(240, 240)))
            text = (
                f"{view}: {result.decision.value}" + (f" · {result.defect_class}" if result.defect_class else "")
                if result
                else f"{view}: MISSING"
            )
            self.view_labels[view].setText(text)
        self.indicator.set_decision(p.decision.value)
        self.defect.setText(f"Defect: {p.defect_class or '–'}" + (f" ({p.failed_view})" if p.failed_view else ""))
        self.part.setText(f"Part {p.part_id} · {p.signal} ({p.reason})\n{'; '.join(p.reasons[:3])}")

    def _show_verdict(self, v: Verdict | None) -> None:
        self.counter_grid.set_rows(self.counters.rows())
        if v is None:
            return
        self.indicator.set_decision(v.decision.value)
        self.defect.setText(f"Defect: {v.defect_class or '–'}")
        reasons = "; ".join(v.reasons[:2])
        self.part.setText(f"Part {v.part_id} · seq {v.seq} · model {v.model_version or '?'}\n{reasons}")
        if v.latency_ms is not None:
            self.perf_grid.set("Latency ms", f"{v.latency_ms:.0f}")
        self.wrong.setEnabled(self.session.can("verdict.dispute"))

    # ------------------------------------------------------------------ actions
    def dispute(self) -> None:
        """The operator says the last verdict is wrong: it goes to the review queue, signed by them."""
        v = self.last_verdict
        if v is None:
            return
        self.session.require("verdict.dispute")
        item = self.frames.get(v.frame_id)
        reason = f"operator disputes {v.decision.value}" + (f" ({v.defect_class})" if v.defect_class else "")
        actor, frame_id = self.session.actor, v.frame_id
        image = item.data if item is not None else None

        encoding = "png" if image and image[:4] == b"\x89PNG" else "jpeg"

        def send() -> object:
            return self.services.labelling.request_review(
                frame_id, reason, actor, priority=90, image=image or None, encoding=encoding
            )

        self.wrong.setEnabled(False)
        self.feedback.setText("Sending to review…")
        self.db.submit(send, lambda _r: self._sent(v.part_id), self._failed)

    def _sent(self, part_id: str) -> None:
        self.feedback.setText(f"Part {part_id} sent to review by {self.session.name}.")
        self.feedback.setStyleSheet("color:#15803d; font-weight:bold;")

    def _failed(self, message: str) -> None:
        self.feedback.setText(f"Could not send to review: {message}")
        self.feedback.setStyleSheet("color:#b91c1c; font-weight:bold;")
        self.wrong.setEnabled(True)


def _title(text: str) -> QLabel:
    label = QLabel(text.upper())
    label.setStyleSheet("color:#64748b; font-size: 12px; font-weight: bold; letter-spacing: 1px;")
    label.setAlignment(Qt.AlignmentFlag.AlignLeft)
    return label
