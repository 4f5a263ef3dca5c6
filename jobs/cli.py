"""``inspector jobs ...``: RQ worker, retrain, promote, rollback, status, drift monitor, maintenance."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from inspector.contracts.config import StationConfig, load_config
from inspector.contracts.errors import InspectorError
from inspector.contracts.lifecycle import Action

if TYPE_CHECKING:
    from inspector.store.db import Store

jobs_app = typer.Typer(
    help="Retraining jobs on RQ, model promotion and rollback, drift monitoring.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
ConfigOpt = typer.Option(None, "--config", "-c", help="Station YAML (default: built-in defaults + INSPECTOR_* env).")
ActorOpt = typer.Option(
    None,
    "--actor",
    help="Who acts: always you (the OS user, or your INSPECTOR_TOKEN); another name is refused and audited.",
)
RoleOpt = typer.Option(
    None,
    "--role",
    envvar="INSPECTOR_ROLE",
    help="The role you act in: one that identity.users gives you (default: the first you hold "
    "that may do this). A role you do not hold is refused and audited.",
)


def _who(
    cfg: StationConfig, store: Store, action: Action, role: str | None, actor: str | None, target: str = ""
) -> tuple[str, str]:
    """The identity running this command and its role for ``action`` (refusals are audited)."""
    from inspector.identity import authorize

    ident, acting = authorize(cfg, store, action, role, actor, target)
    return ident.name, acting.value


def _cfg(path: Path | None, station: str | None = None) -> StationConfig:
    cfg = load_config(path)
    if station is not None and station != cfg.station.id:
        raise InspectorError(
            f"station {station!r} is not the configured station {cfg.station.id!r}",
            "pass the config file of that station with --config",
        )
    return cfg


def _fail(err: InspectorError) -> None:
    err_console = Console(stderr=True, soft_wrap=True)
    err_console.print(f"[bold red]error:[/bold red] {err.message}")
    for row in getattr(err, "rows", []):
        err_console.print(f"  {row.line()}")
    if err.hint:
        err_console.print(f"[yellow]hint:[/yellow] {err.hint}")
    raise typer.Exit(getattr(err, "exit_code", 2))


def _metrics(cfg: StationConfig, process: str, watch) -> None:  # type: ignore[no-untyped-def]
    """Serve this process's Prometheus metrics (inspector.telemetry); never stops the process."""
    from inspector.telemetry import start

    start(cfg, process, watch)


def _connect(cfg: StationConfig):  # type: ignore[no-untyped-def]
    from inspector.bus.connection import connect

    return connect(cfg)


@jobs_app.command()
def worker(
    config: Path | None = ConfigOpt,
    burst: bool = typer.Option(False, help="Exit when the queue is empty."),
    with_scheduler: bool = typer.Option(False, "--with-scheduler", help="Run RQ's scheduler (periodic validation)."),
    name: str | None = typer.Option(None, help="Worker name."),
) -> None:
    """Run an RQ worker on the station's Redis (embedded or URL) with the JSON serializer."""
    from jobs.queues import station_queue
    from jobs.worker import run_worker

    try:
        cfg = _cfg(config)
        client = _connect(cfg)
        _metrics(cfg, "jobs", lambda t: t.watch_jobs(station_queue(cfg, client)))
        run_worker(cfg, client, burst=burst, with_scheduler=with_scheduler, name=name)
    except InspectorError as err:
        _fail(err)


@jobs_app.command()
def retrain(
    station: str = typer.Argument(..., help="Station id."),
    reason: str = typer.Option(..., "--reason", help="Why (recorded with the job and in the audit trail)."),
    config: Path | None = ConfigOpt,
    actor: str | None = ActorOpt,
    role: str | None = RoleOpt,
) -> None:
    """Queue one retraining of STATION (refused while one runs)."""
    from inspector.store.db import open_store
    from jobs.maintenance import retrain_now

    try:
        cfg = _cfg(config, station)
        with open_store(cfg) as store:
            who, _ = _who(cfg, store, Action.RETRAIN, role, actor, station)
            req = retrain_now(cfg, _connect(cfg), store, reason, who)
        console.print(f"{req.status}: job {req.job_id}")
    except InspectorError as err:
        _fail(err)


@jobs_app.command()
def promote(
    version: str | None = typer.Argument(None, help="Version (default: the newest waiting one)."),
    config: Path | None = ConfigOpt,
    actor: str | None = ActorOpt,
    role: str | None = RoleOpt,
    force: bool = typer.Option(False, "--force", help="Override a failed gate (maintenance role; audited)."),
    reason: str = typer.Option("", "--reason", help="Why (required with --force; audited)."),
) -> None:
    """Activate an approved version; workers hot-reload it. A failed or missing gate is refused (exit 3)."""
    from inspector.store.db import open_store
    from jobs import registry

    try:
        cfg = _cfg(config)
        with open_store(cfg) as store:
            who, acting = _who(
                cfg, store, Action.FORCE_PROMOTE if force else Action.PROMOTE, role, actor, version or ""
            )
            done = registry.promote(cfg, _connect(cfg), store, version, who, role=acting, force=force, reason=reason)
        console.print(f"promoted {done}")
    except InspectorError as err:
        _fail(err)


