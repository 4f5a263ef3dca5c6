"""Does a shadow candidate delay the line? The active verdict's latency with and without shadow mode, side by side.

``python -m inspector.bench.shadow`` (or ``inspector bench shadow``) runs a real station under the supervisor
(embedded Redis, an inspection worker with its recorder, the shadow process, the synthetic camera at
``--fps``) and alternates segments without a shadow candidate and with one (``inspector shadow start`` /
``stop`` between them, the same processes throughout), then compares the active verdicts' capture-to-decision
latency of the two conditions from the store. The candidate is a registered copy of the active package, so
it costs what the active model costs.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import typer
import yaml
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from inspector.contracts.config import StationConfig, load_config
from inspector.contracts.lifecycle import ModelStatus
from inspector.contracts.names import Names

WARMUP_S = 3.0  # the first seconds of a segment are left out: the candidate is loading or unloading
STATION_WARMUP_S = 20.0  # the first seconds of the station (model warm-up, first database writes) are not measured


def _station_file(folder: Path, package: Path, fps: float, workers: int) -> Path:
    doc = {
        "station": {"id": "shadowbench", "data_dir": str(folder / "data")},
        "model": {"package": str(package)},
        "camera": {"fps": fps, "source": {"kind": "synthetic", "seed": 3}},
        "review": {"enabled": False},
        "supervisor": {"processes": ["worker", "shadow", "camera"], "workers": workers},
    }
    path = folder / "station.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _wait_worker(cfg: StationConfig, client, timeout: float = 180) -> None:  # type: ignore[no-untyped-def]
    from inspector.contracts.names import Names

    names = Names(cfg.redis.prefix, cfg.station.id)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(True for _ in client.scan_iter(match=names.heartbeat_pattern)) and client.exists(names.verdicts):
            return
        time.sleep(0.2)
    raise RuntimeError("the station's worker gave no verdict in time; see the supervisor's output")


def _pcts(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, float)
    if not len(arr):
        return {"n": 0}
    return {
        "n": len(arr),
        "p50": round(float(np.percentile(arr, 50)), 2),
        "p99": round(float(np.percentile(arr, 99)), 2),
        "mean": round(float(arr.mean()), 2),
    }


def _join_started_station(cfg: StationConfig, proc: subprocess.Popen[bytes], log: Path) -> Any:
    """A client of the station that ``proc`` (its supervisor) starts, once its Redis answers (60 s at most)."""
    from inspector.bus.connection import join_station

    deadline = time.monotonic() + 60
    while True:
        try:
            return join_station(cfg)
        except Exception:  # noqa: BLE001 - the supervisor is still starting Redis
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the station did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.3)


def _alternate(
    cfg: StationConfig,
    client: Any,
    store: Any,
    version: str,
    rounds: int,
    segment_s: float,
    say: Callable[[str], object],
) -> list[tuple[str, float, float]]:
    """``rounds`` segments without and with the shadow candidate, in ABBA order (a slow drift of the machine
    weighs on both conditions alike); returns each segment's condition and measured window."""
    from inspector.shadow_cli import start_shadow

    names = Names(cfg.redis.prefix, cfg.station.id)
    windows: list[tuple[str, float, float]] = []
    for r in range(rounds):
        order = ("without shadow", "with shadow") if r % 2 == 0 else ("with shadow", "without shadow")
        for condition in order:
            if condition == "with shadow":
                start_shadow(cfg, client, store, version, "bench", "maintenance")
            else:
                client.delete(names.shadow_model)
            t0 = time.time()
            say(f"round {r + 1}/{rounds}: {condition} for {segment_s:.0f} s")
            time.sleep(segment_s)
            windows.append((condition, t0 + WARMUP_S, time.time()))
    return windows


def _figures(
    rows: list[Any], windows: list[tuple[str, float, float]], report: Any, counters: dict[str, int]
) -> dict[str, object]:
    """Latency of the active model without and with the shadow, per condition and per segment; the shadow's own."""
    latency: dict[str, list[float]] = {"without shadow": [], "with shadow": []}
    for captured, lat, _decision in rows:
        for condition, a, b in windows:
            if a <= captured < b and lat is not None:
                latency[condition].append(lat)
    segments = [
        {"condition": c, **_pcts([lat for cap, lat, _d in rows if a <= cap < b and lat is not None])}
        for c, a, b in windows
    ]
    out = {cond: _pcts(vals) for cond, vals in latency.items()}
    base, shadow = out["without shadow"], out["with shadow"]
    ratio = round(shadow["p99"] / base["p99"], 3) if base.get("p99") and shadow.get("p99") else None
    return {
        "active_latency_ms": out,
        "p99_ratio_with_to_without": ratio,
        "shadow_judged": report.judged,
        "shadow_compared": report.compared,
        "shadow_skipped": counters.get("shadow_skipped", 0),
        "candidate_infer_ms": report.candidate_infer_ms,
        "line_agreement": report.line_agreement,
        "verdicts": counters.get("verdicts", 0),
        "errors": counters.get("error", 0),
        "segments": segments,
    }


