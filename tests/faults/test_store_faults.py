"""The database and the disk fail under a running station: nothing is lost, and the line keeps its verdicts.

- silent PostgreSQL death (a pausable TCP proxy stops forwarding, every socket stays open);
- PostgreSQL outage (the proxy closes every connection and refuses new ones), the worker STARTING during it;
- full disk (the data folder is a small tmpfs, filled to the last byte mid-run);
- read-only data folder (a tmpfs mounted read-only when the worker starts, read-write again later).

Each runs one recording worker process, a paced camera and ``inspector status`` polls; then checks that the
line kept getting verdicts during the fault, that status turned unhealthy within ``store.stall_s`` (+ poll
slack), that after the fault every verdict has its row and every frame the samplers pick has its review item
and archived image (recomputed from the verdicts stream with the station's own samplers), that SIGTERM
finished within its bound, and ends with the reconciliation.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from sqlalchemy import select

from inspector.archive import Archive
from inspector.contracts.config import StationConfig
from inspector.contracts.names import Names
from inspector.review.samplers import choose, default_samplers
from inspector.status import station_status
from inspector.store import open_store
from inspector.store.models import ReviewItemRow, VerdictRow
from inspector.store.testing import drop_schema
from tests.faults.harness import Camera, frame_pool, spawn_worker, station, wait_for, wait_settled, write_config
from tests.faults.proxy import PausableProxy
from tests.faults.reconcile import read_verdict_entries, reconcile

pytestmark = pytest.mark.faults
STALL_S = 3.0
FPS = 10.0
FAULT_S = 8.0
REVIEW_ALL = {
    "audit_pass_one_in": 1,
    "limits": {"per_minute": 1_000_000, "per_hour": 10_000_000, "per_day": 100_000_000},
}
STORE_BOUNDS = {
    "stall_s": STALL_S,
    "connect_timeout_s": 2,
    "statement_timeout_ms": 2000,
    "lock_timeout_ms": 1000,
    "keepalive_idle_s": 2,
    "keepalive_interval_s": 1,
    "keepalive_count": 2,
    "flush_ms": 100,
    "reclaim_idle_ms": 3000,
    "stop_timeout_s": 5,
}


@dataclass
class Figures:
    verdicts_at_fault: int = 0
    verdicts_at_recovery: int = 0
    unhealthy_after_s: float | None = None
    healthy_before: bool = False
    catch_up_s: float | None = None
    stop_s: float | None = None
    rows_missing: int = -1
    review_expected: int = 0
    review_missing: int = -1
    images_missing: int = -1
    log: str = ""
    stall_lines: list[str] = field(default_factory=list)


def _camera_alive(client: redis.Redis, cfg: StationConfig) -> None:
    client.set(Names(cfg.redis.prefix, cfg.station.id).camera_heartbeat(cfg.camera.id), "test", px=3000)


def _expected_review(client: redis.Redis, cfg: StationConfig) -> set[str]:
    samplers = default_samplers(cfg.review, cfg.policy)
    return {
        v.frame_id
        for v, t in read_verdict_entries(client, Names(cfg.redis.prefix, cfg.station.id))
        if choose(samplers, v, t) is not None
    }


def _store_state(cfg: StationConfig, direct_url: str | None) -> tuple[set[str], dict[str, str | None]]:
    store = open_store(direct_url or cfg, schema=cfg.store.db_schema) if direct_url else open_store(cfg)
    try:
        with store.session() as s:
            rows = set(s.scalars(select(VerdictRow.frame_id)))
            items = {fid: sha for fid, sha in s.execute(select(ReviewItemRow.frame_id, ReviewItemRow.image_sha256))}
        return rows, items
    finally:
        store.close()


def run_fault(
    cfg: StationConfig,
    client: redis.Redis,
    tmp_path: Path,
    fault_on: Callable[[], None],
    fault_off: Callable[[], None],
    start_during_fault: bool,
    direct_url: str | None = None,
) -> Figures:
    names = Names(cfg.redis.prefix, cfg.station.id)
    fig = Figures()
    config = write_config(cfg, tmp_path / "cfg")
    if start_during_fault:
        fault_on()
    worker = spawn_worker(config, "w0", tmp_path / "logs", idle_exit=120, record=True)
    cam = Camera(cfg, frame_pool(), FPS)
    try:
        assert wait_for(
            lambda: (
                len(list(client.scan_iter(match=names.consumer_heartbeat_pattern))) >= 2
                and bool(list(client.scan_iter(match=names.heartbeat_pattern)))
            ),
            90,
        ), "worker and its consumers did not start: " + worker.tail()
        cam.start(duration_s=(0 if start_during_fault else 3) + FAULT_S + 3)
        if not start_during_fault:
            time.sleep(3)
            _camera_alive(client, cfg)
            fig.healthy_before = bool(station_status(cfg)["healthy"])
            fault_on()
        t_fault = time.monotonic()
        fig.verdicts_at_fault = int(client.xlen(names.verdicts))
        while time.monotonic() - t_fault < FAULT_S:
            _camera_alive(client, cfg)
            st = station_status(cfg)
            if fig.unhealthy_after_s is None and st["stalled"] and not st["healthy"]:
                fig.unhealthy_after_s = round(time.monotonic() - t_fault, 2)
                fig.stall_lines = list(st["stalled"])  # type: ignore[arg-type]
            time.sleep(0.2)
        fig.verdicts_at_recovery = int(client.xlen(names.verdicts))
        fault_off()
        t_back = time.monotonic()
        cam.join(60)
        assert wait_settled(client, cfg, timeout=60), "frames still pending: " + worker.tail()
        expected = _expected_review(client, cfg)
        stream_ids = {v.frame_id for v, _ in read_verdict_entries(client, names)}

        def caught_up() -> bool:
            try:
                rows, items = _store_state(cfg, direct_url)
            except Exception:  # noqa: BLE001 - the database may still be coming back
                return False
            return stream_ids <= rows and expected <= set(items) and client.xlen(names.review_inbox) == 0

        if wait_for(caught_up, 90, step=0.5):
            fig.catch_up_s = round(time.monotonic() - t_back, 2)
        rows, items = _store_state(cfg, direct_url)
        archive = Archive.for_data_dir(cfg.data_dir)
        fig.rows_missing = len(stream_ids - rows)
        fig.review_expected = len(expected)
        fig.review_missing = len(expected - set(items))
        fig.images_missing = sum(1 for sha in items.values() if not sha or not archive.exists(sha))
        _camera_alive(client, cfg)
        assert wait_for(lambda: not station_status(cfg)["stalled"], 15), station_status(cfg)["stalled"]
        t0 = time.monotonic()
        worker.proc.terminate()
        worker.proc.wait(60)
        fig.stop_s = round(time.monotonic() - t0, 2)
    finally:
        cam.stop()
        if worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait(10)
        fault_off()
    fig.log = worker.tail(200_000)
    print("STORE_FAULT", {k: v for k, v in fig.__dict__.items() if k != "log"})
    reconcile(client, names, cam.ledger, deadline_s=cfg.line.deadline_ms / 1000)
    return fig


def check(fig: Figures, cfg: StationConfig) -> None:
    assert fig.verdicts_at_recovery - fig.verdicts_at_fault >= FPS * FAULT_S * 0.5, (
        "the line lost its verdicts during the fault"
    )
    assert fig.unhealthy_after_s is not None and fig.unhealthy_after_s <= STALL_S + 2.5, (
        f"status did not turn unhealthy within stall_s: {fig.unhealthy_after_s}"
    )
    assert fig.catch_up_s is not None, "the store did not catch up after the fault"
    assert (fig.rows_missing, fig.review_missing, fig.images_missing) == (0, 0, 0)
    assert fig.review_expected > FPS * 3, "too few review picks to prove anything"
    bound = 2 * cfg.store.stop_timeout_s + 10
    assert fig.stop_s is not None and fig.stop_s < bound, f"SIGTERM took {fig.stop_s} s (bound {bound} s)"


# -- PostgreSQL ------------------------------------------------------------------------------------------


@pytest.fixture
def pg_station(
    redis_url: str, tmp_path: Path, tiny_package: Path
) -> Iterator[tuple[StationConfig, PausableProxy, str]]:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgresql"):
        pytest.skip("needs PostgreSQL at DATABASE_URL (e.g. postgresql+psycopg2://postgres@127.0.0.1:5432/test)")
    proxy = PausableProxy.for_url(url)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    cfg = station(
        redis_url,
        tmp_path / "data",
        tiny_package,
        review=REVIEW_ALL,
        store={"url": proxy.url(url), "db_schema": schema, **STORE_BOUNDS},
    )
    try:
        yield cfg, proxy, url
    finally:
        proxy.close()
        drop_schema(url, schema)


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["silent_death", "outage_at_start"])
def test_postgres_fault(
    mode: str, pg_station: tuple[StationConfig, PausableProxy, str], redis_client: redis.Redis, tmp_path: Path
) -> None:
    cfg, proxy, url = pg_station
    fault_on = proxy.pause if mode == "silent_death" else proxy.down
    fig = run_fault(
        cfg, redis_client, tmp_path, fault_on, proxy.resume, start_during_fault=mode != "silent_death", direct_url=url
    )
    if mode == "silent_death":
        assert fig.healthy_before, "status was not healthy before the fault"
        assert "cut" in fig.log, "the watchdog did not cut the silently dead connection"
    check(fig, cfg)


# -- the disk ----------------------------------------------------------------------------------------------


def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {res.stderr.decode().strip()}")


@pytest.fixture
def disk_station(redis_url: str, tmp_path: Path, tiny_package: Path) -> Iterator[StationConfig]:
    data = tmp_path / "data"
    _mount_tmpfs(data, "64m")
    cfg = station(redis_url, data, tiny_package, review=REVIEW_ALL, store=STORE_BOUNDS)
    try:
        yield cfg
    finally:
        subprocess.run(["umount", "-l", str(data)], capture_output=True)


def _fill(folder: Path) -> None:
    """Write a file until the tmpfs has no byte left."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (1 << 20, 4096, 512, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                continue
    finally:
        os.close(fd)


def test_full_disk(disk_station: StationConfig, redis_client: redis.Redis, tmp_path: Path) -> None:
    cfg = disk_station
    data = Path(cfg.station.data_dir)
    fig = run_fault(
        cfg,
        redis_client,
        tmp_path,
        lambda: _fill(data),
        lambda: (data / "filler").unlink(missing_ok=True),
        start_during_fault=False,
    )
    assert "full (no space left)" in fig.log and str(data) in fig.log, "the full disk was not named with its path"
    check(fig, cfg)


def test_read_only_data_folder(disk_station: StationConfig, redis_client: redis.Redis, tmp_path: Path) -> None:
    cfg = disk_station
    data = Path(cfg.station.data_dir)
    open_store(cfg).close()  # a station that ran before: its database exists

    def remount(mode: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{mode}", str(data)], check=True, capture_output=True)

    fig = run_fault(cfg, redis_client, tmp_path, lambda: remount("ro"), lambda: remount("rw"), start_during_fault=True)
    assert "read-only" in fig.log and str(data) in fig.log, "the read-only folder was not named with its path"
    check(fig, cfg)
