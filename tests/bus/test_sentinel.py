"""redis.sentinel: config checks, and every kind of station client through real Sentinels (tests/bus/sentinel_cluster.py).

Each test that fails a master over starts its own cluster (master, one replica, three sentinels; ~2 s)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from inspector.bus.connection import client_for_url, connect, join_station, resolve_url, sentinel_url, station_url
from inspector.bus.streams import NotReplicated, StationBus
from inspector.contracts.config import parse_config
from inspector.contracts.errors import ConfigError, TransportError
from inspector.contracts.messages import Decision, Verdict
from tests.bus.sentinel_cluster import SentinelCluster
from tests.faults.harness import write_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    c = SentinelCluster(tmp_path / "cluster")
    try:
        yield c.start()
    finally:
        c.stop()


def _cfg(cluster: SentinelCluster, tmp_path: Path, **redis_over: object):  # type: ignore[no-untyped-def]
    return parse_config(
        {
            "station": {"id": "hs1", "data_dir": str(tmp_path / "st")},
            "redis": cluster.redis_section(**{"reconnect": {"give_up_s": 20}, **redis_over}),
        },
        environ={},
    )


def _verdict(i: int) -> Verdict:
    return Verdict(
        station="hs1",
        frame_id=f"f{i}",
        camera="c",
        seq=i,
        part_id=f"p{i}",
        captured_at=time.time(),
        decision=Decision.PASS,
        reject=False,
    )


# ------------------------------------------------------------------ config
def test_sentinel_config_is_checked_with_clear_errors() -> None:
    cfg = parse_config(
        {"redis": {"sentinel": {"hosts": ["10.0.0.5:26379", "[::1]:26380"], "master": "line1"}}}, environ={}
    )
    assert cfg.redis.sentinel is not None and cfg.redis.sentinel.addresses() == [("10.0.0.5", 26379), ("::1", 26380)]
    assert cfg.redis.commit_replicas == 1  # WAIT for one replica by default with Sentinel
    assert parse_config({}, environ={}).redis.commit_replicas == 0  # embedded / standalone: no WAIT
    assert (
        parse_config({"redis": {"sentinel": {"hosts": ["a:1"]}, "wait_replicas": 0}}, environ={}).redis.commit_replicas
        == 0
    )
    for bad, words in [
        ({"hosts": ["10.0.0.5"]}, "is not host:port"),
        ({"hosts": ["a:99999"]}, "is not host:port"),
        ({"hosts": []}, "at least 1"),
        ({"hosts": ["a:1", "a:1"]}, "twice"),
        ({"hosts": ["a:1"], "master": "bad name"}, "redis.sentinel.master"),
    ]:
        with pytest.raises(ConfigError, match=words):
            parse_config({"redis": {"sentinel": bad}}, environ={})
    with pytest.raises(ConfigError, match="redis.url and redis.sentinel are both set") as err:
        parse_config(
            {
                "redis": {
                    "url": "redis://:urlpw@h:6379/0",
                    "password": "masterpw",
                    "sentinel": {"hosts": ["a:1"], "password": "sentinelpw"},
                }
            },
            environ={},
        )
    assert "urlpw" not in str(err.value) and "masterpw" not in str(err.value) and "sentinelpw" not in str(err.value)


def test_every_url_helper_names_the_sentinels_not_a_password(tmp_path: Path) -> None:
    cfg = parse_config(
        {
            "station": {"data_dir": str(tmp_path)},
            "redis": {
                "password": "pw",
                "sentinel": {"hosts": ["h1:26379", "h2:26379"], "master": "m", "password": "spw"},
            },
        },
        environ={},
    )
    assert resolve_url(cfg) == station_url(cfg) == sentinel_url(cfg.redis) == "redis+sentinel://h1:26379,h2:26379/m"
    with pytest.raises(TransportError, match="redis.sentinel is not configured"):
        client_for_url("redis+sentinel://h1:26379/m")
    assert not (tmp_path / "redis").exists()  # no embedded server was started for a Sentinel station


def test_no_sentinel_answers_is_a_clear_error(tmp_path: Path) -> None:
    from tests.bus.sentinel_cluster import free_port

    cfg = parse_config(
        {
            "station": {"data_dir": str(tmp_path)},
            "redis": {"sentinel": {"hosts": [f"127.0.0.1:{free_port()}"]}, "reconnect": {"give_up_s": 1}},
        },
        environ={},
    )
    with pytest.raises(TransportError, match="redis.sentinel.hosts") as err:
        connect(cfg)
    assert "redis+sentinel://127.0.0.1" in str(err.value)


# ------------------------------------------------------------------ clients
def test_wrong_sentinel_password_fails_fast(cluster: SentinelCluster, tmp_path: Path) -> None:
    sec = cluster.redis_section(reconnect={"give_up_s": 30})
    sec["sentinel"]["password"] = "wrong"  # type: ignore[index]
    cfg = parse_config({"station": {"data_dir": str(tmp_path)}, "redis": sec}, environ={})
    t0 = time.monotonic()
    with pytest.raises(TransportError, match="redis.sentinel.password"):
        connect(cfg)
    assert time.monotonic() - t0 < 10


def test_commit_waits_for_the_replica_and_acks_only_then(cluster: SentinelCluster, tmp_path: Path) -> None:
    cfg = _cfg(cluster, tmp_path)
    client = join_station(cfg)
    bus = StationBus(client, cfg)
    bus.ensure_group(bus.names.frames, cfg.worker.group)
    from inspector.contracts.messages import FrameMeta

    def frame(i: int) -> str:
        meta = FrameMeta(station="hs1", camera="c", seq=i, part_id=f"p{i}", captured_at=time.time(), encoding="jpeg")
        bus.publish_frame(meta, b"x")
        return bus.read_new(bus.names.frames, cfg.worker.group, "w", 1, None)[0].entry_id

    assert bus.commit_verdicts([(_verdict(1), frame(1))]) == [True]  # WAIT 1: the replica holds it
    assert bus.group_info(bus.names.frames)[0]["pending"] == 0
    replica = cluster.client(cluster.servers[1].port)
    assert replica.exists(bus.names.done("f1")) == 1  # already on the replica when the commit returned

    strict = cfg.model_copy(update={"redis": cfg.redis.model_copy(update={"wait_replicas": 2, "wait_timeout_ms": 50})})
    sbus = StationBus(client, strict)
    entry = frame(2)
    with pytest.raises(NotReplicated, match="reached 1 of 2 replica"):
        sbus.commit_verdicts([(_verdict(2), entry)])
    assert bus.group_info(bus.names.frames)[0]["pending"] == 1  # not acknowledged: the frame stays pending
    assert bus.commit_verdicts([(_verdict(2), entry)]) == [False]  # the retry: no second verdict, now acked
    assert bus.group_info(bus.names.frames)[0]["pending"] == 0
    assert client.xlen(bus.names.verdicts) == 2
    client.close()
    replica.close()


def test_clients_follow_a_failover_and_a_demoted_master(cluster: SentinelCluster, tmp_path: Path) -> None:
    """SENTINEL FAILOVER: the old master keeps answering for a moment, then is demoted (READONLY); the
    station's client lands on the new master by itself. Commits to the old master in that moment reach no
    replica: WAIT refuses to acknowledge them."""
    cfg = _cfg(cluster, tmp_path)
    client = connect(cfg)
    bus = StationBus(client, cfg)
    assert bus.commit_verdicts([(_verdict(0), "")]) == [True]
    old = cluster.master_port()
    assert old is not None
    cluster.failover()
    new = cluster.wait_promoted(old)
    cluster.wait_replicas(new, 1)  # the old master came back as the new one's replica
    acked, refused = [], 0
    deadline = time.monotonic() + 20
    i = 1
    while len(acked) < 5 and time.monotonic() < deadline:
        try:
            if bus.commit_verdicts([(_verdict(i), "")]) == [True]:
                acked.append(f"f{i}")
        except NotReplicated:
            refused += 1
        i += 1
    assert len(acked) == 5, f"no acknowledged commit within 20 s after the failover ({refused} refused)"
    assert client.connection_pool.master_address == ("127.0.0.1", new)
    survivor = cluster.client(new)
    for fid in ["f0", *acked]:
        assert survivor.exists(bus.names.done(fid)) == 1, f"acknowledged verdict {fid} lost in the failover"
    survivor.close()
    client.close()


def test_cli_worker_and_rq_go_through_sentinel(cluster: SentinelCluster, tmp_path: Path, tiny_package: Path) -> None:
    """`inspector worker` (a real process) inspects frames published through Sentinel; an RQ job submitted through
    Sentinel reaches the master and the station's RQ worker (through Sentinel) takes it (refused: not allow-listed)."""
    from inspector.contracts.messages import FrameMeta
    from jobs.queues import station_queue
    from jobs.worker import make_worker

    cfg = parse_config(
        {
            "station": {"id": "hs1", "data_dir": str(tmp_path / "st")},
            "redis": cluster.redis_section(reconnect={"give_up_s": 20}),
            "model": {"package": str(tiny_package)},
        },
        environ={},
    )
    config = write_config(cfg, tmp_path)
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "inspector.cli",
            "worker",
            "--config",
            str(config),
            "--name",
            "w0",
            "--idle-exit",
            "20",
            "--no-record",
            "--no-review",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    try:
        client = connect(cfg)
        bus = StationBus(client, cfg)
        from tests.faults.harness import frame_pool

        pool = frame_pool(4)
        for i in range(6):
            truth, data = pool[i % 4]
            bus.publish_frame(
                FrameMeta(
                    station="hs1",
                    camera="c",
                    seq=i,
                    part_id=f"p{i}",
                    captured_at=time.time(),
                    encoding="jpeg",
                    truth=truth,
                ),
                data,
            )
        deadline = time.monotonic() + 60
        while client.xlen(bus.names.verdicts) < 6 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert client.xlen(bus.names.verdicts) == 6, (tmp_path / "worker.log").read_text()[-2000:]

        q = station_queue(cfg, client)
        job = q.enqueue_call("os.getcwd")  # not a station job: the worker must refuse it
        master = cluster.client(cluster.master_port() or 0)
        assert master.exists(f"rq:job:{job.id}") == 1  # submitted through Sentinel, on the master
        make_worker(cfg, client, name="rq-s", simple=True).work(burst=True)
        assert job.id in q.failed_job_registry.get_job_ids()
        master.close()
        client.close()
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def test_rq_job_submission_follows_a_failover(cluster: SentinelCluster, tmp_path: Path) -> None:
    from jobs.queues import station_queue

    cfg = _cfg(cluster, tmp_path)
    client = connect(cfg)
    q = station_queue(cfg, client)
    q.enqueue_call("os.getcwd")
    old = cluster.master_port()
    assert old is not None
    cluster.kill(cluster.server_on(old))
    new = cluster.wait_promoted(old)
    job = q.enqueue_call("os.getcwd")  # the same client, after the election
    assert cluster.client(new).exists(f"rq:job:{job.id}") == 1
    assert isinstance(client, redis.Redis)
    client.close()


