"""One table model over typed rows: cells, headers, emphasis and progress as the table spec reads them."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor

from gui.state.rows import GATE_TABLE, JOBS_TABLE, JobBoard, ModelRow, models_table
from gui.tables import PROGRESS_ROLE, RowTableModel, selected_row, table_view
from inspector.contracts.lifecycle import GateRow


def test_rows_columns_and_emphasis(qapp: object) -> None:
    models = [
        ModelRow("v1", "retired", time.time(), None, {"accuracy": 0.9}),
        ModelRow("v2", "active", time.time(), time.time(), {"accuracy": 0.95, "fr_rate": 0.01, "note": "x"}),
    ]
    model = RowTableModel(models_table([]))
    assert model.rowCount() == 0 and model.columnCount() == 3
    model.set_rows(models, models_table(models))
    headers = [model.headerData(c, Qt.Orientation.Horizontal) for c in range(model.columnCount())]
    assert headers == ["Version", "Status", "Created", "accuracy", "fr_rate"], "one column per numeric metric"
    assert [model.cell(r, 3) for r in range(2)] == ["0.900", "0.950"] and model.cell(0, 4) == "–"
    assert model.data(model.index(1, 0), Qt.ItemDataRole.FontRole).bold(), "the active version is bold"
    assert model.data(model.index(0, 0), Qt.ItemDataRole.FontRole) is None
    assert model.row(1) is models[1] and model.row(2) is None and model.row(-1) is None

    gate = RowTableModel(GATE_TABLE)
    gate.set_rows(
        [
            GateRow(
                gate="recall_floor",
                metric="recall:crack",
                frame_set="heldout",
                candidate=0.4,
                incumbent=0.6,
                limit=0.7,
                passed=False,
            )
        ]
    )
    assert [gate.cell(0, c) for c in range(7)] == [
        "recall_floor",
        "recall:crack",
        "heldout",
        "0.400",
        "0.600",
        "0.700",
        "FAIL",
    ]
    assert gate.data(gate.index(0, 6), Qt.ItemDataRole.ForegroundRole) == QColor("#b91c1c"), "a failed row is red"

    board = JobBoard()
    assert not board.update({"status": "queued"}), "an event without a job id names no job"
    board.update({"job_id": "retrain-1", "kind": "retrain", "status": "queued", "requested_by": "Max"})
    board.update({"job_id": "retrain-1", "status": "running", "step": "train", "progress": 0.45})
    jobs = RowTableModel(JOBS_TABLE)
    jobs.set_rows(board.rows())
    assert [jobs.cell(0, c) for c in range(6)] == ["retrain-1", "retrain", "running", "train", "45 %", "Max"]
    assert jobs.data(jobs.index(0, 4), PROGRESS_ROLE) == 0.45 and jobs.data(jobs.index(0, 3), PROGRESS_ROLE) is None

    view = table_view(model)
    assert selected_row(view) == -1
    view.selectRow(1)
    assert selected_row(view) == 1 and model.row(selected_row(view)).version == "v2"
    view.grab()  # paints every cell (the progress delegate too) without error
    table_view(jobs).grab()
