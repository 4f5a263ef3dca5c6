"""``inspector demo``: a whole station in one process, offline, with no configuration.

Embedded Redis, a camera replaying parts (synthetic washers made on the fly, or a folder given with
``--data``), inspection workers, the verdict recorder, and a live status table. Models are trained on
the first run and reused afterwards.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import redis
from rich.console import Console
from rich.live import Live
from rich.table import Table

from inspector.bus.connection import connect
from inspector.bus.streams import StationBus, decode_message
from inspector.camera.publisher import CameraPublisher
from inspector.camera.sources import open_source
from inspector.contracts.config import StationConfig
from inspector.contracts.messages import Verdict
from inspector.metrics import percentile
from inspector.worker import Worker, load_model

log = logging.getLogger(__name__)


@dataclass
class VerdictTally:
    """Reads the verdicts stream from where the demo started and tallies what the line saw."""

    client: redis.Redis
    stream: str
    last_id: str = "$"
    frames: set[str] = field(default_factory=set)
    verdicts: int = 0
    duplicates: int = 0
    decisions: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    truth_vs_decision: Counter[tuple[str, str]] = field(default_factory=Counter)
    first_t: float | None = None
    last_t: float | None = None
    last: Verdict | None = None

    def start(self) -> None:
        info = self.client.xinfo_stream(self.stream) if self.client.exists(self.stream) else None
        self.last_id = info["last-generated-id"].decode() if info else "0-0"

    def poll(self, block_ms: int = 200) -> int:
        resp = self.client.xread({self.stream: self.last_id}, count=1000, block=block_ms)
        n = 0
        for _s, entries in resp or []:
            for eid, fields in entries:
                self.last_id = eid.decode()
                v = decode_message(fields[b"m"])
                assert isinstance(v, Verdict)
                self._add(v)
                n += 1
        return n

    def _add(self, v: Verdict) -> None:
        now = time.monotonic()
        self.first_t = self.first_t or now
        self.last_t = now
        self.verdicts += 1
        if v.frame_id in self.frames:
            self.duplicates += 1
            return
        self.frames.add(v.frame_id)
        self.decisions[v.decision.value] += 1
        if v.latency_ms is not None:
            self.latencies.append(v.latency_ms)
        if v.truth:
            self.truth_vs_decision[(v.truth, v.decision.value)] += 1
        self.last = v

    def fps(self, started: float) -> float:
        if not self.last_t:
            return 0.0
        return len(self.frames) / max(1e-6, self.last_t - started)


def ensure_demo_models(cfg: StationConfig, data: Path | None, console: Console) -> Path:
    """The demo's model package: trained on the first run (real models when the trainer is installed)."""
    from inspector.demo_models import ensure_demo_package

    return ensure_demo_package(cfg, data, console)


def status_table(tally: VerdictTally, published: int, started: float, model_version: str) -> Table:
    t = Table(title=f"inspection station demo — model {model_version}")
    for col in ("frames", "pass", "fail", "review", "error", "fps", "latency p50 ms", "latency p99 ms"):
        t.add_column(col, justify="right")
    d = tally.decisions
    t.add_row(
        f"{len(tally.frames)}/{published}", str(d["PASS"]), str(d["FAIL"]), str(d["REVIEW"]), str(d["ERROR"]),
        f"{tally.fps(started):.1f}", f"{percentile(tally.latencies[-2000:], 50):.1f}",
        f"{percentile(tally.latencies[-2000:], 99):.1f}",
    )
    if tally.last is not None:
        v = tally.last
        t.caption = f"last part {v.part_id}: {v.decision.value} {v.defect_class or ''} ({'; '.join(v.reasons)})"
    return t


def run_demo(cfg: StationConfig, frames: int | None, headless: bool, as_json: bool, data: Path | None,
             workers: int = 1, console: Console | None = None) -> dict[str, object]:
    console = console or Console(stderr=as_json)
    package = ensure_demo_models(cfg, data, console)
    cfg.model.package = package
    client = connect(cfg)
    bus = StationBus(client, cfg)
    pool = [Worker(cfg, client, load_model(cfg, package), name=f"demo-worker-{i}") for i in range(workers)]
    tally = VerdictTally(client, bus.names.verdicts)
    tally.start()
    threads = [threading.Thread(target=w.run, name=w.name, daemon=True) for w in pool]
    for th in threads:
        th.start()
    camera = CameraPublisher(bus, open_source(cfg.camera))
    cam_thread = threading.Thread(target=camera.run, kwargs={"max_frames": frames}, daemon=True)
    started = time.monotonic()
    cam_thread.start()
    try:
        _watch(tally, camera, cam_thread, frames, started, pool[0].model.version, as_json or headless, console)
    except KeyboardInterrupt:
        console.print("stopping…")
    finally:
        camera.stop()
        for w in pool:
            w.stop()
        for th in threads:
            th.join(10)
    summary = _summary(tally, camera.seq, started, pool)
    if as_json:
        print(json.dumps(summary))
    else:
        console.print(status_table(tally, camera.seq, started, pool[0].model.version))
    return summary


def _watch(tally: VerdictTally, camera: CameraPublisher, cam_thread: threading.Thread, frames: int | None,
           started: float, version: str, quiet: bool, console: Console) -> None:
    def done() -> bool:
        if cam_thread.is_alive():
            return False
        return len(tally.frames) >= camera.seq or time.monotonic() - (tally.last_t or started) > 10

    if quiet:
        while not done():
            tally.poll()
        return
    with Live(status_table(tally, camera.seq, started, version), console=console, refresh_per_second=4) as live:
        while frames is None or not done():
            tally.poll()
            live.update(status_table(tally, camera.seq, started, version))


def _summary(tally: VerdictTally, published: int, started: float, pool: list[Worker]) -> dict[str, object]:
    return {
        "frames": published,
        "verdicts": tally.verdicts,
        "lost": published - len(tally.frames),
        "duplicates": tally.duplicates,
        "fps": round(tally.fps(started), 2),
        "latency_ms_p50": round(percentile(tally.latencies, 50), 2),
        "latency_ms_p99": round(percentile(tally.latencies, 99), 2),
        "decisions": dict(tally.decisions),
        "truth_vs_decision": {f"{t}->{d}": n for (t, d), n in sorted(tally.truth_vs_decision.items())},
        "model_version": pool[0].model.version,
        "workers": len(pool),
        "stage_latency_ms": pool[0].latency.percentiles(),
    }