def run_bench(
    package: Path, fps: float = 20.0, segment_s: float = 20.0, rounds: int = 3, workers: int = 1, say=print
) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Alternate ``rounds`` segments without and with the shadow candidate; returns the figures."""
    folder = Path(tempfile.mkdtemp(prefix="shadow-bench-"))
    candidate_dir = folder / "candidate"
    shutil.copytree(package, candidate_dir)
    path = _station_file(folder, package, fps, workers)
    cfg = load_config(path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "inspector.cli", "station", "run", "-c", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=(folder / "supervisor.log").open("wb"),
        start_new_session=True,
    )
    try:
        client = _join_started_station(cfg, proc, folder / "supervisor.log")
        rows, windows, report, counters = _measure(cfg, client, candidate_dir, rounds, segment_s, say)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    result = {
        "fps": fps,
        "segment_s": segment_s,
        "rounds": rounds,
        "workers": workers,
        **_figures(rows, windows, report, counters),
        "package": str(package),
    }
    shutil.rmtree(folder, ignore_errors=True)
    return result


def _measure(
    cfg: StationConfig, client: Any, candidate_dir: Path, rounds: int, segment_s: float, say: Callable[[str], None]
) -> tuple[list[Any], list[tuple[str, float, float]], Any, dict[str, int]]:
    """On the running station: register the candidate, warm up, alternate the segments, read back the verdicts,
    the shadow report and the station's counters."""
    from inspector.runtime.package import load_package
    from inspector.store.db import open_store
    from inspector.store.models import VerdictRow
    from inspector.store.records import register_model
    from inspector.store.shadow import shadow_report

    _wait_worker(cfg, client)
    store = open_store(cfg)
    pkg = load_package(candidate_dir)
    version = f"{pkg.version}-shadow"
    register_model(store, version, str(candidate_dir), pkg.package_sha256, {}, "bench", ModelStatus.GATED_PASS)
    names = Names(cfg.redis.prefix, cfg.station.id)
    say(f"warming up the station for {STATION_WARMUP_S:.0f} s (not measured)")
    time.sleep(STATION_WARMUP_S)
    windows = _alternate(cfg, client, store, version, rounds, segment_s, say)
    client.delete(names.shadow_model)
    time.sleep(1.0)
    with store.session() as s:
        rows = list(s.execute(select(VerdictRow.captured_at, VerdictRow.latency_ms, VerdictRow.decision)))
    report = shadow_report(store, version, max_differences=0)
    counters = {k.decode(): int(v) for k, v in client.hgetall(names.counters).items()}
    return rows, windows, report, counters


def render(result: dict[str, object]) -> Table:
    t = Table(
        title=f"active verdict latency, capture -> decision (ms), camera at {result['fps']} fps, "
        f"{result['rounds']} interleaved rounds"
    )
    for col in ("condition", "frames", "p50", "p99", "mean"):
        t.add_column(col)
    for cond, d in result["active_latency_ms"].items():  # type: ignore[union-attr]
        t.add_row(cond, str(d.get("n")), str(d.get("p50", "-")), str(d.get("p99", "-")), str(d.get("mean", "-")))
    t.caption = (
        f"p99 with/without: {result['p99_ratio_with_to_without']}  |  shadow judged {result['shadow_judged']} "
        f"(skipped {result['shadow_skipped']}), line agreement {result['line_agreement']}, candidate model "
        f"time p50 {result['candidate_infer_ms'].get('p50')} ms"
    )  # type: ignore[union-attr]
    return t


def main(
    package: Path | None = typer.Option(None, help="Active package (default: the demo's, trained on first use)."),
    fps: float = typer.Option(20.0, help="Camera rate."),
    segment_s: float = typer.Option(20.0, help="Seconds per segment."),
    rounds: int = typer.Option(3, help="Interleaved rounds (each: one segment without, one with shadow)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Active verdict latency with and without a shadow candidate, side by side in one run."""
    console = Console(stderr=as_json)
    if package is None:
        from inspector.demo.models import ensure_demo_package

        package = ensure_demo_package(load_config(None), None, console)
    result = run_bench(package, fps, segment_s, rounds, say=lambda line: console.print(line))
    for seg in result["segments"]:  # type: ignore[union-attr]
        console.print(
            f"  {seg['condition']:>15}: {seg.get('n')} frames, p50 {seg.get('p50')} ms, p99 {seg.get('p99')} ms"
        )
    if as_json:
        print(json.dumps(result))
    else:
        console.print(render(result))


if __name__ == "__main__":  # pragma: no cover
    typer.run(main)
