"""The station's command line: ``inspector demo | camera | worker | status | validate-config | ...``."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from inspector.contracts.config import StationConfig, load_config, schema_table
from inspector.contracts.errors import STORAGE_ERRNOS, InspectorError, storage_error
from inspector.plugins import PluginMissing, add_commands, provider


def _error_line(err: InspectorError) -> str:
    """One line (never wrapped): what is wrong, naming the thing, and the fix."""
    text = " ".join(err.message.split())
    return f"error: {text}; hint: {' '.join(err.hint.split())}" if err.hint else f"error: {text}"


class _StationApp(typer.Typer):
    """A station error that no command caught still ends in one line and exit status 2, never a traceback."""

    def __call__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return super().__call__(*args, **kwargs)
        except InspectorError as err:
            print(_error_line(err), file=sys.stderr)
            sys.exit(2)
        except OSError as err:
            if err.errno not in STORAGE_ERRNOS:
                raise
            print(_error_line(storage_error(err, None if err.filename else _data_dir_of_argv())), file=sys.stderr)
            sys.exit(2)


def _data_dir_of_argv() -> Path | None:
    """The data folder of the station file given with -c/--config (to name it when a write failed without a path)."""
    argv = sys.argv[1:]
    for i, arg in enumerate(argv):
        value = (
            argv[i + 1]
            if arg in ("-c", "--config") and i + 1 < len(argv)
            else arg.split("=", 1)[1]
            if arg.startswith("--config=")
            else None
        )
        if value is not None:
            try:
                return load_config(value).data_dir.resolve()
            except Exception:  # noqa: BLE001 - only for a better message
                return None
    return None


app = _StationApp(help="Visual inspection station.", no_args_is_help=True, pretty_exceptions_enable=False)
console = Console()

ConfigOpt = typer.Option(None, "--config", "-c", help="Station YAML (default: built-in defaults + INSPECTOR_* env).")
StandaloneOpt = typer.Option(
    False,
    "--standalone",
    help="Run alone: own the station's data folder (lock) and its embedded Redis when no "
    "supervisor does. Without it the command only connects to the station's Redis.",
)


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _config(path: Path | None) -> StationConfig:
    return load_config(path)


def _fail(err: InspectorError) -> None:
    print(_error_line(err), file=sys.stderr)
    raise typer.Exit(2)


@app.command()
def demo(
    frames: int | None = typer.Option(None, help="Stop after N frames (default: run until Ctrl-C)."),
    headless: bool = typer.Option(False, help="No GUI, even when a display is available."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON summary at the end."),
    data: Path | None = typer.Option(None, help="Replay this image folder instead of synthetic parts."),
    fps: float = typer.Option(30.0, help="Camera frames per second."),
    workers: int = typer.Option(1, min=1, max=8, help="Inspection workers."),
    package: Path | None = typer.Option(
        None, "--package", help="Inspect with this model package instead of the demo's own (trained on the first run)."
    ),
    data_dir: Path = typer.Option(Path("station-data"), help="Station data folder (Redis AOF, models, database)."),
    scenario: str | None = typer.Option(
        None,
        "--scenario",
        help="Play a scenario instead: 'drift' (the learning "
        "loop: production, lighting change, drift alarm, labels, retraining, "
        "gate, promotion, hot swap; in <data-dir>/scenario-drift).",
    ),
    config: Path | None = ConfigOpt,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run a whole station offline under the station supervisor: embedded Redis, camera, workers (verdict
    recorder, review routing), line outputs to a simulated PLC, drift monitor, RQ worker; live status."""
    _setup_logging(verbose)
    from inspector.demo import run_demo

    try:
        cfg = _config(config)
        if config is None:
            cfg.station.data_dir = data_dir
            cfg.camera.fps = fps
            if data is not None:
                cfg.camera.source.kind = "folder"
                cfg.camera.source.path = data
                cfg.camera.source.order = "shuffle"
        if scenario is not None:
            run_scenario = provider("demo_scenario", "pip install -e '.[train]'")  # jobs.scenario: the learning loop
            run_scenario(cfg, scenario, as_json)
            return
        if not headless and not as_json and _display_available():
            _run_gui()(cfg, demo=True)  # Qt only when a display exists
            return
        run_demo(cfg, frames, headless, as_json, data, workers, package=package)
    except InspectorError as err:
        _fail(err)