@jobs_app.command()
def approve(
    version: str = typer.Argument(..., help="Version to approve."),
    config: Path | None = ConfigOpt,
    actor: str | None = ActorOpt,
    role: str | None = RoleOpt,
) -> None:
    """Approve a version whose gate passed (after reading its rows: `inspector jobs gate VERSION`)."""
    from inspector.store.db import open_store
    from jobs import registry

    try:
        cfg = _cfg(config)
        with open_store(cfg) as store:
            who, acting = _who(cfg, store, Action.APPROVE, role, actor, version)
            registry.approve(store, version, who, acting)
        console.print(f"approved {version}")
    except InspectorError as err:
        _fail(err)


@jobs_app.command()
def gate(
    version: str = typer.Argument(..., help="Version."),
    config: Path | None = ConfigOpt,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Every gate row of a version: candidate beside incumbent, the limit, PASS/FAIL."""
    from inspector.store.db import open_store
    from jobs import registry
    from jobs.status import gate_table

    try:
        cfg = _cfg(config)
        with open_store(cfg) as store:
            row = registry.get_version(store, version)
            report = registry.gate_of(row)
    except InspectorError as err:
        _fail(err)
        return
    if as_json:
        print(
            json.dumps(
                {"version": version, "status": row.status, "gate": report.model_dump(mode="json") if report else None}
            )
        )
        return
    console.print(gate_table(version, row.status, report))


@jobs_app.command()
def rollback(
    station: str = typer.Argument(..., help="Station id."),
    config: Path | None = ConfigOpt,
    actor: str | None = ActorOpt,
    role: str | None = RoleOpt,
    reason: str = typer.Option("", help="Why."),
) -> None:
    """Re-activate the previously active model version."""
    from inspector.store.db import open_store
    from jobs import registry

    try:
        cfg = _cfg(config, station)
        with open_store(cfg) as store:
            who, acting = _who(cfg, store, Action.ROLLBACK, role, actor, station)
            done = registry.rollback(cfg, _connect(cfg), store, who, reason, role=acting)
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
def drift(
    config: Path | None = ConfigOpt,
    auto_retrain: bool = typer.Option(
        True, help="Also run the retrain trigger here (a thread consuming DRIFT_ALARM events: locked, deduped)."
    ),
) -> None:
    """Run the drift monitor on the verdicts stream (and, by default, the retrain trigger) until Ctrl-C."""
    import socket

    from inspector.drift.monitor import DriftMonitor
    from inspector.store.db import open_store
    from jobs.trigger import run_trigger_thread

    try:
        cfg = _cfg(config)
        client = _connect(cfg)
        store = open_store(cfg)
        mon = DriftMonitor(cfg, client, store)
        _metrics(cfg, "drift", lambda t: t.watch_drift(mon))
        stop = threading.Event()
        if auto_retrain:
            run_trigger_thread(cfg, client, stop, consumer=f"trigger-drift-{socket.gethostname()}")
        try:
            mon.run(stop)
        except KeyboardInterrupt:
            stop.set()
    except InspectorError as err:
        _fail(err)


@jobs_app.command()
def maintenance(
    action: str = typer.Argument(..., help="camera-changed | collect | confirm | reject"),
    config: Path | None = ConfigOpt,
    actor: str | None = ActorOpt,
    role: str | None = RoleOpt,
    note: str = typer.Option("", help="Note recorded with the action."),
) -> None:
    """Camera or lighting changed: record it, collect frames, confirm them (queues the refit)."""
    from inspector.store.db import open_store
    from jobs import maintenance as m

    try:
        cfg = _cfg(config)
        with open_store(cfg) as store:
            who, _ = _who(cfg, store, Action.MAINTENANCE, role, actor, action)
            client = _connect(cfg)
            if action == "camera-changed":
                out: object = m.camera_changed(cfg, client, store, who, note)
            elif action == "collect":
                out = m.collect(cfg, client)
            elif action in ("confirm", "reject"):
                out = m.confirm(cfg, client, store, who, good=action == "confirm")
            else:
                raise InspectorError(f"unknown action {action!r}", "use camera-changed, collect, confirm or reject")
        console.print(out)
    except InspectorError as err:
        _fail(err)


@jobs_app.command()
def trigger(
    config: Path | None = ConfigOpt,
    consumer: str | None = typer.Option(
        None, help="Consumer name in the retrain-trigger group (default trigger-<host>; keep it across restarts)."
    ),
) -> None:
    """Run the retrain trigger until Ctrl-C: DRIFT_ALARM events from any source -> one retraining (deduped, locked)."""
    import socket

    from jobs.trigger import RetrainTrigger

    try:
        cfg = _cfg(config)
        trig = RetrainTrigger(cfg, _connect(cfg), consumer or f"trigger-{socket.gethostname()}")
        stop = threading.Event()
        try:
            trig.run(stop)
        except KeyboardInterrupt:
            stop.set()
    except InspectorError as err:
        _fail(err)


def _shadow_report_command():  # type: ignore[no-untyped-def]
    from inspector.shadow_cli import report

    return report


jobs_app.command(
    "shadow-report",
    help="How VERSION judged live frames in shadow beside the active model: agreement, "
    "confusion, latencies and the parts where they differ.",
)(_shadow_report_command())


if __name__ == "__main__":  # pragma: no cover
    jobs_app()
