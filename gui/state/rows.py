"""Typed rows of the GUI's tables and their columns, without Qt.

A table is a list of rows of one type and a :class:`TableSpec`: the columns (title and how a row reads in that
column) and how much a row stands out. ``gui.models.RowTableModel`` shows any of them; the views only hand it
rows. Rows are built from what the services return (review items, label records, job events, model versions,
gate rows), never from ORM objects.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, TypeVar

from inspector.contracts.lifecycle import GateRow
from inspector.contracts.statuses import ModelStatus, ReviewStatus

R = TypeVar("R")


class Emphasis(StrEnum):
    NORMAL = "normal"
    STRONG = "strong"  # drawn bold: the active model
    ALERT = "alert"  # drawn red: a failed gate row


@dataclass(frozen=True)
class Column(Generic[R]):
    title: str
    text: Callable[[R], str]
    progress: Callable[[R], float] | None = None  # 0..1: the cell is drawn as a progress bar


@dataclass(frozen=True)
class TableSpec(Generic[R]):
    columns: Sequence[Column[R]]
    emphasis: Callable[[R], Emphasis] = field(default=lambda _row: Emphasis.NORMAL)

    def cells(self, row: R) -> list[str]:
        return [c.text(row) for c in self.columns]


def _dash(x: str | None) -> str:
    return x or "–"


def _number(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


# --------------------------------------------------------------------------- review queue


@dataclass(frozen=True)
class QueueRow:
    item_id: int
    priority: int
    part_id: str
    decision: str
    defect_class: str | None
    status: str
    reasons: tuple[str, ...]

    @classmethod
    def of(cls, item: Any) -> QueueRow:
        """From a review item (``inspector.review.labelling.ReviewItemView``)."""
        return cls(
            item.id,
            item.priority,
            item.part_id,
            str(item.decision),
            item.defect_class,
            str(ReviewStatus(item.status)),
            tuple(item.reasons),
        )


QUEUE_TABLE: TableSpec[QueueRow] = TableSpec(
    [
        Column("Prio", lambda r: str(r.priority)),
        Column("Part", lambda r: r.part_id),
        Column("Decision", lambda r: r.decision),
        Column("Defect", lambda r: _dash(r.defect_class)),
        Column("Status", lambda r: r.status),
        Column("Reasons", lambda r: "; ".join(r.reasons)),
    ]
)


# --------------------------------------------------------------------------- label history


@dataclass(frozen=True)
class HistoryRow:
    frame_id: str
    label: str
    user: str
    created_at: float
    current: bool
    undone: bool
    note: str | None

    @classmethod
    def of(cls, record: Any) -> HistoryRow:
        """From a label record (``inspector.review.labelling.LabelRecord``)."""
        return cls(
            record.frame_id, record.label, record.user, record.created_at, record.current, record.undone, record.note
        )

    @property
    def state(self) -> str:
        return "undone" if self.undone else ("current" if self.current else "superseded")


HISTORY_TABLE: TableSpec[HistoryRow] = TableSpec(
    [
        Column("When", lambda r: time.strftime("%H:%M:%S", time.localtime(r.created_at))),
        Column("Frame", lambda r: r.frame_id[:12]),
        Column("Label", lambda r: r.label),
        Column("By", lambda r: r.user),
        Column("State", lambda r: r.state),
        Column("Note", lambda r: r.note or ""),
    ]
)


# --------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class JobRow:
    job_id: str
    kind: str = ""
    status: str = ""
    step: str = ""
    progress: float = 0.0
    requested_by: str = ""


class JobBoard:
    """The jobs the maintenance view has heard of, from ``job`` events (each event updates its job's fields)."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}

    def update(self, data: Mapping[str, Any]) -> bool:
        """Merge one job event's data; False when it names no job."""
        if "job_id" not in data:
            return False
        self.jobs.setdefault(str(data["job_id"]), {}).update(data)
        return True

    def rows(self) -> list[JobRow]:
        rows = []
        for job_id in sorted(self.jobs):
            job = self.jobs[job_id]
            rows.append(
                JobRow(
                    job_id,
                    str(job.get("kind", "")),
                    str(job.get("status", "")),
                    str(job.get("step", "")),
                    float(job.get("progress", 0.0) or 0.0),
                    str(job.get("requested_by", "")),
                )
            )
        return rows


JOBS_TABLE: TableSpec[JobRow] = TableSpec(
    [
        Column("Job", lambda r: r.job_id),
        Column("Kind", lambda r: r.kind),
        Column("Status", lambda r: r.status),
        Column("Step", lambda r: r.step),
        Column("Progress", lambda r: f"{100 * r.progress:.0f} %", progress=lambda r: r.progress),
        Column("By", lambda r: r.requested_by),
    ]
)


# --------------------------------------------------------------------------- model versions


@dataclass(frozen=True)
class ModelRow:
    version: str
    status: str
    created_at: float
    promoted_at: float | None
    metrics: Mapping[str, Any]

    @classmethod
    def of(cls, row: Any) -> ModelRow:
        """From a registry row (``inspector.store.models.ModelVersionRow``)."""
        return cls(row.version, str(row.status), row.created_at, row.promoted_at, dict(row.metrics or {}))

    @property
    def numeric_metrics(self) -> list[str]:
        return [k for k, v in self.metrics.items() if isinstance(v, int | float)]


def models_table(rows: Sequence[ModelRow]) -> TableSpec[ModelRow]:
    """Version, status, created, then one column per numeric held-out metric any version has; active in bold."""
    keys = sorted({k for m in rows for k in m.numeric_metrics})

    def metric(key: str) -> Column[ModelRow]:
        return Column(key, lambda r: f"{r.metrics[key]:.3f}" if key in r.metrics else "–")

    columns = [
        Column[ModelRow]("Version", lambda r: r.version),
        Column("Status", lambda r: r.status),
        Column("Created", lambda r: time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created_at))),
        *(metric(k) for k in keys),
    ]
    return TableSpec(columns, lambda r: Emphasis.STRONG if r.status == ModelStatus.ACTIVE else Emphasis.NORMAL)


