"""The station supervisor (`inspector station run`) under power cuts and SIGTERMs, on its own embedded Redis.

Power cut: the supervisor's whole process tree (embedded Redis included) is SIGKILLed mid-stream, then the
supervisor and two extra standalone `inspector worker`s start at the same instant, 5 times: exactly one
redis-server runs on the data folder, the extra workers join it, and every frame published has exactly one
outcome. SIGTERM: of each station process in turn (Redis included), the others keep running and the
supervisor restarts it; of the supervisor, everything is gone within 15 s.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from inspector.bus.connection import EmbeddedRedis, client_for_url
from inspector.bus.streams import decode_message
from inspector.contracts.config import StationConfig, parse_config
from inspector.contracts.messages import FrameMeta
from inspector.contracts.names import Names
from inspector.station.supervisor import STATE_FILE
from tests.faults.harness import REPO, Camera, WorkerProc, frame_pool, spawn_worker, stop_all, wait_for, wait_settled
from tests.faults.reconcile import CameraLedger, reconcile

pytestmark = pytest.mark.faults


def _station(
    tmp_path: Path, package: Path, processes: list[str], workers: int, **over: Any
) -> tuple[StationConfig, Path]:
    data: dict[str, Any] = {
        "station": {"id": f"sup{os.getpid()}", "data_dir": str(tmp_path / "data")},
        "redis": {"reconnect": {"give_up_s": 30}},
        "worker": {"reclaim_idle_ms": 600, "max_batch": 4, "heartbeat_ttl_s": 2},
        "model": {"package": str(package)},
        "camera": {"fps": 10},
        "review": {"enabled": False},
        "supervisor": {
            "processes": processes,
            "workers": workers,
            "restart_initial_s": 0.2,
            "restart_max_s": 2,
            "healthy_after_s": 5,
            "stop_timeout_s": 10,
        },
    }
    for name, section in over.items():
        data.setdefault(name, {}).update(section)
    cfg = parse_config(data, environ={})
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return cfg, path


def _start_supervisor(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "inspector.cli", "station", "run", "--config", str(config)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
        )


def _redis_servers(data_dir: Path) -> list[psutil.Process]:
    """Live redis-server processes serving this data folder, whatever their port: redis-server rewrites its
    command line, but it runs in its --dir (zombies do not serve)."""
    want = str((data_dir / "redis").resolve())
    out = []
    for p in psutil.process_iter(["name", "status"]):
        try:
            if (
                "redis-server" in (p.info["name"] or "")
                and p.info["status"] != psutil.STATUS_ZOMBIE
                and p.cwd() == want
            ):
                out.append(p)
        except psutil.Error:
            continue
    return out


def _station_procs(data_dir: Path, config: Path) -> list[psutil.Process]:
    """Every live process of this station: its redis-server and anything started with its station file."""
    procs = list(_redis_servers(data_dir))
    marks = {str(config), str(config.resolve())}
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if marks & set(p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE:
                procs.append(p)
        except psutil.Error:
            continue
    return procs


def _power_cut(sup: subprocess.Popen[bytes], extras: list[WorkerProc], data_dir: Path, config: Path) -> None:
    """SIGKILL the supervisor's whole tree, the extra workers and the embedded Redis, all at once."""
    victims: list[psutil.Process] = []
    for pid in [sup.pid] + [w.proc.pid for w in extras]:
        try:
            root = psutil.Process(pid)
            victims += [root, *root.children(recursive=True)]
        except psutil.Error:
            pass
    victims += _station_procs(data_dir, config)
    for p in victims:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    sup.wait(10)
    for w in extras:
        w.proc.wait(10)
    assert wait_for(lambda: not _station_procs(data_dir, config), 10), (
        f"still running after the power cut: {_station_procs(data_dir, config)}"
    )


