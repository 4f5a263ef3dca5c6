"""``trainer heldout freeze / show``: the station's fixed held-out set, frozen once at commissioning."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from inspector.contracts.errors import InspectorError

heldout_app = typer.Typer(
    help="The station's fixed held-out set (frozen by file hash, never trained on).", no_args_is_help=True
)
console = Console()
ConfigOpt = typer.Option(None, "--config", "-c", help="Station YAML (its station.data_dir holds heldout.json).")


def _fail(err: InspectorError) -> typer.Exit:
    Console(stderr=True).print(f"[red]error:[/] {err.message}")
    if err.hint:
        Console(stderr=True).print(f"[dim]hint:[/] {err.hint}")
    return typer.Exit(code=2)


def _table(held: object) -> Table:
    t = Table(
        "class",
        "images",
        title=f"held-out set of {held.source} (digest {held.digest[:12]}, "  # type: ignore[attr-defined]
        f"{len(held.items)} images)",
    )  # type: ignore[attr-defined]
    for label, n in held.counts.items():  # type: ignore[attr-defined]
        t.add_row(label, str(n))
    return t


@heldout_app.command("freeze")
def freeze(
    data: Annotated[
        Path | None, typer.Argument(help="Base data folder (anomaly layout); default jobs.base_data.")
    ] = None,
    config: Path | None = ConfigOpt,
    actor: Annotated[str, typer.Option(help="Who commissions (recorded in heldout.json).")] = "commissioning",
) -> None:
    """Freeze the held-out set: test/good and half of each test/<defect> (by sha256); refused if one exists."""
    from inspector.contracts.config import load_config
    from trainer.heldout import freeze_heldout

    try:
        cfg = load_config(config)
        base = data or cfg.jobs.base_data
        if base is None:
            raise InspectorError("no base data folder", "pass DATA or set jobs.base_data in the station file")
        held = freeze_heldout(base, cfg.data_dir, actor)
    except InspectorError as err:
        raise _fail(err) from None
    console.print(_table(held))


@heldout_app.command("show")
def show(config: Path | None = ConfigOpt, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The frozen held-out set: counts per class; every file is re-hashed (a changed file is an error)."""
    from inspector.contracts.config import load_config
    from trainer.heldout import load_heldout_set

    try:
        cfg = load_config(config)
        held = load_heldout_set(cfg.data_dir, None)
    except InspectorError as err:
        raise _fail(err) from None
    if as_json:
        print(
            json.dumps(
                {
                    "source": held.source,
                    "digest": held.digest,
                    "created_at": held.created_at,
                    "counts": held.counts,
                    "n": len(held.items),
                }
            )
        )
        return
    console.print(_table(held))


def register(app: typer.Typer) -> None:
    app.add_typer(heldout_app, name="heldout")
