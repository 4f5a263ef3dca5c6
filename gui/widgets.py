"""Small reusable Qt widgets: image view, big decision indicator, banner, key/value grid."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QFont, QFontMetrics, QImage, QPixmap
from PySide6.QtWidgets import QGridLayout, QLabel, QSizePolicy, QWidget

from gui.render import COLOURS
from gui.state import Banner

BANNER_STYLE = {
    "ok": "background:#14532d; color:#dcfce7;",
    "warn": "background:#a16207; color:#fefce8;",
    "critical": "background:#b91c1c; color:#ffffff;",
}


def rgb_to_pixmap(img: np.ndarray) -> QPixmap:
    img = np.ascontiguousarray(img[..., :3], dtype=np.uint8)
    h, w = img.shape[:2]
    qimg = QImage(img.data, w, h, 3 * w, QImage.Format.Format_RGB888)
    return QPixmap.fromImage(qimg.copy())


class ImageView(QLabel):
    """Shows an RGB array scaled to fit, keeping its aspect ratio."""

    def __init__(self, parent: QWidget | None = None, min_side: int = 320) -> None:
        super().__init__(parent)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setMinimumSize(min_side, min_side)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setStyleSheet("background:#0f172a; border-radius:6px;")
        self._pixmap: QPixmap | None = None

    def set_rgb(self, img: np.ndarray) -> None:
        self._pixmap = rgb_to_pixmap(img)
        self._rescale()

    def resizeEvent(self, event) -> None:  # type: ignore[no-untyped-def] # noqa: N802 - Qt override
        super().resizeEvent(event)
        self._rescale()

    def _rescale(self) -> None:
        if self._pixmap is not None:
            self.setPixmap(
                self._pixmap.scaled(
                    self.size(), Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
                )
            )


class DecisionIndicator(QLabel):
    """PASS / FAIL / REVIEW / ERROR in letters big enough to read from two metres."""

    def __init__(self, parent: QWidget | None = None, point_size: int = 56) -> None:
        super().__init__("—", parent)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.max_point_size = point_size
        self.setMinimumHeight(int(point_size * 2.4))
        self.set_decision(None)

    def set_decision(self, decision: str | None) -> None:
        key = decision or "NONE"
        r, g, b = COLOURS.get(key, COLOURS["NONE"])
        self.setText(decision or "WAITING")
        self.setStyleSheet(f"background: rgb({r},{g},{b}); color: white; border-radius: 10px; padding: 6px;")
        self.setProperty("decision", key)
        self._fit()

    def resizeEvent(self, event) -> None:  # type: ignore[no-untyped-def] # noqa: N802 - Qt override
        super().resizeEvent(event)
        self._fit()

    def _fit(self) -> None:
        """The largest bold font (up to max_point_size) at which the word fits the box."""
        font = QFont()
        font.setBold(True)
        size = self.max_point_size
        while size > 12:
            font.setPointSize(size)
            if QFontMetrics(font).horizontalAdvance(self.text()) <= self.width() - 28:
                break
            size -= 2
        self.setFont(font)


class BannerLabel(QLabel):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        font = QFont()
        font.setPointSize(20)
        font.setBold(True)
        self.setFont(font)
        self.setMinimumHeight(56)
        self.setWordWrap(True)
        self.banner = Banner("Connecting…", "warn")
        self.set_banner(self.banner)

    def set_banner(self, banner: Banner) -> None:
        self.banner = banner
        self.setText(banner.text)
        self.setStyleSheet(BANNER_STYLE[banner.level] + " border-radius: 6px; padding: 6px;")


class KeyValueGrid(QWidget):
    """A two-column grid of labelled values, updated by key."""

    def __init__(self, keys: list[str], parent: QWidget | None = None, point_size: int = 15) -> None:
        super().__init__(parent)
        layout = QGridLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setHorizontalSpacing(18)
        self.values: dict[str, QLabel] = {}
        font = QFont()
        font.setPointSize(point_size)
        bold = QFont(font)
        bold.setBold(True)
        for i, key in enumerate(keys):
            name = QLabel(key)
            name.setFont(font)
            value = QLabel("–")
            value.setFont(bold)
            value.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            layout.addWidget(name, i, 0)
            layout.addWidget(value, i, 1)
            self.values[key] = value

    def set(self, key: str, text: str) -> None:
        self.values[key].setText(text)

    def set_rows(self, rows: list[tuple[str, str]]) -> None:
        for k, v in rows:
            if k in self.values:
                self.set(k, v)
