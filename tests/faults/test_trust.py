"""Only the station's own code runs from Redis, the embedded Redis is locked, and limits hold across workers.

Faults found by hand, each refused here on real parts (embedded redis-server or ``REDIS_URL``, real RQ, real
SQLite, worker subprocesses), each test ending in the usual reconciliation with frames flowing:

- a plain-JSON RQ job naming ``os.system`` given to ``inspector jobs worker`` (it used to run it as root);
- one ``HSET`` of the active-model key to an unregistered but self-consistent package (it used to be
  hot-loaded and gave 218 verdicts with no audit row);
- the embedded Redis answering anyone on its port without a password;
- ``validate-config`` printing the password of ``redis.url``;
- review rate limits held in each worker's memory (two workers allowed twice the limit).
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest
import redis
import yaml

from inspector.bus.connection import EmbeddedRedis, join_station
from inspector.bus.streams import decode_message
from inspector.contracts.config import StationConfig
from inspector.contracts.messages import ReviewRequest
from inspector.contracts.names import Names
from inspector.runtime.package import load_package
from inspector.store.db import Store, open_store
from inspector.worker import Worker, load_model
from tests.faults.harness import (
    REPO,
    Camera,
    frame_pool,
    promote_through_registry,
    renamed_package,
    spawn_worker,
    station,
    stop_all,
    wait_for,
    wait_settled,
    write_config,
)
from tests.faults.reconcile import Report, read_verdict_entries, reconcile
from tests.spine_helpers import make_tiny_package

pytestmark = pytest.mark.faults


# ------------------------------------------------------------------------------------------ helpers
def flow(cfg: StationConfig, client: redis.Redis, package: Path, seconds: float = 3.0, fps: float = 20) -> Report:
    """Frames through a real worker (in this process) for ``seconds``, then the usual reconciliation."""
    names = Names(cfg.redis.prefix, cfg.station.id)
    worker = Worker(cfg, client, load_model(cfg, package), name=f"flow-{uuid.uuid4().hex[:4]}")
    thread = threading.Thread(target=worker.run, kwargs={"idle_exit_s": 60}, daemon=True)
    thread.start()
    cam = Camera(cfg, frame_pool(8), fps)
    try:
        cam.run(duration_s=seconds)
        assert wait_settled(client, cfg, timeout=60)
    finally:
        worker.stop()
        thread.join(20)
    report = reconcile(client, names, cam.ledger, deadline_s=cfg.line.deadline_ms / 1000)
    assert report.verdicts >= 0.8 * report.sent > 0
    return report


def audit_rows(store: Store, action: str) -> list:  # type: ignore[type-arg]
    return store.audit.entries(limit=1000, action=action)


# ------------------------------------------------------------------------------------------ RQ allow-list
def test_rq_job_naming_os_system_is_refused_dead_lettered_and_audited(
    redis_url,
    redis_client,
    tiny_package,  # type: ignore[no-untyped-def]
    tmp_path,
) -> None:
    from rq import Queue
    from rq.job import Job
    from rq.registry import FailedJobRegistry
    from rq.serializers import JSONSerializer

    from jobs.queues import SERIALIZER, queue_name

    cfg = station(redis_url, tmp_path / "st", tiny_package)
    config = write_config(cfg, tmp_path)
    marker = tmp_path / "PWNED-os-system"
    # what an attacker with Redis access writes: plain rq, plain JSON, a function of the standard library
    evil = Queue(queue_name(cfg), connection=redis_client, serializer=JSONSerializer)
    job = evil.enqueue("os.system", f"id > {marker}")
    also = evil.enqueue("subprocess.getoutput", f"touch {marker}")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "inspector.cli", "jobs", "worker", "--config", str(config), "--burst"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    took = time.monotonic() - t0
    assert not marker.exists(), f"the RQ worker executed os.system: {marker.read_text()!r}"
    failed = FailedJobRegistry(queue_name(cfg), connection=redis_client, serializer=SERIALIZER)
    store = open_store(cfg)
    refused = {e.target: e for e in audit_rows(store, "job.refused")}
    for j in (job, also):
        got = Job.fetch(j.id, connection=redis_client, serializer=SERIALIZER)
        reason = (got.latest_result().exc_string if got.latest_result() else got.exc_info) or ""
        why = next((ln for ln in reason.splitlines() if "refused" in ln), reason[-160:])
        print(f"RQ_ALLOW_LIST {j.func_name}: status={got.get_status().value} reason={why.strip()[:200]}")
        assert got.get_status().value == "failed", done.stderr[-2000:]
        assert j.id in failed.get_job_ids(), "the refused job is not in the failed-job registry (dead letters)"
        assert "not a station job function" in reason
        assert j.id in refused and "not a station job function" in refused[j.id].details["why"]
    print(f"RQ_ALLOW_LIST worker exit={done.returncode} in {took:.1f} s; audit rows={len(refused)}")
    flow(cfg, redis_client, tiny_package)


def test_allowed_job_names_are_exactly_the_station_jobs() -> None:
    from inspector.contracts.jobqueue import REQUESTED_JOB_FUNCTIONS  # what a person asks for (jobs.requested)
    from jobs.maintenance import REFIT_FUNC
    from jobs.queues import JOB_FUNCTIONS
    from jobs.trigger import RETRAIN_FUNC
    from jobs.validation import VALIDATE_FUNC

    assert {REFIT_FUNC, RETRAIN_FUNC, VALIDATE_FUNC, *REQUESTED_JOB_FUNCTIONS} == JOB_FUNCTIONS


# ------------------------------------------------------------------------------------------ registry-only swaps
def test_hset_of_an_unregistered_package_is_refused_by_running_workers(
    redis_url,
    redis_client,
    tiny_package,  # type: ignore[no-untyped-def]
    tmp_path,
) -> None:
    cfg = station(redis_url, tmp_path / "st", tiny_package, worker={"reload_poll_s": 0.2, "expire_ms": 0})
    names = Names(cfg.redis.prefix, cfg.station.id)
    store = open_store(cfg)
    old_version = load_package(tiny_package).version
    rogue = renamed_package(make_tiny_package(tmp_path / "rogue"), "rogue")
    good = renamed_package(make_tiny_package(tmp_path / "good"), "good")
    rogue_pkg, good_version = load_package(rogue), load_package(good).version
    workers = [spawn_worker(write_config(cfg, tmp_path), n, tmp_path / "logs", idle_exit=60) for n in ("a", "b")]
    cam = Camera(cfg, frame_pool(), 20)
    try:
        assert wait_for(lambda: len(redis_client.keys(names.heartbeat_pattern)) >= 2, 90), workers[0].tail()
        cam.start(duration_s=14)
        time.sleep(1.5)
        # one HSET by whoever can write to Redis: a real, self-consistent package the registry never saw
        redis_client.hset(
            names.active_model,
            mapping={"version": rogue_pkg.version, "path": str(rogue), "sha256": rogue_pkg.package_sha256},
        )
        assert wait_for(
            lambda: all(
                redis_client.hget(names.active_model, f"refused_by_{n}") == rogue_pkg.version.encode()
                for n in ("a", "b")
            ),
            30,
        ), [w.tail() for w in workers]
        time.sleep(3)  # the rogue pointer stays while frames flow: still the old model
        t_promote = time.time()
        promote_through_registry(cfg, redis_client, store, good)
        assert wait_for(lambda: len(audit_rows(store, "model.swap")) >= 2, 30), [w.tail() for w in workers]
        cam.join(60)
        assert wait_settled(redis_client, cfg, timeout=60)
    finally:
        cam.stop()
        stop_all(workers)
    entries = read_verdict_entries(redis_client, names)
    versions = {str(v.model_version) for v, _ in entries}
    refusals = [e for e in audit_rows(store, "model.swap_refused") if e.target == rogue_pkg.version]
    swaps = [e for e in audit_rows(store, "model.swap") if e.target == good_version]
    logs = [w.tail(20000) for w in workers]
    refusal_lines = [ln for text in logs for ln in text.splitlines() if "refused model" in ln]
    rogue_verdicts = sum(v.model_version == rogue_pkg.version for v, _ in entries)
    print(
        f"REGISTRY_ONLY verdicts={len(entries)} rogue_verdicts={rogue_verdicts} versions={sorted(versions)} "
        f"refusal_audit_rows={len(refusals)} swap_audit_rows={len(swaps)} refusal_log_lines={len(refusal_lines)}"
    )
    for line in refusal_lines[:2]:
        print("  ", line[-200:])
    reconcile(redis_client, names, cam.ledger, deadline_s=cfg.line.deadline_ms / 1000)
    assert rogue_verdicts == 0, "a worker served the unregistered package"
    assert {e.actor for e in refusals} == {"worker:a", "worker:b"}, refusals
    assert len(refusal_lines) == 2, refusal_lines  # one clear line per worker, not one per poll
    assert {e.actor for e in swaps} == {"worker:a", "worker:b"}
    assert versions == {old_version, good_version}, versions
    late = [v for v, t in entries if t > t_promote + 3]
    assert late and all(v.model_version == good_version for v in late)
    before = [v for v, t in entries if t < t_promote]
    assert before and all(v.model_version == old_version for v in before)


# ------------------------------------------------------------------------------------------ embedded Redis
def _other_address() -> str | None:
    """A non-loopback address of this machine, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def _raw(host: str, port: int, data: bytes) -> bytes:
    with socket.create_connection((host, port), timeout=2) as s:
        s.sendall(data)
        return s.recv(200)


