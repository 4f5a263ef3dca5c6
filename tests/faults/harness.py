"""What the fault tests share: station files, worker subprocesses, a paced camera with a ledger, waits, RSS."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import yaml

from inspector.bench.timing import proc_status_kb
from inspector.bus.connection import client_for_url
from inspector.bus.streams import StationBus
from inspector.camera.synthetic import PartFactory
from inspector.contracts.config import StationConfig, parse_config
from inspector.contracts.messages import FrameMeta
from inspector.models.decode import encode_image
from tests.faults.reconcile import CameraLedger

REPO = Path(__file__).resolve().parents[2]


def station(redis_url: str, data_dir: Path, package: Path | None, **sections: dict[str, Any]) -> StationConfig:
    """A station config with a unique id on ``redis_url``; ``sections`` override keys per section."""
    data: dict[str, Any] = {
        "station": {"id": f"f{uuid.uuid4().hex[:10]}", "data_dir": str(data_dir)},
        "redis": {"url": redis_url, "reconnect": {"give_up_s": 30}},
        "worker": {"reclaim_idle_ms": 600, "max_batch": 4, "heartbeat_ttl_s": 2},
        "model": {"package": str(package) if package else None},
    }
    for name, over in sections.items():
        data.setdefault(name, {}).update(over)
    return parse_config(data, environ={})


def write_config(cfg: StationConfig, folder: Path, name: str = "station.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return path


@dataclass
class WorkerProc:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, n: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.is_file() else ""


def spawn_worker(config: Path, name: str, logs: Path, idle_exit: float = 30.0, record: bool = False) -> WorkerProc:
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    fh = open(log, "ab")  # noqa: SIM115 - the child owns it
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "inspector.cli",
            "worker",
            "--config",
            str(config),
            "--name",
            name,
            "--idle-exit",
            str(idle_exit),
            *(("--record",) if record else ("--no-record", "--no-review")),
        ],
        stdout=fh,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        env=env,
    )
    fh.close()
    return WorkerProc(name, proc, log)


def stop_all(workers: list[WorkerProc], timeout: float = 30) -> None:
    for w in workers:
        if w.proc.poll() is None:
            w.proc.terminate()
    for w in workers:
        try:
            w.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            w.proc.kill()
            w.proc.wait(10)


def frame_pool(n: int = 16, size: int = 224, seed: int = 5, quality: int = 90) -> list[tuple[str, bytes]]:
    """Pre-encoded (truth, jpeg) frames, so the camera costs little CPU."""
    f = PartFactory(seed=seed, size=size)
    out = []
    for _ in range(n):
        kind = f.sample_kind(0.3)
        out.append((kind, encode_image(f.make(kind), "jpeg", quality)))
    return out


@dataclass
class Camera:
    """Publishes frames at ``fps`` from a pool on its own client; every publish goes to the ledger."""

    cfg: StationConfig
    pool: list[tuple[str, bytes]]
    fps: float
    ledger: CameraLedger = field(default_factory=CameraLedger)
    give_up_s: float = 1.0
    errors: list[str] = field(default_factory=list)
    stop_event: threading.Event = field(default_factory=threading.Event)
    seq: int = 0
    missed: int = 0
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    _thread: threading.Thread | None = None

    def _bus(self) -> StationBus:
        rcfg = self.cfg.redis.model_copy(deep=True)
        rcfg.reconnect.give_up_s = self.give_up_s
        rcfg.reconnect.max_s = min(rcfg.reconnect.max_s, self.give_up_s)
        rcfg.socket_timeout_s = 1.0
        return StationBus(client_for_url(self.cfg.redis.url or "", rcfg), self.cfg)

    def publish_one(self, bus: StationBus) -> None:
        truth, data = self.pool[self.seq % len(self.pool)]
        meta = FrameMeta(
            station=self.cfg.station.id,
            camera="cam0",
            seq=self.seq,
            part_id=f"cam0-{self.run_id}-{self.seq:07d}",
            captured_at=time.time(),
            encoding="jpeg",
            truth=truth,
        )
        self.seq += 1
        try:
            bus.publish_frame(meta, data)
        except (redis.RedisError, OSError) as err:
            self.ledger.failed(meta)  # the camera could not publish: the part is rejected at the line
            self.errors.append(type(err).__name__)
            return
        self.ledger.ok(meta)

    def _missed(self, n: int, first_t: float, period: float) -> None:
        wall = time.time() - (time.monotonic() - first_t)
        for k in range(n):
            meta = FrameMeta(
                station=self.cfg.station.id,
                camera="cam0",
                seq=self.seq,
                part_id=f"cam0-{self.run_id}-missed",
                captured_at=wall + k * period,
                encoding="jpeg",
            )
            self.seq += 1
            self.ledger.failed(meta)
            self.missed += 1

    def run(self, duration_s: float | None = None, frames: int | None = None) -> None:
        bus = self._bus()
        period = 1.0 / self.fps
        start = next_t = time.monotonic()
        while not self.stop_event.is_set():
            if duration_s is not None and time.monotonic() - start >= duration_s:
                break
            if frames is not None and self.seq >= frames:
                break
            self.publish_one(bus)
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                self.stop_event.wait(delay)
            else:  # the publish stalled (Redis down): parts that passed meanwhile were never sent
                self._missed(int(-delay / period), next_t, period)
                next_t = time.monotonic()
        bus.r.close()

    def start(self, duration_s: float | None = None, frames: int | None = None) -> None:
        self._thread = threading.Thread(
            target=self.run, kwargs={"duration_s": duration_s, "frames": frames}, daemon=True
        )
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(10)


def _stream_last_id(client: redis.Redis, stream: str) -> str | None:
    try:
        info = client.xinfo_stream(stream)
    except redis.ResponseError:
        return None
    last = info.get("last-generated-id")
    return last.decode() if isinstance(last, bytes) else last


def wait_settled(client: redis.Redis, cfg: StationConfig, timeout: float = 60, quiet_s: float = 1.0) -> bool:
    """Wait until the inspection group has read every frame entry and has nothing pending, for ``quiet_s``."""
    bus = StationBus(client, cfg)
    deadline = time.monotonic() + timeout
    quiet_since: float | None = None
    while time.monotonic() < deadline:
        try:
            groups = {
                g["name"].decode() if isinstance(g["name"], bytes) else g["name"]: g
                for g in client.xinfo_groups(bus.names.frames)
            }
            g = groups.get(cfg.worker.group)
            last = _stream_last_id(client, bus.names.frames)
            done = g is not None and g["pending"] == 0 and _id(g["last-delivered-id"]) == last
        except (redis.RedisError, OSError):
            done = False
        if done:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= quiet_s:
                return True
        else:
            quiet_since = None
        time.sleep(0.1)
    return False


def _id(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def proc_mem_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process in kB: the bench's own reader."""
    return proc_status_kb(pid)