def _run_gui() -> Callable[..., int]:
    """``gui.app.run_gui``, through the ``gui`` provider (the GUI is the top layer: never imported from here)."""
    try:
        return provider("gui", "pip install -e '.[gui]'")  # type: ignore[no-any-return]
    except PluginMissing as err:
        raise PluginMissing(f"the GUI cannot start: {err.message}", err.hint) from err


def _display_available() -> bool:
    """A display Qt can really open: probed in a child process, because a Qt platform plugin that cannot
    load (e.g. libxcb-cursor0 missing) aborts the process instead of raising."""
    import os
    import subprocess
    import sys

    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    probe = "from PySide6.QtWidgets import QApplication; QApplication([]); import gui.app"
    try:
        ok = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        Console(stderr=True).print(
            "[yellow]a display is set but the Qt GUI cannot open on it (for X11 install "
            "libxcb-cursor0); showing the status table instead[/yellow]"
        )
    return ok


@app.command()
def camera(
    config: Path | None = ConfigOpt,
    frames: int | None = typer.Option(None, help="Stop after N frames."),
    standalone: bool = StandaloneOpt,
) -> None:
    """Stream frames from the configured camera source to the station's frames stream."""
    _setup_logging()
    from inspector.bus.connection import client_for_url, open_station_client, station_url
    from inspector.bus.streams import StationBus
    from inspector.camera.publisher import CameraPublisher
    from inspector.camera.sources import open_source

    try:
        cfg = _config(config)
        open_station_client(cfg, standalone).close()  # waits until the station's Redis answers
        # the camera never waits on Redis longer than a few frame periods: parts are counted as not sent instead
        fast = cfg.model_copy(deep=True)
        fast.redis.reconnect.give_up_s = max(0.2, 3 / cfg.camera.fps)
        client = client_for_url(station_url(cfg), fast.redis)
        pub = CameraPublisher(StationBus(client, cfg), open_source(cfg.camera))
        _metrics(cfg, "camera", lambda t: t.watch_camera(pub))
        n = pub.run(max_frames=frames)
        console.print(f"camera {cfg.camera.id}: {n - pub.not_sent} frames published, {pub.not_sent} not sent")
    except InspectorError as err:
        _fail(err)


@app.command()
def worker(
    config: Path | None = ConfigOpt,
    max_frames: int | None = typer.Option(None, help="Exit after N frames."),
    idle_exit: float | None = typer.Option(None, help="Exit after this many idle seconds."),
    name: str | None = typer.Option(None, help="Consumer name (default host-pid)."),
    record: bool = typer.Option(
        True,
        help="Run a verdict recorder thread (off where the station runs the recorder "
        "process: the supervisor passes --no-record then).",
    ),
    review: bool = typer.Option(True, help="Route uncertain frames to the review queue (with review.enabled)."),
    standalone: bool = StandaloneOpt,
) -> None:
    """Inspect frames from the station's stream until SIGTERM (which drains the batch in hand)."""
    _setup_logging()
    from inspector.bus.connection import open_station_client
    from inspector.worker import Worker

    try:
        cfg = _config(config)
        client = open_station_client(cfg, standalone)
        _metrics(cfg, _worker_process(name))
        w = Worker(cfg, client, name=name, sinks=_sinks(cfg, client) if review else [])
        _metrics(cfg, _worker_process(name), lambda t: (w.sinks.append(t.verdict_sink), t.watch_worker(w)))
        w.install_signal_handlers()
        recorder = _start_recorder(cfg, client, w.name) if record else None
        counts = w.run(max_frames=max_frames, idle_exit_s=idle_exit)
        if recorder is not None:
            recorder()
        if review:
            from inspector.station_sinks import stop_sinks

            stop_sinks(w.sinks)
        print(json.dumps(counts))
    except InspectorError as err:
        _fail(err)


def _metrics(cfg: StationConfig, process: str, watch=None) -> None:  # type: ignore[no-untyped-def]
    """Serve this process's Prometheus metrics (inspector.telemetry); never stops the process."""
    from inspector.telemetry import start

    start(cfg, process, watch)


def _worker_process(name: str | None) -> str:
    from inspector.telemetry import worker_process

    return worker_process(name)


def _sinks(cfg: StationConfig, client) -> list:  # type: ignore[no-untyped-def]
    from inspector.station_sinks import build_sinks

    return build_sinks(cfg, client)


