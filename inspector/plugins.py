"""How the station's runtime reaches the layers above it without importing them.

``inspector`` is the lowest layer (gui > jobs > trainer > inspector, checked by ``lint-imports``): it imports
none of the other three. What it needs from them comes through two entry-point groups that ``pyproject.toml``
declares and ``pip install -e .`` registers:

- ``inspector.commands``: command groups of the upper layers (a Typer app or one command function), added to
  the ``inspector`` command under the entry point's name (``inspector jobs ...``).
- ``inspector.providers``: implementations of hooks the runtime defines and calls by name: the GUI
  (``gui``), the demo's trained models (``demo_models``), the demo's scenarios (``demo_scenario``), anomalib's
  deployment paths for the bench (``anomalib_peers``).

An entry point that is not registered (a source tree that was never installed) never crashes the command:
a missing command prints one line naming the fix; a missing provider raises :class:`PluginMissing`.
"""

from __future__ import annotations

import sys
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import typer

from inspector.contracts.errors import InspectorError

COMMANDS_GROUP = "inspector.commands"
PROVIDERS_GROUP = "inspector.providers"
INSTALL_HINT = "pip install -e '.[test]' in the repository (registers the entry points of pyproject.toml)"

#: The command groups the upper layers register, with their help: listed by ``inspector --help`` even when
#: their entry point is missing, so that running one names the fix instead of "No such command".
UPPER_COMMANDS: dict[str, str] = {
    "jobs": "Retraining jobs on RQ: worker, retrain, promote, rollback, status, drift.",
}


class PluginMissing(InspectorError):
    """An entry point the station needs is not registered (package not installed) or cannot be imported."""


def _entry(group: str, name: str) -> EntryPoint | None:
    found = [ep for ep in entry_points(group=group) if ep.name == name]
    return found[0] if found else None


def provider(name: str, extra_hint: str | None = None) -> Any:
    """The object registered as ``name`` in ``inspector.providers``, imported now.

    Raises :class:`PluginMissing` naming the fix: the entry point is not registered (install the project), or
    its module cannot be imported (``extra_hint``: the extra that brings what it needs)."""
    ep = _entry(PROVIDERS_GROUP, name)
    if ep is None:
        raise PluginMissing(f"{name!r} is not registered in the entry points of group {PROVIDERS_GROUP}", INSTALL_HINT)
    try:
        return ep.load()
    except ImportError as err:
        raise PluginMissing(f"{name} ({ep.value}) cannot be imported: {err}", extra_hint or INSTALL_HINT) from err


def _add_missing(app: typer.Typer, name: str, why: str) -> None:
    """``name`` as a command that takes any arguments and only prints one line naming the fix (exit 2)."""

    def missing(ctx: typer.Context) -> None:
        print(f"error: the '{name}' command is not available ({why}); hint: {INSTALL_HINT}", file=sys.stderr)
        raise typer.Exit(2)

    app.command(
        name,
        help=UPPER_COMMANDS.get(name, ""),
        add_help_option=False,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(missing)


def add_commands(app: typer.Typer) -> None:
    """Add every command group registered in ``inspector.commands`` to ``app``; each of
    :data:`UPPER_COMMANDS` that is missing or cannot be imported becomes a stub that names the fix."""
    seen: set[str] = set()
    for ep in entry_points(group=COMMANDS_GROUP):
        if ep.name in seen:
            continue
        seen.add(ep.name)
        try:
            obj = ep.load()
        except ImportError as err:
            _add_missing(app, ep.name, f"{ep.value}: {err}")
            continue
        if isinstance(obj, typer.Typer):
            app.add_typer(obj, name=ep.name, help=UPPER_COMMANDS.get(ep.name))
        else:
            app.command(ep.name)(obj)
    for name in UPPER_COMMANDS:
        if name not in seen:
            _add_missing(app, name, f"no entry point in group {COMMANDS_GROUP}")