def _answers(port: int) -> bytes:
    try:
        return _raw("127.0.0.1", port, b"PING\r\n")
    except OSError:
        return b""


def test_embedded_redis_needs_its_password_and_listens_on_loopback_only(tiny_package, tmp_path) -> None:  # type: ignore[no-untyped-def]
    data_dir = tmp_path / "st"
    server = EmbeddedRedis(data_dir)
    url = server.start()
    try:
        password = server.password() or ""
        assert len(password) >= 32
        for f in (server.password_file, server.url_file, server.conf_file):
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f"{f} is {oct(f.stat().st_mode)}"
        assert stat.S_IMODE(server.dir.stat().st_mode) == 0o700
        assert password not in server.url_file.read_text(), "the URL file holds the password"
        assert password not in " ".join(psutil.Process(server.pid).cmdline()), "the password is on the command line"
        answer = _raw("127.0.0.1", server.port, b"PING\r\n")
        assert answer.startswith(b"-NOAUTH"), answer
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=2).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=server.port, password="guess", socket_timeout=2).ping()
        listening = {
            c.laddr.ip
            for c in psutil.Process(server.pid).net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        }
        assert listening == {"127.0.0.1"}, listening
        other = _other_address()
        if other is not None:
            with pytest.raises(OSError):
                _raw(other, server.port, b"PING\r\n")
        # a station process (no URL in its config) finds the server and its password in the data folder
        cfg = station(url, data_dir, tiny_package)
        cfg.redis.url = None
        client = join_station(cfg)
        bind = client.config_get("bind")["bind"]
        print(
            f"EMBEDDED_LOCKED NOAUTH={answer[:40]!r} listening={sorted(listening)} bind={bind} "
            f"other_address={other} refused_there={other is not None}"
        )
        assert bind.split() == ["127.0.0.1"]
        flow(station(url, data_dir / "flow", tiny_package), client, tiny_package)
        client.close()
    finally:
        server.stop()