# --------------------------------------------------------------------------- gate rows

GATE_TABLE: TableSpec[GateRow] = TableSpec(
    [
        Column("Gate", lambda r: r.gate),
        Column("Metric", lambda r: r.metric),
        Column("Frames", lambda r: r.frame_set),
        Column("Candidate", lambda r: _number(r.candidate)),
        Column("Incumbent", lambda r: _number(r.incumbent)),
        Column("Limit", lambda r: _number(r.limit)),
        Column("Result", lambda r: "PASS" if r.passed else "FAIL"),
    ],
    lambda r: Emphasis.NORMAL if r.passed else Emphasis.ALERT,
)


# --------------------------------------------------------------------------- shadow report

SHADOW_REPORT_LINES = (
    "frames judged in shadow",
    "compared with the active verdict",
    "same decision",
    "same line outcome",
    "frames that differ",
    "candidate model time p50 / p99 (ms)",
    "active capture→decision p50 / p99 (ms)",
)


@dataclass(frozen=True)
class ReportLine:
    name: str
    value: str = ""


def shadow_report_lines(rep: Any | None) -> list[ReportLine]:
    """The shadow report (``inspector.store.shadow.ShadowReport``) line by line; None: the names, no values yet."""
    if rep is None:
        return [ReportLine(name) for name in SHADOW_REPORT_LINES]

    def pct(x: float | None) -> str:
        return "–" if x is None else f"{100 * x:.2f} %"

    def pair(d: Mapping[str, float]) -> str:
        return f"{d['p50']} / {d['p99']}" if d.get("p50") is not None else "–"

    values = [
        str(rep.judged),
        str(rep.compared),
        pct(rep.decision_agreement),
        pct(rep.line_agreement),
        str(rep.differing),
        pair(rep.candidate_infer_ms),
        pair(rep.active_latency_ms),
    ]
    return [ReportLine(name, value) for name, value in zip(SHADOW_REPORT_LINES, values, strict=True)]


SHADOW_REPORT_TABLE: TableSpec[ReportLine] = TableSpec(
    [Column("", lambda r: r.name), Column("value", lambda r: r.value)]
)
SHADOW_DIFFERENCES_TABLE: TableSpec[Any] = TableSpec(
    [  # rows: inspector.store.shadow.Difference
        Column("Part", lambda d: d.part_id),
        Column("Active", lambda d: f"{d.active_decision} {d.active_class or ''}".strip()),
        Column("Candidate", lambda d: f"{d.shadow_decision} {d.shadow_class or ''}".strip()),
    ]
)
