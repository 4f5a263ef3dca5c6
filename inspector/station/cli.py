"""``inspector station run -c station.yaml``: the supervisor of one station's processes."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from inspector.contracts.config import load_config
from inspector.contracts.errors import InspectorError

station_app = typer.Typer(help="The station's processes under one supervisor.", no_args_is_help=True)


@station_app.command("run")
def run(
    config: Path | None = typer.Option(None, "--config", "-c", help="Station YAML (the children read it too)."),
) -> None:
    """Own the data folder (lock), start Redis, then the configured processes; restart what dies; SIGTERM stops
    them in order, Redis last, within supervisor.stop_timeout_s."""
    from inspector.station.supervisor import Supervisor

    try:
        cfg = load_config(config)
        rc = Supervisor(cfg, config).run()
    except InspectorError as err:
        hint = f"; hint: {' '.join(err.hint.split())}" if err.hint else ""
        print(f"error: {' '.join(err.message.split())}{hint}", file=sys.stderr)
        raise typer.Exit(2) from None
    raise typer.Exit(rc)
