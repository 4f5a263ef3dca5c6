"""``inspector review``: the review queue and labelling from the command line (stats, next, label, export)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from inspector.archive import Archive
from inspector.contracts.config import StationConfig
from inspector.contracts.errors import InspectorError
from inspector.contracts.lifecycle import Action
from inspector.review.labelling import LabelError, LabellingService
from inspector.store.cli import ConfigOpt, open_config_store, short_text
from inspector.store.db import Store


def _console() -> Console:
    return Console()  # made per call: honours the terminal width (and COLUMNS) of the moment


UserOpt = Annotated[
    str | None,
    typer.Option("--user", "-u", help="Always you (the OS user or your token); another name is refused and audited."),
]

review_app = typer.Typer(help="The review queue and labelling.", no_args_is_help=True)


def _labeller(cfg: StationConfig, store: Store, action: Action, user: str | None, target: str = "") -> str:
    """The identity running this (it must hold a role that may ``action``); refusals are audited, exit 2."""
    from inspector.identity import IdentityRefused, authorize

    try:
        return authorize(cfg, store, action, None, user, target)[0].name
    except IdentityRefused as err:
        store.close()
        Console(stderr=True, soft_wrap=True).print(
            f"[bold red]error:[/bold red] {err.message}\n[yellow]hint:[/yellow] {err.hint}"
        )
        raise typer.Exit(2) from None


def _service(cfg: StationConfig, store: Store, product: str | None = None) -> LabellingService:
    if product is not None and product not in cfg.products:
        raise InspectorError(
            f"product {product!r} is not configured: the station makes "
            f"{', '.join(cfg.products) or 'one product (no products:)'}",
            "pass a configured --product",
        )
    return LabellingService(store, Archive.for_data_dir(cfg.station.data_dir), cfg.review.lease_s, product=product)


ProductOpt = Annotated[
    str | None, typer.Option("--product", help="Only this product's items (its own review queue and training data).")
]


@review_app.command("stats")
def review_stats(config: ConfigOpt = None) -> None:
    """Pending, leased and labelled items, by priority."""
    cfg, store = open_config_store(config)
    _console().print_json(json.dumps(_service(cfg, store).queue_stats(), default=str))
    store.close()


@review_app.command("next")
def review_next(user: UserOpt = None, config: ConfigOpt = None, product: ProductOpt = None) -> None:
    """Lease the next item to you and show it."""
    cfg, store = open_config_store(config)
    user = _labeller(cfg, store, Action.LABEL, user, "review.next")
    item = _service(cfg, store, product).lease_next(user)
    store.close()
    if item is None:
        _console().print("queue empty")
        return
    image = Archive.for_data_dir(cfg.station.data_dir).path(item.image_sha256) if item.image_sha256 else None
    table = Table("field", "value", title=f"review item {item.id} (leased to {user})")
    for key in (
        "frame_id",
        "part_id",
        "camera",
        "priority",
        "reasons",
        "decision",
        "defect_class",
        "class_probs",
        "anomaly_score",
        "model_version",
    ):
        table.add_row(key, short_text(getattr(item, key)))
    table.add_row("image", str(image or "-"))
    _console().print(table)


@review_app.command("label")
def review_label(
    item: int,
    label: str,
    user: UserOpt = None,
    note: Annotated[str | None, typer.Option()] = None,
    config: ConfigOpt = None,
) -> None:
    """Label ITEM (leased by you) as LABEL: good, unsure, or a defect class."""
    cfg, store = open_config_store(config)
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
def review_export(
    out: Path,
    layout: Annotated[str, typer.Option(help="classification or anomaly")] = "classification",
    config: ConfigOpt = None,
    product: ProductOpt = None,
) -> None:
    """Export labelled frames into OUT in the trainer's folder layout, as a hashed dataset version."""
    cfg, store = open_config_store(config)
    _labeller(cfg, store, Action.EXPORT, None, str(out))
    try:
        dv = _service(cfg, store, product).export_dataset(out, layout)
    except LabelError as err:
        _console().print(f"[red]{err}[/red]")
        raise typer.Exit(1) from None
    finally:
        store.close()
    _console().print(f"dataset {dv.hash[:16]}… ({dv.files} images) in {dv.path}: {dv.counts}")


__all__ = ["review_app"]
