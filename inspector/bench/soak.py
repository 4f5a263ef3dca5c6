"""Soak benchmark: run a real station (embedded redis-server, ``inspector camera`` and ``inspector worker`` as
processes, tiny numpy model) at a given rate with retention set, sample memory and disk, extrapolate per day.

    python -m inspector.bench.soak --fps 20 --duration 300 --json

Figures: worker RSS and Redis ``used_memory`` over time (flat after warm-up when retention holds), database and
archive size against their bounds, the measured cost of one verdict row, one archived image, one verdict-stream
entry and one done-key, and from those the disk and memory a station needs per day at ``--fps``, with and
without retention. ``tests/test_soak.py`` (``-m slow``) asserts on the same report.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import redis
import typer
import yaml

from inspector.contracts.names import Names

DAY = 86_400
CLI = [sys.executable, "-c", "from inspector.cli import app; app()"]
STATION = "soak"


def _du(folder: Path) -> tuple[int, int]:
    """(bytes, files) under ``folder``."""
    sizes = [p.stat().st_size for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
    return sum(sizes), len(sizes)


def _db_stats(db: Path) -> tuple[int, int, int]:
    """(file bytes incl. WAL, verdict rows, review items ever made)."""
    size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file())
    if not db.is_file():
        return size, 0, 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
            rows = c.execute("SELECT count(*) FROM verdicts").fetchone()[0]
            items = c.execute("SELECT coalesce(max(id), 0) FROM review_items").fetchone()[0]
        return size, int(rows), int(items)
    except sqlite3.Error:
        return size, 0, 0


def _station_yaml(folder: Path, url: str, package: Path, fps: float, retention: dict[str, Any]) -> Path:
    cfg = {
        "station": {"id": STATION, "data_dir": str(folder / "station")},
        "redis": {"url": url, "appendfsync": "everysec"},
        "camera": {"fps": fps, "source": {"kind": "synthetic", "defect_rate": 0.2}},
        "model": {"package": str(package)},
        "retention": retention,
    }
    path = folder / "station.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _trend(values: list[float]) -> float:
    """Relative change from the first third to the last third (medians) of the samples."""
    k = max(1, len(values) // 3)
    first, last = statistics.median(values[:k]), statistics.median(values[-k:])
    return (last - first) / first if first else 0.0


def run_soak(
    fps: float = 20.0,
    duration_s: float = 300.0,
    warmup_s: float | None = None,
    sample_s: float = 5.0,
    retention: dict[str, Any] | None = None,
    folder: Path | None = None,
) -> dict[str, Any]:
    """Run the station for ``duration_s`` and return the report (see the module docstring)."""
    from inspector.bus.connection import EmbeddedRedis

    retention = {
        "interval_s": 5,
        "stream_max_age_s": 60,
        "verdict_rows_max": 3000,
        "archive_max_bytes": 2_000_000,
        **(retention or {}),
    }
    warmup_s = warmup_s if warmup_s is not None else min(duration_s / 2, retention["stream_max_age_s"] + 30)
    folder = Path(folder or tempfile.mkdtemp(prefix="inspector-soak-"))
    server = EmbeddedRedis(folder / "redis-owner", appendfsync="everysec")
    url = server.start()
    names = Names("insp", STATION)
    r = redis.Redis.from_url(url)
    procs: list[subprocess.Popen[bytes]] = []
    samples: list[dict[str, Any]] = []
    try:
        worker = _start_station(folder, url, fps, retention, procs)
        t0 = time.monotonic()
        while (t := time.monotonic() - t0) < duration_s:
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError(
                        f"station process {p.args[-3:]} exited with {p.returncode}; see {folder}/processes.log"
                    )
            samples.append(_sample(r, names, worker, folder / "station", t))
            time.sleep(sample_s)
        # the cost of one entry of each kind, measured on the live server
        stream_bytes = int(r.memory_usage(names.verdicts, samples=0) or 0)
        done_key = next(r.scan_iter(match=names.done("*"), count=1000), None)
        done_bytes = int(r.memory_usage(done_key) or 0) if done_key else 0
    finally:
        _stop(procs)
        server.stop()
    return _report(samples, fps, duration_s, warmup_s, retention, stream_bytes, done_bytes, folder)


def _start_station(
    folder: Path, url: str, fps: float, retention: dict[str, Any], procs: list[subprocess.Popen[bytes]]
) -> subprocess.Popen[bytes]:
    """Start a worker on the tiny package, then the camera, logging to ``processes.log``; each process is added
    to ``procs`` as soon as it starts (the caller stops them). Returns the worker."""
    from inspector.bench.cli import _tiny

    yaml_path = _station_yaml(folder, url, _tiny(folder), fps, retention)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSPECTOR_") or k == "INSPECTOR_SOAK_S"}
    log = (folder / "processes.log").open("ab")
    worker = subprocess.Popen(
        CLI + ["worker", "-c", str(yaml_path), "--name", "soak-w1"], env=env, stdout=log, stderr=log
    )
    procs.append(worker)
    time.sleep(3)  # the worker loads its package before the first part arrives
    procs.append(subprocess.Popen(CLI + ["camera", "-c", str(yaml_path)], env=env, stdout=log, stderr=log))
    return worker


def _sample(
    r: redis.Redis, names: Names, worker: subprocess.Popen[bytes], station_dir: Path, t: float
) -> dict[str, Any]:
    """One sample at ``t`` seconds: the worker's memory, Redis', the database's and the archive's sizes."""
    db_bytes, rows, items = _db_stats(station_dir / "station.db")
    archive_bytes, archive_files = _du(station_dir / "archive")
    mem = r.info("memory")
    return {
        "t": round(t, 1),
        "worker_rss": psutil.Process(worker.pid).memory_info().rss,
        "redis_used": int(mem["used_memory"]),
        "redis_keys": int(r.dbsize()),
        "verdicts_stream": int(r.xlen(names.verdicts)),
        "verdicts": int(r.hget(names.counters, "verdicts") or 0),
        "db_bytes": db_bytes,
        "verdict_rows": rows,
        "review_items_made": items,
        "archive_bytes": archive_bytes,
        "archive_files": archive_files,
    }


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM the station processes, newest first, then wait up to 30 s for each before killing it."""
    for p in procs[::-1]:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs[::-1]:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


