"""``inspector shadow run | start | stop | report``: a candidate judging live frames beside the active model."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console, Group
from rich.table import Table

from inspector.cli_options import ConfigOpt, RoleOpt, fail
from inspector.contracts.config import StationConfig, load_config
from inspector.contracts.errors import InspectorError
from inspector.contracts.lifecycle import Action, ModelStatus

if TYPE_CHECKING:
    from inspector.store.shadow import ShadowReport

shadow_app = typer.Typer(
    help="Shadow mode: a candidate judges live frames beside the active model, never on the line.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()


def _store(cfg: StationConfig):  # type: ignore[no-untyped-def]
    from inspector.store.db import open_store

    return open_store(cfg)


@shadow_app.command("run")
def run(
    config: Path | None = ConfigOpt,
    name: str = typer.Option("shadow", help="Consumer name."),
    standalone: bool = typer.Option(
        False, "--standalone", help="Own the station's embedded Redis when no supervisor runs it."
    ),
) -> None:
    """Judge live frames with the candidate set by `inspector shadow start` until SIGTERM (a station process)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from inspector.bus.connection import open_station_client
    from inspector.shadow import run_shadow_process

    try:
        cfg = load_config(config)
        counts = run_shadow_process(cfg, open_station_client(cfg, standalone), _store(cfg), name)
        print(json.dumps(counts))
    except InspectorError as err:
        fail(err)


def start_shadow(cfg: StationConfig, client, store, version: str, actor: str, role: str) -> None:  # type: ignore[no-untyped-def]
    """Point the shadow process at ``version`` (registered, package hash checked, not the active model); audited."""
    from inspector.bus.streams import StationBus
    from inspector.runtime.package import load_package
    from inspector.shadow import ShadowRefused, registered_version

    row = registered_version(store, version)
    if row.status == ModelStatus.ACTIVE:
        raise ShadowRefused(f"{version} is the active model", "shadow a candidate: `inspector jobs status` lists them")
    package = load_package(row.package_path)
    if package.package_sha256 != row.package_sha256:
        raise ShadowRefused(
            f"the package of {version} at {row.package_path} changed since it was registered",
            "restore the registered package, or register the new one as a new version",
        )
    bus = StationBus(client, cfg)
    old = client.hget(bus.names.shadow_model, "version")
    pipe = client.pipeline(transaction=True)
    pipe.delete(bus.names.shadow_model)
    pipe.hset(bus.names.shadow_model, mapping={"version": version, "sha256": row.package_sha256, "at": time.time()})
    pipe.execute()
    store.audit.record(
        actor,
        "model.shadow_start",
        version,
        {"shadow": old.decode() if old else None},
        {"shadow": version, "package_sha256": row.package_sha256},
        {"role": role},
    )


@shadow_app.command("start")
def start(version: str, config: Path | None = ConfigOpt, role: str | None = RoleOpt) -> None:
    """Judge live frames with VERSION in shadow from now on (maintenance role; audited)."""
    from inspector.bus.connection import join_station
    from inspector.identity import authorize

    try:
        cfg = load_config(config)
        store = _store(cfg)
        ident, acting = authorize(cfg, store, Action.SHADOW, role, None, version)
        start_shadow(cfg, join_station(cfg), store, version, ident.name, acting.value)
        console.print(
            f"{version} now judges live frames in shadow (never on the line); "
            f"`inspector jobs shadow-report {version}` compares it with the active model"
        )
    except InspectorError as err:
        fail(err)


@shadow_app.command("stop")
def stop(config: Path | None = ConfigOpt, role: str | None = RoleOpt) -> None:
    """Stop shadow mode (maintenance role; audited). The shadow rows stay for the report."""
    from inspector.bus.connection import join_station
    from inspector.bus.streams import StationBus
    from inspector.identity import authorize

    try:
        cfg = load_config(config)
        store = _store(cfg)
        client = join_station(cfg)
        names = StationBus(client, cfg).names
        old = client.hget(names.shadow_model, "version")
        ident, acting = authorize(cfg, store, Action.SHADOW, role, None, old.decode() if old else "")
        client.delete(names.shadow_model)
        store.audit.record(
            ident.name,
            "model.shadow_stop",
            old.decode() if old else "",
            {"shadow": old.decode() if old else None},
            {"shadow": None},
            {"role": acting.value},
        )
        console.print(f"shadow mode stopped (was {old.decode() if old else 'off'})")
    except InspectorError as err:
        fail(err)


def render_shadow_report(report: ShadowReport) -> Group:
    """The report as the tables a maintenance engineer reads."""

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.2f} %"

    head = Table(title=f"shadow report: {report.version}", show_header=False)
    head.add_row("frames judged in shadow", str(report.judged))
    head.add_row("compared with the active verdict", str(report.compared))
    head.add_row("same decision", pct(report.decision_agreement))
    head.add_row("same line outcome (reject or not)", pct(report.line_agreement))
    head.add_row("frames that differ", str(report.differing))
    head.add_row("candidate ERROR verdicts", str(report.shadow_errors))
    head.add_row(
        "active versions compared with", ", ".join(f"{v} ({n})" for v, n in report.active_versions.items()) or "-"
    )
    lat = Table(title="latency (ms)")
    for col in ("", "p50", "p99", "frames"):
        lat.add_column(col)
    for label, d in (
        ("candidate model time / frame", report.candidate_infer_ms),
        ("candidate: capture -> decision", report.candidate_latency_ms),
        ("active: capture -> decision", report.active_latency_ms),
    ):
        lat.add_row(label, str(d.get("p50", "-")), str(d.get("p99", "-")), str(int(d.get("n", 0))))
    decisions = sorted({d for row in report.confusion.values() for d in row} | set(report.confusion))
    conf = Table(title="active (rows) x candidate (columns)")
    conf.add_column("active \\ candidate")
    for d in decisions:
        conf.add_column(d)
    for a in decisions:
        conf.add_row(a, *[str(report.confusion.get(a, {}).get(d, 0)) for d in decisions])
    diff = Table(title=f"where they differ (newest {len(report.differences)})")
    for col in ("part", "active", "candidate", "image"):
        diff.add_column(col)
    for d in report.differences[:20]:
        diff.add_row(
            d.part_id,
            f"{d.active_decision} {d.active_class or ''}".strip(),
            f"{d.shadow_decision} {d.shadow_class or ''}".strip(),
            f"{d.image_sha256[:12]}.{d.image_ext}" if d.image_sha256 else "-",
        )
    return Group(head, lat, conf, diff)


@shadow_app.command("report")
def report(version: str, config: Path | None = ConfigOpt, as_json: bool = typer.Option(False, "--json")) -> None:
    """Agreement, confusion, latencies and the differing parts of VERSION in shadow (from the store)."""
    from inspector.store.shadow import shadow_report

    try:
        cfg = load_config(config)
        rep = shadow_report(_store(cfg), version)
    except InspectorError as err:
        fail(err)
        return
    if as_json:
        print(rep.model_dump_json())
    else:
        console.print(render_shadow_report(rep))
