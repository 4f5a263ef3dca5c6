"""Options and the one-line failure that the station's smaller command groups share (shadow, product)."""

from __future__ import annotations

import typer

from inspector.contracts.errors import InspectorError

ConfigOpt = typer.Option(None, "--config", "-c", help="Station YAML (default: built-in defaults + INSPECTOR_* env).")
RoleOpt = typer.Option(None, "--role", envvar="INSPECTOR_ROLE", help="The role you act in (maintenance).")


def fail(err: InspectorError) -> None:
    """One line naming what is wrong and the fix, then exit status 2."""
    line = f"error: {' '.join(err.message.split())}"
    print(f"{line}; hint: {err.hint}" if err.hint else line, flush=True)
    raise typer.Exit(2)
