"""One Qt table model over a list of typed rows (``gui.state.rows``), reused by every table of the views.

:class:`RowTableModel` shows rows of one type through a :class:`~gui.state.rows.TableSpec` (columns, emphasis);
:func:`table_view` is the read-only, row-selecting view the station uses; a column with a ``progress`` reader
is drawn as a progress bar by :class:`ProgressDelegate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QColor, QFont, QPainter
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QHeaderView,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionProgressBar,
    QStyleOptionViewItem,
    QTableView,
    QWidget,
)

from gui.state.rows import Emphasis, TableSpec

ALERT_COLOUR = "#b91c1c"
PROGRESS_ROLE = Qt.ItemDataRole.UserRole + 1  # 0..1 of a progress column, None elsewhere

Index = QModelIndex | QPersistentModelIndex


class RowTableModel(QAbstractTableModel):
    """Rows of one type, shown column by column as the table spec reads them."""

    def __init__(self, spec: TableSpec[Any], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.spec = spec
        self._rows: list[Any] = []

    @property
    def rows(self) -> list[Any]:
        return list(self._rows)

    def row(self, i: int) -> Any:
        """The row at ``i``, or None outside the table."""
        return self._rows[i] if 0 <= i < len(self._rows) else None

    def set_rows(self, rows: Sequence[Any], spec: TableSpec[Any] | None = None) -> None:
        """Show ``rows`` (and a new spec, when the columns depend on the rows)."""
        self.beginResetModel()
        self._rows = list(rows)
        if spec is not None:
            self.spec = spec
        self.endResetModel()

    def cell(self, row: int, column: int) -> str:
        return self.spec.columns[column].text(self._rows[row])

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: N802, B008 - Qt override
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: N802, B008 - Qt override
        return 0 if parent.isValid() else len(self.spec.columns)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self._rows):
            return None
        row, column = self._rows[index.row()], self.spec.columns[index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            return column.text(row)
        if role == PROGRESS_ROLE:
            return None if column.progress is None else column.progress(row)
        emphasis = self.spec.emphasis(row)
        if role == Qt.ItemDataRole.FontRole and emphasis is Emphasis.STRONG:
            font = QFont()
            font.setBold(True)
            return font
        if role == Qt.ItemDataRole.ForegroundRole and emphasis is Emphasis.ALERT:
            return QColor(ALERT_COLOUR)
        return None

    def headerData(
        self,
        section: int,
        orientation: Qt.Orientation,  # noqa: N802 - Qt override
        role: int = Qt.ItemDataRole.DisplayRole,
    ) -> Any:
        if (
            role == Qt.ItemDataRole.DisplayRole
            and orientation == Qt.Orientation.Horizontal
            and 0 <= section < len(self.spec.columns)
        ):
            return self.spec.columns[section].title
        return None


class ProgressDelegate(QStyledItemDelegate):
    """Draws a cell whose column has a progress reader as a progress bar."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: Index) -> None:
        value = index.data(PROGRESS_ROLE)
        if value is None:
            super().paint(painter, option, index)
            return
        bar = QStyleOptionProgressBar()
        bar.rect = option.rect.adjusted(2, 2, -2, -2)
        bar.minimum, bar.maximum = 0, 100
        bar.progress = int(100 * float(value))
        bar.text = f"{bar.progress} %"
        bar.textVisible = True
        style = option.widget.style() if option.widget is not None else QApplication.style()
        style.drawControl(QStyle.ControlElement.CE_ProgressBar, bar, painter)


def table_view(model: RowTableModel, keyboard: bool = True) -> QTableView:
    """A read-only table selecting whole rows, one at a time; ``keyboard`` False leaves keys to the view."""
    view = QTableView()
    view.setModel(model)
    view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    if not keyboard:
        view.setFocusPolicy(Qt.FocusPolicy.NoFocus)
    view.verticalHeader().setVisible(False)
    view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    view.horizontalHeader().setStretchLastSection(True)
    if any(c.progress is not None for c in model.spec.columns):
        view.setItemDelegate(ProgressDelegate(view))
    return view


def selected_row(view: QTableView) -> int:
    """The current row of ``view`` (-1: none)."""
    index = view.currentIndex()
    return index.row() if index.isValid() else -1
