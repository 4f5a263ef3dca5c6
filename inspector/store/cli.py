"""The store's commands: ``inspector audit verify|show`` and ``inspector trace PART_ID`` (the review queue's
are beside the review code, ``inspector.review.cli``: the store imports no review code). Each command takes ``--config`` (a station YAML;
unset: defaults plus ``INSPECTOR_*`` environment overrides)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from inspector.contracts.config import StationConfig, load_config
from inspector.store.db import Store, open_store
from inspector.store.models import LabelRow, ModelVersionRow, PartVerdictRow, VerdictRow


def _console() -> Console:
    return Console()  # made per call: honours the terminal width (and COLUMNS) of the moment


ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Station YAML file.")]

audit_app = typer.Typer(help="The hash-chained audit trail.", no_args_is_help=True)


def open_config_store(config: Path | None) -> tuple[StationConfig, Store]:
    """The station config and its store (the caller closes the store)."""
    cfg = load_config(config)
    return cfg, open_store(cfg)


@audit_app.command("verify")
def audit_verify(config: ConfigOpt = None) -> None:
    """Check every row's hash, HMAC and link, and the chain head against its anchors (database head record,
    Redis, signed file); one line per finding (edited row, rewritten chain, deleted tail, replaced database);
    exit 1 on any."""
    _, store = open_config_store(config)
    try:
        report = store.audit.verify()
    finally:
        store.close()
    for note in report.notes:
        _console().print(f"[yellow]{note}[/yellow]", soft_wrap=True)
    for problem in report.problems:
        _console().print(f"[red]{problem}[/red]", soft_wrap=True)
    if not report.ok:
        _console().print(f"[bold red]audit trail tampered[/bold red]: {', '.join(sorted(report.kinds))}")
        raise typer.Exit(1)
    _console().print(f"[green]audit trail intact[/green]: {report.rows} rows, head {report.head[:16]}…")


@audit_app.command("show")
def audit_show(limit: Annotated[int, typer.Option(min=1, max=10_000)] = 20, config: ConfigOpt = None) -> None:
    """The newest audit rows."""
    _, store = open_config_store(config)
    table = Table("seq", "time (UTC)", "actor", "action", "target", "old", "new")
    for e in store.audit.entries(limit):
        table.add_row(str(e.seq), _time(e.ts), e.actor, e.action, e.target, short_text(e.old), short_text(e.new))
    store.close()
    _console().print(table)


def trace(part_id: Annotated[str, typer.Argument(help="Part id to trace.")], config: ConfigOpt = None) -> None:
    """Every verdict of a part: decision, scores, model version and package hash, and any label."""
    _, store = open_config_store(config)
    with store.session() as s:
        rows = s.execute(
            select(VerdictRow, ModelVersionRow.package_sha256, LabelRow.label, LabelRow.user)
            .outerjoin(ModelVersionRow, ModelVersionRow.version == VerdictRow.model_version)
            .outerjoin(LabelRow, (LabelRow.frame_id == VerdictRow.frame_id) & LabelRow.is_current.is_(True))
            .where(VerdictRow.part_id == part_id)
            .order_by(VerdictRow.captured_at)
        ).all()
        part = s.scalars(select(PartVerdictRow).where(PartVerdictRow.part_id == part_id)).first()
    store.close()
    view_of = {r.get("frame_id"): view for view, r in (part.views if part else {}).items()}
    if not rows:
        _console().print(f"[yellow]no verdict recorded for part {part_id}[/yellow]")
        raise typer.Exit(1)
    table = Table(
        "captured (UTC)",
        "camera",
        "view",
        "frame",
        "decision",
        "class",
        "probs",
        "anomaly",
        "model",
        "package sha256",
        "latency ms",
        "label",
        title=f"part {part_id}",
    )
    for v, sha, label, user in rows:
        table.add_row(
            _time(v.captured_at),
            v.camera,
            view_of.get(v.frame_id, ""),
            v.frame_id[:12],
            v.decision,
            v.defect_class or "",
            short_text(v.class_probs),
            _num(v.anomaly_score),
            v.model_version or "",
            (sha or "?")[:16],
            _num(v.latency_ms),
            f"{label} ({user})" if label else "",
        )
    _console().print(table)
    if part is not None:  # parts.views: the line's one verdict of the part, from every view
        failed = f", view {part.failed_view}" if part.failed_view else ""
        missing = f", missing view(s): {', '.join(part.missing)}" if part.missing else ""
        _console().print(f"part verdict: {part.decision} ({part.reason}{failed}{missing}) {'; '.join(part.reasons)}")


def _time(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _num(x: float | None) -> str:
    return "" if x is None else f"{x:.3f}"


def short_text(value: object, width: int = 60) -> str:
    """A value in one cell of a table: a dict as k=v pairs, cut to ``width`` characters."""
    if isinstance(value, dict):
        text = ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items())
    else:
        text = "" if value is None else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


__all__ = ["ConfigOpt", "audit_app", "open_config_store", "short_text", "trace"]