def _state(data_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((data_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _fast_client(url: str, cfg: StationConfig):  # type: ignore[no-untyped-def]
    rcfg = cfg.redis.model_copy(deep=True)
    rcfg.reconnect.give_up_s, rcfg.reconnect.max_s, rcfg.socket_timeout_s = 1.0, 0.5, 1.0
    return client_for_url(url, rcfg)


def _verdicts(client, names: Names) -> int:  # type: ignore[no-untyped-def]
    try:
        return int(client.xlen(names.verdicts))
    except Exception:  # noqa: BLE001 - Redis down during the cut
        return -1


def _heartbeat(client, names: Names, consumer: str) -> bool:  # type: ignore[no-untyped-def]
    try:
        return bool(client.exists(names.heartbeat(consumer)))
    except Exception:  # noqa: BLE001
        return False


def test_power_cut_restart_with_extra_workers_keeps_one_redis(tmp_path: Path, tiny_package: Path) -> None:
    cfg, config = _station(tmp_path, tiny_package, ["worker"], workers=2)
    data_dir, logs = Path(cfg.station.data_dir), tmp_path / "logs"
    logs.mkdir()
    names = Names(cfg.redis.prefix, cfg.station.id)
    sup = _start_supervisor(config, logs / "supervisor.log")
    extras: list[WorkerProc] = []
    camera: Camera | None = None
    try:
        url_file = data_dir / "redis" / "url"
        assert wait_for(lambda: url_file.is_file(), 60), (logs / "supervisor.log").read_text()
        url = EmbeddedRedis(data_dir).url  # with the owner-only password (the url file holds none)
        probe = _fast_client(url, cfg)
        cam_cfg = cfg.model_copy(deep=True)
        cam_cfg.redis.url = url  # the camera of the test keeps the ledger; it finds the restarted server on this URL
        camera = Camera(cam_cfg, frame_pool(), fps=15, give_up_s=0.5)
        camera.start()
        most_servers = 0
        for cut in range(5):
            before = max(0, _verdicts(probe, names))
            assert wait_for(lambda b=before: _verdicts(probe, names) >= b + 10, 90), (
                f"cut {cut}: no verdicts flowing\n" + (logs / "supervisor.log").read_text()[-3000:]
            )
            at_cut = _verdicts(probe, names)
            _power_cut(sup, extras, data_dir, config)
            # power back: the supervisor and two extra standalone workers start in the same instant
            sup = _start_supervisor(config, logs / "supervisor.log")
            extras = [spawn_worker(config, f"extra-{cut}-{k}", logs, idle_exit=600) for k in range(2)]
            t0 = time.monotonic()
            while time.monotonic() - t0 < 90:
                most_servers = max(most_servers, len(_redis_servers(data_dir)))
                if _verdicts(probe, names) > at_cut and all(_heartbeat(probe, names, w.name) for w in extras):
                    break
                time.sleep(0.05)
            else:
                pytest.fail(
                    f"cut {cut}: the station did not come back with the extra workers\n"
                    + (logs / "supervisor.log").read_text()[-3000:]
                    + extras[0].tail()
                )
            servers = _redis_servers(data_dir)
            print(
                f"[power cut {cut + 1}] back in {time.monotonic() - t0:.1f} s; redis-servers {len(servers)} "
                f"(most seen {most_servers}); verdicts {_verdicts(probe, names)}"
            )
            assert len(servers) == 1, f"cut {cut}: {len(servers)} redis-servers on one data folder"
            assert most_servers <= 1, f"cut {cut}: {most_servers} redis-servers ran at once"
        time.sleep(1.0)
        camera.stop()
        client = client_for_url(url, cfg.redis)
        assert wait_settled(client, cfg, timeout=120), "frames left unread or pending after the last restart"
        rep = reconcile(client, names, camera.ledger, deadline_s=cfg.line.deadline_ms / 1000)
        print(
            f"[power cut] 5 cuts: {rep.sent} frames sent, {rep.not_sent} not sent (Redis down), "
            f"{rep.verdicts} verdicts, {len(rep.duplicate_verdicts)} duplicates, {len(rep.lost)} lost"
        )
        assert rep.sent > 100
        client.close()
    finally:
        if camera is not None:
            camera.stop()
        stop_all(extras)
        sup.send_signal(signal.SIGTERM)
        try:
            sup.wait(20)
        except subprocess.TimeoutExpired:
            sup.kill()
        for p in _station_procs(data_dir, config):
            p.kill()


def _ledger_from_stream(client, names: Names) -> CameraLedger:  # type: ignore[no-untyped-def]
    """The supervisor's own camera published these (the frames stream keeps them all in this test)."""
    ledger = CameraLedger()
    for _eid, fields in client.xrange(names.frames):
        meta = decode_message(fields[b"m"])
        assert isinstance(meta, FrameMeta)
        ledger.ok(meta)
    return ledger


def test_sigterm_of_any_station_process_and_of_the_supervisor(tmp_path: Path, tiny_package: Path) -> None:
    cfg, config = _station(
        tmp_path,
        tiny_package,
        ["camera", "worker", "line", "drift", "jobs"],
        workers=2,
        redis={"frames_maxlen": 50_000},
    )
    data_dir, logs = Path(cfg.station.data_dir), tmp_path / "logs"
    logs.mkdir()
    log = logs / "supervisor.log"
    names = Names(cfg.redis.prefix, cfg.station.id)
    sup = _start_supervisor(config, log)
    everything: set[int] = set()
    try:

        def all_running() -> bool:
            st = _state(data_dir)
            procs = st.get("processes", {})
            return len(procs) == 6 and all(p["pid"] for p in procs.values()) and bool(st.get("redis", {}).get("pid"))

        assert wait_for(all_running, 60), log.read_text()
        url = _state(data_dir)["redis"]["url"]
        probe = _fast_client(url, cfg)
        assert wait_for(lambda: _verdicts(probe, names) >= 10, 90), log.read_text()[-3000:]
        for name in ["camera", "worker-1", "line", "drift", "jobs", "redis"]:
            st = _state(data_dir)
            pids = {n: p["pid"] for n, p in st["processes"].items()} | {"redis": st["redis"]["pid"]}
            everything |= set(pids.values())
            t0 = time.monotonic()
            os.kill(pids[name], signal.SIGTERM)

            def restarted(n: str = name, old: int = pids[name]) -> bool:
                s = _state(data_dir)
                now = s["redis"] if n == "redis" else s["processes"][n]
                return bool(now.get("pid")) and now["pid"] != old and psutil.pid_exists(now["pid"])

            assert wait_for(restarted, 30), f"{name} was not restarted\n" + log.read_text()[-3000:]
            others = [pid for n, pid in pids.items() if n != name]
            dead = [
                pid
                for pid in others
                if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
            ]
            print(
                f"[sigterm] {name}: restarted in {time.monotonic() - t0:.1f} s; others still running: "
                f"{len(others) - len(dead)}/{len(others)}"
            )
            assert not dead, f"SIGTERM of {name} took down {dead}"
            text = log.read_text()
            assert f"{name}: exited" in text and (f"{name}: restarted" in text), text[-2000:]
        before = _verdicts(probe, names)
        assert wait_for(lambda: _verdicts(probe, names) >= before + 10, 60), "no verdicts after the restarts"
        st = _state(data_dir)
        starts = {n: p["starts"] for n, p in st["processes"].items()}
        # each SIGTERMed process restarted once, and nothing else ever went down with it (Redis included)
        assert starts == {"camera": 2, "worker-1": 2, "worker-2": 1, "line": 2, "drift": 2, "jobs": 2}, starts
        assert log.read_text().count("redis: restarted") == 1
        everything |= {p["pid"] for p in st["processes"].values()} | {st["redis"]["pid"]}
        everything |= {c.pid for c in psutil.Process(sup.pid).children(recursive=True)}
        probe.close()
        t0 = time.monotonic()
        sup.send_signal(signal.SIGTERM)
        sup.wait(30)
        assert wait_for(
            lambda: (
                not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in everything)
            ),
            15,
        )
        took = time.monotonic() - t0
        left = _station_procs(data_dir, config)
        print(f"[sigterm] supervisor: everything stopped in {took:.1f} s (rc {sup.returncode}); left running: {left}")
        assert took <= 15, f"stop took {took:.1f} s"
        assert not left, f"left running: {left}"
        assert sup.returncode == 0
        assert f"redis: stopped (pid {st['redis']['pid']})" in log.read_text()
    finally:
        if sup.poll() is None:
            sup.kill()
            sup.wait(10)
        for p in _station_procs(data_dir, config):
            p.kill()
    # the station's frames and verdicts are on disk: one worker finishes what was in flight, then reconcile
    server = EmbeddedRedis(data_dir)
    server.start()
    worker = None
    try:
        local = cfg.model_copy(deep=True)
        local.redis.url = server.url
        wcfg = tmp_path / "finish.yaml"
        wcfg.write_text(yaml.safe_dump(local.model_dump(mode="json")))
        worker = spawn_worker(wcfg, "finisher", logs, idle_exit=5)
        client = client_for_url(server.url, local.redis)
        assert wait_settled(client, local, timeout=90), worker.tail()
        rep = reconcile(client, names, _ledger_from_stream(client, names), deadline_s=cfg.line.deadline_ms / 1000)
        assert rep.sent > 20
        client.close()
    finally:
        if worker is not None:
            stop_all([worker])
        server.stop()