def _start_recorder(cfg: StationConfig, client, name: str):  # type: ignore[no-untyped-def]
    from inspector.station_sinks import start_recorder

    return start_recorder(cfg, client, name)


@app.command()
def status(config: Path | None = ConfigOpt, as_json: bool = typer.Option(False, "--json")) -> None:
    """Health, lag, pending and dead letters of the station."""
    from inspector.status import station_status

    try:
        cfg = _config(config)
        st = station_status(cfg)
    except InspectorError as err:
        _fail(err)
        return
    if as_json:
        print(json.dumps(st, default=str))
        return
    from inspector.status import render_status

    console.print(render_status(st))


@app.command("validate-config")
def validate_config(
    file: Path | None = typer.Argument(None, help="Station YAML to check."),
    schema: bool = typer.Option(False, "--schema", help="List every key with its default and description."),
) -> None:
    """Validate a station file; a bad key is named with its path and a hint."""
    if schema:
        t = Table("key", "default", "description", title="station config keys")
        for row in schema_table():
            t.add_row(*row)
        console.print(t)
        if file is None:
            return
    if file is None:
        console.print("[red]give a FILE to validate, or --schema[/red]")
        raise typer.Exit(2)
    try:
        cfg = load_config(file)
    except InspectorError as err:
        _fail(err)
        return
    from inspector.bus.connection import masked_url

    redis_shown = "embedded" if cfg.redis.url is None else masked_url(cfg.redis.url)  # never print a password
    if cfg.redis.sentinel is not None:
        redis_shown = f"sentinel master {cfg.redis.sentinel.master} via {', '.join(cfg.redis.sentinel.hosts)}"
    console.print(
        f"[green]{file} is valid[/green]: station {cfg.station.id}, camera {cfg.camera.id} "
        f"({cfg.camera.source.kind}), redis {redis_shown}"
    )


@app.command()
def gui(
    config: Path | None = ConfigOpt,
    role: str | None = typer.Option(None, help="operator | quality | maintenance (default: log-in dialog)."),
    demo_station: bool = typer.Option(False, "--demo", help="Also run a demo worker and camera inside the GUI."),
) -> None:
    """Open the station GUI (operator, quality-engineer and maintenance views)."""
    _setup_logging()
    try:
        run_gui = _run_gui()
    except PluginMissing as err:
        _fail(err)
        return
    try:
        cfg = _config(config)
        _metrics(cfg, "gui", lambda t: t.watch_gui())
        run_gui(cfg, role=role, demo=demo_station)
    except InspectorError as err:
        _fail(err)


@app.command()
def line(config: Path | None = ConfigOpt) -> None:
    """Drive the line outputs (MQTT / Modbus): ACCEPT only on a PASS before the deadline, ready signal from health."""
    _setup_logging()
    try:
        from inspector.line.runner import run_line

        run_line(_config(config))
    except InspectorError as err:
        _fail(err)


from inspector.bench.cli import bench_app  # noqa: E402
from inspector.identity import identity_app as _identity_app  # noqa: E402
from inspector.product_cli import product_app  # noqa: E402
from inspector.review.cli import review_app  # noqa: E402
from inspector.shadow_cli import shadow_app  # noqa: E402
from inspector.station.cli import station_app  # noqa: E402
from inspector.store.cli import audit_app, trace  # noqa: E402

app.add_typer(bench_app, name="bench", help="Benchmarks side by side: stages, backends, pipeline, memory.")

add_commands(app)  # the upper layers' command groups (jobs), by entry point: inspector imports none of them

app.add_typer(audit_app, name="audit", help="Audit trail: verify the hash chain, show entries.")
app.add_typer(_identity_app(), name="identity", help="Who you are to the station: roles, PIN hashes, personal tokens.")
app.add_typer(review_app, name="review", help="Review queue and labelling from the command line.")
app.add_typer(station_app, name="station", help="The station's processes under one supervisor: station run.")
app.add_typer(product_app, name="product", help="Products and changeover: which product is on the line, switch NAME.")
app.add_typer(shadow_app, name="shadow", help="Shadow mode: a candidate judges live frames beside the active model.")
app.command("trace", help="Everything known about one part: verdict, scores, model and its hash, labels.")(trace)


def main() -> None:  # pragma: no cover
    try:
        app()
    except InspectorError as err:
        print(str(err), file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
