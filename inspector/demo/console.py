"""``inspector demo``: start the demo station, show its live table (or one JSON summary), stop it in order."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.live import Live
from rich.table import Table

from inspector.contracts.config import StationConfig
from inspector.contracts.errors import InspectorError
from inspector.demo.start import start_demo_station
from inspector.demo.station import DemoStation
from inspector.metrics import percentile


def status_table(station: DemoStation) -> Table:
    t, st = station.tally, station.processes()
    version = t.last.model_version if t.last is not None else "?"
    table = Table(title=f"inspection station demo — model {version}")
    for col in ("part", "state", "figures"):
        table.add_column(col)
    d = t.decisions
    rep = station.camera()
    workers = [s for n, s in st.items() if n.startswith("worker-")]
    wstate = workers[0] if len(set(workers)) == 1 else ", ".join(workers)
    plc = station.plc.snapshot()
    jobs = station.jobs()
    recorded = station.recorded()
    table.add_row(
        "camera", st.get("camera", "?"), f"{rep.get('published', 0)} frames, {t.fps(station.started):.1f} fps"
    )
    table.add_row(
        f"workers ({len(workers)})",
        wstate,
        f"{len(t.frames)} verdicts: pass {d['PASS']}, fail {d['FAIL']}, review {d['REVIEW']}, "
        f"error {d['ERROR']}; latency p50 {percentile(t.latencies[-2000:], 50):.1f} ms, "
        f"p99 {percentile(t.latencies[-2000:], 99):.1f} ms",
    )
    table.add_row("verdict recorder", wstate, f"{recorded} recorded, lag {max(0, len(t.frames) - recorded)}")
    table.add_row("review routing", wstate, f"{station.review_queued()} queued for review")
    table.add_row("drift monitor", st.get("drift", "?"), station.drift())
    table.add_row(
        "jobs (RQ worker)", st.get("jobs", "?"), ", ".join(f"{k} {v}" for k, v in jobs.items()) or "no queue yet"
    )
    table.add_row(
        "line → PLC",
        st.get("line", "?"),
        f"accept {plc.accepts}, reject {plc.rejects}, ready {'on' if plc.ready else 'off'} ({station.plc.url})",
    )
    table.add_row("redis", st.get("redis", "?"), "")
    if t.last is not None:
        v = t.last
        table.caption = f"last part {v.part_id}: {v.decision.value} {v.defect_class or ''} ({'; '.join(v.reasons)})"
    return table


@contextlib.contextmanager
def _interrupts() -> Iterator[None]:
    """SIGTERM as Ctrl-C, so that both stop the station in order (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _no_interrupts() -> Iterator[None]:
    """While stopping: a second Ctrl-C must not cut the ordered stop short (it is bounded anyway)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    prev = signal.signal(signal.SIGINT, signal.SIG_IGN), signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, prev[0])
        signal.signal(signal.SIGTERM, prev[1])


def run_demo(
    cfg: StationConfig,
    frames: int | None,
    headless: bool,
    as_json: bool,
    data: Path | None,
    workers: int = 1,
    console: Console | None = None,
    package: Path | None = None,
) -> dict[str, object]:
    """``inspector demo``: start the demo station, show its live table (or nothing with --json), stop it.
    Interrupted (Ctrl-C, SIGTERM), it stops everything and exits with status 130."""
    command_started = time.monotonic()
    console = console or Console(stderr=as_json)
    station: DemoStation | None = None
    summary: dict[str, object] = {}
    interrupted = False
    with _interrupts():
        try:
            if package is not None and not (package / "manifest.json").is_file():
                raise InspectorError(
                    f"--package {package}: no model package there (no manifest.json)",
                    "give a package folder made by trainer package-* (or leave --package out)",
                )
            station = start_demo_station(
                cfg, frames=frames, workers=workers, package=package, data=data, console=console
            )
            _watch(station, as_json or headless, console)
            if frames is not None:
                station.settle()
            summary = station.summary(command_started)
        except KeyboardInterrupt:
            interrupted = True
            console.print("stopping…")
        finally:
            if station is not None:
                with _no_interrupts():
                    station.stop()
    if station is None:
        console.print("stopped before the station started; nothing is left running")
        raise SystemExit(130)
    if interrupted:
        summary = station.summary(command_started)
    if as_json:
        print(json.dumps(summary), flush=True)
    else:
        console.print(status_table(station))
    if interrupted:
        raise SystemExit(130)
    return summary


def _watch(station: DemoStation, quiet: bool, console: Console) -> None:
    if quiet:
        next_check = 0.0
        while True:
            station.poll()
            if time.monotonic() >= next_check:  # the process table and camera report twice a second
                station.check_alive()
                if station.streaming_done():
                    return
                next_check = time.monotonic() + 0.5
    with Live(status_table(station), console=console, refresh_per_second=2) as live:
        next_draw = 0.0
        while not station.streaming_done():
            station.poll()
            station.check_alive()
            if time.monotonic() >= next_draw:
                live.update(status_table(station))
                next_draw = time.monotonic() + 0.5