def wait_for(predicate, timeout: float, step: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def verdict_count(client: redis.Redis, cfg: StationConfig) -> int:
    bus = StationBus(client, cfg)
    try:
        return int(client.xlen(bus.names.verdicts))
    except (redis.RedisError, OSError):
        return -1


# ------------------------------------------------- onto the line only through the registry (fault tests)
def renamed_package(pkg: Path, name: str) -> Path:
    """The package with a new, unique version in its manifest (re-hashed: still self-consistent)."""
    from inspector.contracts.manifest import Manifest
    from inspector.runtime.package import write_manifest

    m = Manifest.model_validate_json((pkg / "manifest.json").read_text())
    write_manifest(pkg, m.model_copy(update={"version": f"{name}-{time.time_ns()}"}))
    return pkg


def promote_through_registry(
    cfg: StationConfig, client: redis.Redis, store: Any, pkg: Path, actor: str = "maint"
) -> str:
    """Register ``pkg`` with a passing gate report, approve it and promote it: the only way onto the line."""
    from inspector.contracts.lifecycle import GateReport, GateRow, Role
    from inspector.runtime.package import load_package
    from jobs.registry import approve, promote, register_candidate

    package = load_package(pkg)
    gate = GateReport(
        passed=True,
        evaluated_at=time.time(),
        frame_sets={"heldout": 100},
        rows=[GateRow(gate="errors", metric="errors", frame_set="heldout", candidate=0, limit=0, passed=True)],
    )
    register_candidate(store, package.version, str(pkg), package.package_sha256, gate, actor)
    approve(store, package.version, actor, Role.MAINTENANCE)
    return promote(cfg, client, store, package.version, actor, role=Role.MAINTENANCE)
