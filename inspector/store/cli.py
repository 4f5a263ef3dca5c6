"""CLI pieces wired into ``inspector`` by the lead: ``inspector audit verify|show``, ``inspector trace PART_ID``
and ``inspector review stats|next|label|export``. Each command takes ``--config`` (a station YAML;
unset: defaults plus ``INSPECTOR_*`` environment overrides)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from inspector.archive import Archive
from inspector.contracts.config import StationConfig, load_config
from inspector.contracts.errors import InspectorError
from inspector.contracts.lifecycle import Action
from inspector.review.labelling import LabelError, LabellingService
from inspector.store.db import Store, open_store
from inspector.store.models import LabelRow, ModelVersionRow, PartVerdictRow, VerdictRow


def _console() -> Console:
    return Console()  # made per call: honours the terminal width (and COLUMNS) of the moment

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Station YAML file.")]
UserOpt = Annotated[str | None, typer.Option("--user", "-u", help="Always you (the OS user or your token); another "
                                                               "name is refused and audited.")]

audit_app = typer.Typer(help="The hash-chained audit trail.", no_args_is_help=True)
review_app = typer.Typer(help="The review queue and labelling.", no_args_is_help=True)


def _open(config: Path | None) -> tuple[StationConfig, Store]:
    cfg = load_config(config)
    return cfg, open_store(cfg)


def _labeller(cfg: StationConfig, store: Store, action: Action, user: str | None, target: str = "") -> str:
    """The identity running this (it must hold a role that may ``action``); refusals are audited, exit 2."""
    from inspector.identity import IdentityRefused, authorize

    try:
        return authorize(cfg, store, action, None, user, target)[0].name
    except IdentityRefused as err:
        store.close()
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/bold red] {err.message}\n[yellow]hint:[/yellow] {err.hint}")
        raise typer.Exit(2) from None


def _service(cfg: StationConfig, store: Store, product: str | None = None) -> LabellingService:
    if product is not None and product not in cfg.products:
        raise InspectorError(f"product {product!r} is not configured: the station makes "
                             f"{', '.join(cfg.products) or 'one product (no products:)'}", "pass a configured --product")
    return LabellingService(store, Archive.for_data_dir(cfg.station.data_dir), cfg.review.lease_s, product=product)


ProductOpt = Annotated[str | None, typer.Option("--product", help="Only this product's items (its own review "
                                                                  "queue and training data).")]


@audit_app.command("verify")
def audit_verify(config: ConfigOpt = None) -> None:
    """Check every row's hash, HMAC and link, and the chain head against its anchors (database head record,
    Redis, signed file); one line per finding (edited row, rewritten chain, deleted tail, replaced database);
    exit 1 on any."""
    _, store = _open(config)
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
    _, store = _open(config)
    table = Table("seq", "time (UTC)", "actor", "action", "target", "old", "new")
    for e in store.audit.entries(limit):
        table.add_row(str(e.seq), _time(e.ts), e.actor, e.action, e.target, _short(e.old), _short(e.new))
    store.close()
    _console().print(table)


def trace(part_id: Annotated[str, typer.Argument(help="Part id to trace.")], config: ConfigOpt = None) -> None:
    """Every verdict of a part: decision, scores, model version and package hash, and any label."""
    _, store = _open(config)
    with store.session() as s:
        rows = s.execute(
            select(VerdictRow, ModelVersionRow.package_sha256, LabelRow.label, LabelRow.user)
            .outerjoin(ModelVersionRow, ModelVersionRow.version == VerdictRow.model_version)
            .outerjoin(LabelRow, (LabelRow.frame_id == VerdictRow.frame_id) & LabelRow.is_current.is_(True))
            .where(VerdictRow.part_id == part_id).order_by(VerdictRow.captured_at)
        ).all()
        part = s.scalars(select(PartVerdictRow).where(PartVerdictRow.part_id == part_id)).first()
    store.close()
    view_of = {r.get("frame_id"): view for view, r in (part.views if part else {}).items()}
    if not rows:
        _console().print(f"[yellow]no verdict recorded for part {part_id}[/yellow]")
        raise typer.Exit(1)
    table = Table("captured (UTC)", "camera", "view", "frame", "decision", "class", "probs", "anomaly", "model",
                  "package sha256", "latency ms", "label", title=f"part {part_id}")
    for v, sha, label, user in rows:
        table.add_row(_time(v.captured_at), v.camera, view_of.get(v.frame_id, ""), v.frame_id[:12], v.decision, v.defect_class or "",
                      _short(v.class_probs), _num(v.anomaly_score), v.model_version or "", (sha or "?")[:16],
                      _num(v.latency_ms), f"{label} ({user})" if label else "")
    _console().print(table)
    if part is not None:  # parts.views: the line's one verdict of the part, from every view
        failed = f", view {part.failed_view}" if part.failed_view else ""
        missing = f", missing view(s): {', '.join(part.missing)}" if part.missing else ""
        _console().print(f"part verdict: {part.decision} ({part.reason}{failed}{missing}) {'; '.join(part.reasons)}")


@review_app.command("stats")
def review_stats(config: ConfigOpt = None) -> None:
    """Pending, leased and labelled items, by priority."""
    cfg, store = _open(config)
    _console().print_json(json.dumps(_service(cfg, store).queue_stats(), default=str))
    store.close()


@review_app.command("next")
def review_next(user: UserOpt = None, config: ConfigOpt = None, product: ProductOpt = None) -> None:
    """Lease the next item to you and show it."""
    cfg, store = _open(config)
    user = _labeller(cfg, store, Action.LABEL, user, "review.next")
    item = _service(cfg, store, product).lease_next(user)
    store.close()
    if item is None:
        _console().print("queue empty")
        return
    image = Archive.for_data_dir(cfg.station.data_dir).path(item.image_sha256) if item.image_sha256 else None
    table = Table("field", "value", title=f"review item {item.id} (leased to {user})")
    for key in ("frame_id", "part_id", "camera", "priority", "reasons", "decision", "defect_class", "class_probs",
                "anomaly_score", "model_version"):
        table.add_row(key, _short(getattr(item, key)))
    table.add_row("image", str(image or "-"))
    _console().print(table)


@review_app.command("label")
def review_label(item: int, label: str, user: UserOpt = None,
                 note: Annotated[str | None, typer.Option()] = None, config: ConfigOpt = None) -> None:
    """Label ITEM (leased by you) as LABEL: good, unsure, or a defect class."""
    cfg, store = _open(config)
    user = _labeller(cfg, store, Action.LABEL, user, f"review item {item}")
    try:
        rec = _service(cfg, store).label(item, user, label, note)
    except LabelError as err:
        _console().print(f"[red]{err}[/red]")
        raise typer.Exit(1) from None
    finally:
        store.close()
    _console().print(f"labelled frame {rec.frame_id} as {rec.label} (label {rec.id})")


@review_app.command("export")
def review_export(out: Path, layout: Annotated[str, typer.Option(help="classification or anomaly")] = "classification",
                  config: ConfigOpt = None, product: ProductOpt = None) -> None:
    """Export labelled frames into OUT in the trainer's folder layout, as a hashed dataset version."""
    cfg, store = _open(config)
    _labeller(cfg, store, Action.EXPORT, None, str(out))
    try:
        dv = _service(cfg, store, product).export_dataset(out, layout)
    except LabelError as err:
        _console().print(f"[red]{err}[/red]")
        raise typer.Exit(1) from None
    finally:
        store.close()
    _console().print(f"dataset {dv.hash[:16]}… ({dv.files} images) in {dv.path}: {dv.counts}")


def _time(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _num(x: float | None) -> str:
    return "" if x is None else f"{x:.3f}"


def _short(value: object, width: int = 60) -> str:
    if isinstance(value, dict):
        text = ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items())
    else:
        text = "" if value is None else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


__all__ = ["audit_app", "review_app", "trace"]