def test_commit_in_flight_at_the_kill_lands_on_the_new_master(cluster: SentinelCluster, tmp_path: Path) -> None:
    """A verdict commit (a pipeline) in flight when the master dies must reconnect through the sentinels, not to
    the dead master's port: redis-py's own SentinelManagedConnection kept dialing the old address for the whole
    reconnect.give_up_s (30 s), then got READONLY from it once it came back as a replica."""
    import threading

    cfg = _cfg(cluster, tmp_path, reconnect={"give_up_s": 30})
    client = connect(cfg)
    bus = StationBus(client, cfg)
    bus.ensure_group(bus.names.frames, cfg.worker.group)
    longest = [0.0]
    stop = threading.Event()

    def commits() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            t0 = time.monotonic()
            try:  # what a worker's step does: a blocking read, then the commit (WAIT 1)
                bus.read_new(bus.names.frames, cfg.worker.group, "w", 4, block_ms=100)
                bus.commit_verdicts([(_verdict(i), "")])
            except NotReplicated:  # the replica is not back yet: not acknowledged (fine here)
                pass
            longest[0] = max(longest[0], time.monotonic() - t0)

    th = threading.Thread(target=commits, daemon=True)
    th.start()
    time.sleep(1.0)
    old = cluster.master_port()
    assert old is not None
    t_kill = time.monotonic()
    cluster.kill(cluster.server_on(old))
    new = cluster.wait_promoted(old)
    election = time.monotonic() - t_kill
    cluster.restart_as_replica(cluster.server_on(old), new)  # the old port answers again, READONLY
    time.sleep(4.0)
    stop.set()
    th.join(40)
    assert not th.is_alive()
    print(f"SENTINEL_INFLIGHT election_s={election:.2f} longest_commit_s={longest[0]:.2f}")
    assert longest[0] < election + 4.0, f"a commit took {longest[0]:.1f} s (election {election:.1f} s)"
    assert client.connection_pool.master_address == ("127.0.0.1", new)
    client.close()