def _report(
    samples: list[dict[str, Any]],
    fps: float,
    duration_s: float,
    warmup_s: float,
    retention: dict[str, Any],
    stream_bytes: int,
    done_bytes: int,
    folder: Path,
) -> dict[str, Any]:
    warm = [s for s in samples if s["t"] >= warmup_s] or samples[-1:]
    last = samples[-1]
    rate = last["verdicts"] / max(last["t"], 1e-9)
    entries = max(1, last["verdicts_stream"])
    per_entry = stream_bytes / entries
    peak_rows = max(s["verdict_rows"] for s in samples)
    row_bytes = max(s["db_bytes"] for s in samples) / max(1, peak_rows)
    items = last["review_items_made"]
    image_bytes = last["archive_bytes"] / max(1, last["archive_files"])
    image_rate = items / max(last["t"], 1e-9)
    age = retention["stream_max_age_s"]
    return {
        "fps_target": fps,
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "verdicts_per_s": round(rate, 2),
        "retention": retention,
        "folder": str(folder),
        **_memory_figures(warm, last),
        "db": {
            "rows_end": last["verdict_rows"],
            "rows_max": peak_rows,
            "rows_bound": retention.get("verdict_rows_max"),
            "bytes_max": max(s["db_bytes"] for s in samples),
            "bytes_per_row": round(row_bytes),
        },
        "archive": {
            "bytes_end": last["archive_bytes"],
            "bytes_max": max(s["archive_bytes"] for s in samples),
            "bytes_bound": retention.get("archive_max_bytes"),
            "images_per_s": round(image_rate, 3),
            "bytes_per_image": round(image_bytes),
        },
        "redis_bytes": {"per_verdict_stream_entry": round(per_entry), "per_done_key": done_bytes},
        "per_day_at_fps": {
            "db_mb_without_retention": round(row_bytes * fps * DAY / 1e6),
            "archive_mb_without_retention": round(image_bytes * image_rate * (fps / max(rate, 1e-9)) * DAY / 1e6),
            "done_keys_mb_24h_ttl": round(done_bytes * fps * DAY / 1e6),
            "redis_streams_and_done_mb_with_retention": round((per_entry + done_bytes) * fps * age / 1e6, 1),
        },
        "samples": samples,
    }


def _memory_figures(warm: list[dict[str, Any]], last: dict[str, Any]) -> dict[str, Any]:
    """The worker's and Redis' memory after the warm-up, at the end, and their trend over the warm samples."""
    return {
        "worker_rss_mb": {
            "after_warmup": round(warm[0]["worker_rss"] / 1e6, 1),
            "end": round(last["worker_rss"] / 1e6, 1),
            "trend": round(_trend([s["worker_rss"] for s in warm]), 4),
        },
        "redis_used_mb": {
            "after_warmup": round(warm[0]["redis_used"] / 1e6, 1),
            "end": round(last["redis_used"] / 1e6, 1),
            "min": round(min(s["redis_used"] for s in warm) / 1e6, 1),
            "max": round(max(s["redis_used"] for s in warm) / 1e6, 1),
            "trend": round(_trend([s["redis_used"] for s in warm]), 4),
        },
    }


app = typer.Typer(add_completion=False)


@app.command()
def main(
    fps: float = typer.Option(20.0, help="Camera frames per second."),
    duration: float = typer.Option(300.0, help="Seconds to run."),
    warmup: float | None = typer.Option(None, help="Seconds before flatness is measured (default: stream age + 30 s)."),
    stream_max_age_s: int = typer.Option(60, help="retention.stream_max_age_s of the run."),
    verdict_rows_max: int = typer.Option(3000, help="retention.verdict_rows_max of the run."),
    archive_max_bytes: int = typer.Option(2_000_000, help="retention.archive_max_bytes of the run."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole report as JSON."),
) -> None:
    """Run the station with retention set and print what it needs per day."""
    rep = run_soak(
        fps,
        duration,
        warmup,
        retention={
            "stream_max_age_s": stream_max_age_s,
            "verdict_rows_max": verdict_rows_max,
            "archive_max_bytes": archive_max_bytes,
        },
    )
    if as_json:
        print(json.dumps(rep))
        return
    print(json.dumps({k: v for k, v in rep.items() if k != "samples"}, indent=2))


if __name__ == "__main__":
    app()
