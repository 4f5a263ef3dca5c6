"""``inspector product show | switch NAME``: which product is on the line, and changing over."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from inspector.cli_options import ConfigOpt, RoleOpt, fail
from inspector.contracts.config import load_config
from inspector.contracts.errors import InspectorError
from inspector.contracts.lifecycle import Action

product_app = typer.Typer(
    help="Products and changeover: each product's frames are judged by its own model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()


@product_app.command("show")
def show(config: Path | None = ConfigOpt) -> None:
    """The configured products, their packages, and the one on the line now."""
    from inspector.bus.connection import join_station
    from inspector.products import current_product

    try:
        cfg = load_config(config)
        now = current_product(join_station(cfg), cfg)
    except InspectorError as err:
        fail(err)
        return
    table = Table(title=f"products of station {cfg.station.id}")
    for col in ("product", "package", "policy", "on the line"):
        table.add_column(col)
    for name, product in cfg.products.items():
        table.add_row(
            name, str(product.package), "own" if product.policy else "station's", "yes" if name == now else ""
        )
    console.print(table if cfg.products else "this station makes one product (no `products:` in its file)")


@product_app.command("switch")
def switch(product: str, config: Path | None = ConfigOpt, role: str | None = RoleOpt) -> None:
    """Change the line over to PRODUCT (maintenance role; audited). Its frames are judged by its own model."""
    from inspector.bus.connection import join_station
    from inspector.identity import authorize
    from inspector.products import check_product, switch_product
    from inspector.store.db import open_store

    try:
        cfg = load_config(config)
        check_product(cfg, product)  # an unknown product is refused before anything is touched
        store = open_store(cfg)
        ident, acting = authorize(cfg, store, Action.CHANGEOVER, role, None, product)
        previous = switch_product(cfg, join_station(cfg), store, product, ident.name, acting.value)
        console.print(f"changeover: {previous} -> {product}")
    except InspectorError as err:
        fail(err)