def test_station_keys_share_one_cluster_slot_and_rq_keys_do_not() -> None:
    """The stated limit (README, Redis high availability): every key of ``Names`` hashes to the station's
    Cluster slot; RQ's own keys (``rq:queue:...``, ``rq:job:...``) do not, so the station runs on one master
    (standalone or Sentinel), not on Redis Cluster."""
    from redis.crc import key_slot

    from inspector.contracts.names import Names
    from jobs.queues import queue_name

    n = Names("insp", "line1")
    keys = [getattr(n, a) for a in dir(n) if not a.startswith("_") and isinstance(getattr(type(n), a, None), property)]
    keys = [k for k in keys if isinstance(k, str) and k.startswith("insp:")] + [n.done("frame-1")]
    assert len(keys) > 8
    slots = {k: key_slot(k.encode()) for k in keys}
    assert len(set(slots.values())) == 1, slots
    cfg = parse_config({"station": {"id": "line1"}}, environ={})
    rq_keys = [f"rq:queue:{queue_name(cfg)}", "rq:job:0123", "rq:queues"]
    assert all(key_slot(k.encode()) != next(iter(slots.values())) for k in rq_keys)


def test_supervisor_and_validate_config_with_sentinel(cluster: SentinelCluster, tmp_path: Path) -> None:
    """`inspector station run` starts no embedded Redis for a Sentinel station (it waits for the master the
    sentinels name), and neither it nor `validate-config` prints a password."""
    from inspector.station.supervisor import Supervisor

    cfg = _cfg(cluster, tmp_path)
    said: list[str] = []
    sup = Supervisor(cfg, None, say=said.append, specs=[])
    sup._start_redis()
    assert sup.redis is None and not (Path(cfg.station.data_dir) / "redis").exists()
    assert any("redis+sentinel://127.0.0.1:" in line and "answers" in line for line in said), said
    assert "redis+sentinel://" in str(sup.table()["redis"])
    config = write_config(cfg, tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "inspector.cli", "validate-config", str(config)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "sentinel master inspector via 127.0.0.1:" in " ".join(out.stdout.split())
    text = out.stdout + out.stderr + " ".join(said) + str(sup.table())
    assert cluster.redis_section()["password"] not in text and "sentinel-secret-pw" not in text