def test_an_embedded_redis_started_without_a_password_gets_one(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A station folder from before the password (a server still running without one) is locked on adoption."""
    from inspector.bus.connection import _free_port, _redis_server_binary

    server = EmbeddedRedis(tmp_path / "old")
    server.dir.mkdir(parents=True)
    port = _free_port()
    server.port_file.write_text(f"{port}\n")
    server.port = port
    proc = subprocess.Popen(
        [
            _redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(server.dir),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_for(lambda: _answers(port).startswith(b"+PONG"), 10, 0.1)
        server.start()
        assert _raw("127.0.0.1", port, b"PING\r\n").startswith(b"-NOAUTH")
        assert redis.Redis.from_url(server.url).ping()
    finally:
        server.stop()
        proc.kill()
        proc.wait(10)


# ------------------------------------------------------------------------------------------ secrets in output
def test_validate_config_status_and_logs_never_print_the_redis_password(
    embedded_redis,
    tiny_package,
    tmp_path,  # type: ignore[no-untyped-def]
    caplog,
) -> None:
    password = embedded_redis.password() or ""
    assert password and password in embedded_redis.url
    cfg = station(embedded_redis.url, tmp_path / "st", tiny_package)
    config = write_config(cfg, tmp_path)
    raw = yaml.safe_load(config.read_text())
    raw["redis"]["password"] = "an0ther-s3cret"
    config.write_text(yaml.safe_dump(raw))
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    outputs = {}
    for args in (
        ["validate-config", str(config)],
        ["status", "--config", str(config)],
        ["status", "--config", str(config), "--json"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "inspector.cli", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        outputs[" ".join(args[:1] + args[3:])] = done.stdout + done.stderr
    bad = config.with_name("bad.yaml")
    raw["redis"]["url"] = f"http://:{password}@127.0.0.1:1/0"
    bad.write_text(yaml.safe_dump(raw))
    done = subprocess.run(
        [sys.executable, "-m", "inspector.cli", "validate-config", str(bad)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    outputs["validate-config (bad url)"] = done.stdout + done.stderr
    print("SECRETS", {k: v.strip().splitlines()[0][:140] if v.strip() else "" for k, v in outputs.items()})
    assert "***" in outputs["validate-config"]
    for what, text in outputs.items():
        assert password not in text and "an0ther-s3cret" not in text, f"{what} printed a secret"
    caplog.set_level("DEBUG")
    client = redis.Redis.from_url(embedded_redis.url)
    flow(cfg, client, tiny_package)
    assert password not in caplog.text
    client.close()


# ------------------------------------------------------------------------------------------ shared limits
def test_two_workers_share_one_review_rate_limit(redis_url, redis_client, tiny_package, tmp_path) -> None:  # type: ignore[no-untyped-def]
    limit = 10
    cfg = station(
        redis_url,
        tmp_path / "st",
        tiny_package,
        worker={"expire_ms": 0},
        review={
            "confidence_band": (0.0, 1.0),
            "anomaly_band": 0.0,
            "audit_pass_one_in": 0,
            "limits": {"per_minute": limit, "per_hour": 600, "per_day": 5000},
        },
    )
    names = Names(cfg.redis.prefix, cfg.station.id)
    workers = [
        spawn_worker(write_config(cfg, tmp_path), n, tmp_path / "logs", idle_exit=60, record=True) for n in ("a", "b")
    ]
    cam = Camera(cfg, frame_pool(), 15)
    try:
        assert wait_for(lambda: len(redis_client.keys(names.heartbeat_pattern)) >= 2, 90), workers[0].tail()
        t0 = time.time()
        cam.run(duration_s=8)
        assert wait_settled(redis_client, cfg, timeout=60)
        time.sleep(2)  # the review routers drain their inboxes
        took = time.time() - t0
    finally:
        cam.stop()
        stop_all(workers)
    entries = read_verdict_entries(redis_client, names)
    by_worker = {n: sum(v.worker == n for v, _ in entries) for n in ("a", "b")}
    routed = [decode_message(f[b"m"]) for _id, f in redis_client.xrange(names.review)]
    assert all(isinstance(q, ReviewRequest) for q in routed)
    per_reason = {r: sum(r in q.reasons for q in routed) for q in routed for r in q.reasons}
    print(
        f"SHARED_LIMIT limit={limit}/min per sampler, 2 workers, {took:.0f} s: verdicts={by_worker} "
        f"routed={len(routed)} per_reason={per_reason}"
    )
    reconcile(redis_client, names, cam.ledger, deadline_s=cfg.line.deadline_ms / 1000)
    assert all(n > limit for n in by_worker.values()), "each worker alone had frames enough to fill the limit"
    assert per_reason.get("low_confidence", 0) == limit, per_reason  # reached, and not 2x
    assert all(n <= limit for n in per_reason.values()), per_reason
