"""``inspector jobs ...``: RQ worker, retrain, promote, rollback, status, drift monitor, maintenance."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import typer
from rich.console import Console

from inspector.contracts.config import StationConfig, load_config
from inspector.contracts.errors import InspectorError

jobs_app = typer.Typer(help="Retraining jobs on RQ, model promotion and rollback, drift monitoring.",
                       no_args_is_help=True, pretty_exceptions_enable=False)
console = Console()
ConfigOpt = typer.Option(None, "--config", "-c", help="Station YAML (default: built-in defaults + INSPECTOR_* env).")
ActorOpt = typer.Option("cli", "--actor", help="Who acts (recorded in the audit trail).")


def _cfg(path: Path | None, station: str | None = None) -> StationConfig:
    cfg = load_config(path)
    if station is not None and station != cfg.station.id:
        raise InspectorError(f"station {station!r} is not the configured station {cfg.station.id!r}",
                             "pass the config file of that station with --config")
    return cfg


def _fail(err: InspectorError) -> None:
    Console(stderr=True).print(f"[bold red]error:[/bold red] {err.message}")
    if err.hint:
        Console(stderr=True).print(f"[yellow]hint:[/yellow] {err.hint}")
    raise typer.Exit(2)


def _connect(cfg: StationConfig):  # type: ignore[no-untyped-def]
    from inspector.bus.connection import connect

    return connect(cfg)


@jobs_app.command()
def worker(config: Path | None = ConfigOpt, burst: bool = typer.Option(False, help="Exit when the queue is empty."),
           with_scheduler: bool = typer.Option(False, "--with-scheduler", help="Run RQ's scheduler (periodic validation)."),
           name: str | None = typer.Option(None, help="Worker name.")) -> None:
    """Run an RQ worker on the station's Redis (embedded or URL) with the JSON serializer."""
    from jobs.worker import run_worker

    try:
        cfg = _cfg(config)
        run_worker(cfg, _connect(cfg), burst=burst, with_scheduler=with_scheduler, name=name)
    except InspectorError as err:
        _fail(err)


@jobs_app.command()
def retrain(station: str = typer.Argument(..., help="Station id."),
            reason: str = typer.Option(..., "--reason", help="Why (recorded with the job and in the audit trail)."),
            config: Path | None = ConfigOpt, actor: str = ActorOpt) -> None:
    """Queue one retraining of STATION (refused while one runs)."""
    from inspector.store.db import open_store
    from jobs.maintenance import retrain_now

    try:
        cfg = _cfg(config, station)
        with open_store(cfg) as store:
            req = retrain_now(cfg, _connect(cfg), store, reason, actor)
        console.print(f"{req.status}: job {req.job_id}")
    except InspectorError as err:
        _fail(err)


@jobs_app.command()
def promote(version: str | None = typer.Argument(None, help="Version (default: the newest candidate)."),
            config: Path | None = ConfigOpt, actor: str = ActorOpt) -> None:
    """Approve and activate a candidate version; workers hot-reload it."""
    from inspector.store.db import open_store
    from jobs import registry

    try:
        cfg = _cfg(config)
        with open_store(cfg) as store:
            done = registry.promote(cfg, _connect(cfg), store, version, actor)
        console.print(f"promoted {done}")
    except InspectorError as err:
        _fail(err)


@jobs_app.command()
def rollback(station: str = typer.Argument(..., help="Station id."), config: Path | None = ConfigOpt,
             actor: str = ActorOpt, reason: str = typer.Option("", help="Why.")) -> None:
    """Re-activate the previously active model version."""
    from inspector.store.db import open_store
    from jobs import registry

    try:
        cfg = _cfg(config, station)
        with open_store(cfg) as store:
            done = registry.rollback(cfg, _connect(cfg), store, actor, reason)
        console.print(f"rolled back to {done}")
    except InspectorError as err:
        _fail(err)


@jobs_app.command()
def status(config: Path | None = ConfigOpt, as_json: bool = typer.Option(False, "--json")) -> None:
    """Jobs with their step and progress, and model versions."""
    from jobs.status import jobs_status, render

    try:
        cfg = _cfg(config)
        st = jobs_status(cfg, _connect(cfg))
    except InspectorError as err:
        _fail(err)
        return
    if as_json:
        print(json.dumps(st, default=str))
        return
    for table in render(st):
        console.print(table)


@jobs_app.command()
def drift(config: Path | None = ConfigOpt,
          auto_retrain: bool = typer.Option(True, help="A drift alarm requests a retraining (locked, deduped).")) -> None:
    """Run the drift monitor on the verdicts stream until Ctrl-C."""
    from inspector.drift.monitor import DriftMonitor
    from inspector.store.db import open_store
    from jobs.trigger import retrain_on_drift

    try:
        cfg = _cfg(config)
        client = _connect(cfg)
        store = open_store(cfg)
        mon = DriftMonitor(cfg, client, store, on_alarm=retrain_on_drift(cfg, client) if auto_retrain else None)
        stop = threading.Event()
        try:
            mon.run(stop)
        except KeyboardInterrupt:
            stop.set()
    except InspectorError as err:
        _fail(err)


@jobs_app.command()
def maintenance(action: str = typer.Argument(..., help="camera-changed | collect | confirm | reject"),
                config: Path | None = ConfigOpt, actor: str = ActorOpt,
                note: str = typer.Option("", help="Note recorded with the action.")) -> None:
    """Camera or lighting changed: record it, collect frames, confirm them (queues the refit)."""
    from inspector.store.db import open_store
    from jobs import maintenance as m

    try:
        cfg = _cfg(config)
        client = _connect(cfg)
        with open_store(cfg) as store:
            if action == "camera-changed":
                out: object = m.camera_changed(cfg, client, store, actor, note)
            elif action == "collect":
                out = m.collect(cfg, client)
            elif action in ("confirm", "reject"):
                out = m.confirm(cfg, client, store, actor, good=action == "confirm")
            else:
                raise InspectorError(f"unknown action {action!r}", "use camera-changed, collect, confirm or reject")
        console.print(out)
    except InspectorError as err:
        _fail(err)


if __name__ == "__main__":  # pragma: no cover
    jobs_app()
