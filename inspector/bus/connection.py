"""Redis connections of a station: an external server by URL (plain, TLS, or through Redis Sentinel), or the
station's embedded server (:mod:`inspector.bus.embedded`, whose owner starts it; everyone else connects).

Clients retry lost connections with backoff up to ``redis.reconnect.give_up_s`` but never bad credentials;
clients of the embedded server read its password from the data folder (:func:`embedded_url`). Secrets never
appear in output: :func:`masked_url` is what logs, ``validate-config`` and ``status`` print.
"""

from __future__ import annotations

import atexit
import logging
import ssl
import sys
import time
from pathlib import Path

import redis
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import AuthenticationError, AuthorizationError, InvalidResponse, NoPermissionError, ReadOnlyError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool, SentinelManagedConnection

from inspector.bus.embedded import (  # re-exported: the station's processes and tests import them from here
    LOCK_FILE,
    EmbeddedRedis,
    StationLock,
    _free_port,
    _ping,
    _redis_server_binary,
)
from inspector.contracts.config import RedisSection, StationConfig, masked_url
from inspector.contracts.errors import TransportError

__all__ = [
    "CREDENTIAL_ERRORS",
    "LOCK_FILE",
    "SENTINEL_SCHEME",
    "TRANSIENT_ERRORS",
    "EmbeddedRedis",
    "OutageRetry",
    "StationLock",
    "_free_port",
    "_ping",
    "_redis_server_binary",
    "client_for_url",
    "connect",
    "embedded_url",
    "join_station",
    "masked_url",
    "open_station_client",
    "resolve_url",
    "sentinel_client",
    "sentinel_url",
    "station_url",
    "wait_until_up",
]

log = logging.getLogger(__name__)


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
    return OutageRetry(
        ExponentialWithJitterBackoff(cap=section.reconnect.max_s, base=section.reconnect.initial_s), attempts
    )


# What a client waits out with backoff: a lost connection, a timeout, no master elected yet (Sentinel's
# MasterNotFoundError is a ConnectionError), and a demoted master that answers READONLY.
TRANSIENT_ERRORS = (RedisConnectionError, RedisTimeoutError, ConnectionResetError, MasterNotFoundError, ReadOnlyError)
SENTINEL_SCHEME = "redis+sentinel://"


def sentinel_url(section: RedisSection) -> str:
    """What names a Sentinel-managed master in output and in the ``url`` argument of :func:`client_for_url`
    (never a password): ``redis+sentinel://h1:26379,h2:26379/MASTER``."""
    assert section.sentinel is not None
    return f"{SENTINEL_SCHEME}{','.join(section.sentinel.hosts)}/{section.sentinel.master}"


def _client_kwargs(section: RedisSection, decode: bool) -> dict[str, object]:
    kwargs: dict[str, object] = dict(
        socket_timeout=section.socket_timeout_s,
        socket_connect_timeout=min(section.socket_timeout_s, 2.0),
        retry=_retry(section),
        retry_on_error=list(TRANSIENT_ERRORS),
        health_check_interval=10,
        decode_responses=decode,
    )
    if section.username:
        kwargs["username"] = section.username
    if section.password:
        kwargs["password"] = section.password
    return kwargs


class StationSentinelConnection(SentinelManagedConnection):
    """Asks the sentinels where the master is on every (re)connect.

    redis-py's SentinelManagedConnection does so only in ``connect()``; a pipeline or a command sent on a
    dropped connection reconnects through ``connect_check_health`` to the address it had, retrying that one
    address: after a failover a worker's verdict commit kept dialing the dead master's port, then got READONLY
    from it once it came back as a replica, for the whole ``reconnect.give_up_s`` (30 s measured; the fault
    test tests/faults/test_sentinel_failover.py caught it)."""

    def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if self._sock:
            return
        if not retry_socket_connect:  # from connect_to(): the sentinels have just named the address
            super().connect_check_health(check_health, retry_socket_connect=False)
            return
        # A reconnect inside a command's retry loop: one attempt at the master the sentinels name now. The
        # command's retry (redis.reconnect) repeats it; retrying here too would nest the two loops (attempts
        # squared: the line's 0.2 s give-up became 2.5 s blind, measured).
        self._connect_retry()


class StationSentinelSSLConnection(StationSentinelConnection, redis.SSLConnection):
    pass


def sentinel_client(section: RedisSection, decode: bool = False) -> redis.Redis:
    """A client of the master the sentinels name (``redis.sentinel``). Every connection asks the sentinels
    where the master is, so after a failover the next attempt of the ordinary retry lands on the new master;
    a connection to a demoted master (READONLY) is dropped and retried the same way."""
    sc = section.sentinel
    assert sc is not None
    kwargs = _client_kwargs(section, decode)
    # one try per sentinel and question: the master connection's own retry asks them all again (redis-py's
    # default retry would spend ~10 s backing off on one sentinel that is down or refuses the password)
    sentinel_kwargs: dict[str, object] = dict(
        socket_timeout=sc.socket_timeout_s, socket_connect_timeout=sc.socket_timeout_s, retry=Retry(NoBackoff(), 0)
    )
    if sc.username:
        sentinel_kwargs["username"] = sc.username
    if sc.password:
        sentinel_kwargs["password"] = sc.password
    if section.tls:
        sentinel_kwargs["ssl"] = True
        if section.tls_ca_certs:
            kwargs["ssl_ca_certs"] = sentinel_kwargs["ssl_ca_certs"] = str(section.tls_ca_certs)
    manager = Sentinel(sc.addresses(), sentinel_kwargs=sentinel_kwargs, **kwargs)
    return manager.master_for(
        sc.master,
        redis_class=redis.Redis,
        connection_class=StationSentinelSSLConnection if section.tls else StationSentinelConnection,
        **kwargs,
    )


def client_for_url(url: str, section: RedisSection | None = None, decode: bool = False) -> redis.Redis:
    """A redis-py client that retries with capped exponential backoff on connection errors.

    With ``redis.sentinel`` in ``section`` the client is Sentinel's (:func:`sentinel_client`) whatever ``url``
    says (it is then :func:`sentinel_url`, for output): every station client follows a failover this way."""
    section = section or RedisSection()
    if section.sentinel is not None:
        return sentinel_client(section, decode)
    if url.startswith(SENTINEL_SCHEME):
        raise TransportError(
            f"{url!r} names a Sentinel master, but redis.sentinel is not configured",
            "set redis.sentinel (hosts, master) in the station config",
        )
    kwargs = _client_kwargs(section, decode)
    if section.tls and url.startswith("redis://"):
        url = "rediss://" + url[len("redis://") :]
    if url.startswith("rediss://") and section.tls_ca_certs:
        kwargs["ssl_ca_certs"] = str(section.tls_ca_certs)
    try:
        return redis.Redis.from_url(url, **kwargs)
    except ValueError as err:  # a scheme that is not Redis (http://, ...), a malformed URL: never heals
        raise TransportError(
            f"redis.url {masked_url(url)!r} is not a Redis URL: {masked_url(str(err))}",
            "use redis://host:6379/0, rediss://host:6380/0 (TLS) or unix:///path/redis.sock",
        ) from None


_EMBEDDED: dict[Path, EmbeddedRedis] = {}


def embedded_url(data_dir: Path) -> str | None:
    """The fixed URL of a station's embedded Redis (whether or not it answers now), once it was first started."""
    server = EmbeddedRedis(data_dir)
    return server.url if server.port is not None else None


def resolve_url(cfg: StationConfig, start_embedded: bool = True) -> str:
    """The Redis URL of the station: ``redis.url``, or the embedded server's.

    With ``start_embedded`` and no server answering, this process becomes the station's owner when nobody owns
    it (it takes the station lock and starts the server, stopping it at exit), or, when another process owns
    the station, returns that owner's fixed URL for the client to wait on. Without ``start_embedded`` a server
    that does not answer is an error at once. With ``redis.sentinel``: :func:`sentinel_url`."""
    if cfg.redis.sentinel is not None:
        return sentinel_url(cfg.redis)
    if cfg.redis.url:
        return cfg.redis.url
    data_dir = Path(cfg.station.data_dir).resolve()
    server = _EMBEDDED.get(data_dir) or EmbeddedRedis(data_dir, cfg.redis.appendfsync)
    url = server.running_url()
    if url:
        return url
    if not start_embedded:
        raise TransportError(
            f"no embedded Redis is running for {data_dir}",
            "start the station first (inspector station run -c FILE, or inspector demo), or set redis.url",
        )
    if data_dir in _EMBEDDED or server.lock.try_acquire():
        if data_dir not in _EMBEDDED:
            _EMBEDDED[data_dir] = server
            atexit.register(server.stop)  # this process owns the station (demo, GUI demo, one-shot command)
        return server.start()
    fixed = embedded_url(data_dir)
    if fixed is None:
        raise TransportError(
            f"the station at {data_dir} is owned by {server.lock.holder() or 'another process'}, "
            "but its Redis has not started yet",
            "wait for that process, or read its log",
        )
    return fixed


def connect(cfg: StationConfig, decode: bool = False, start_embedded: bool = True) -> redis.Redis:
    """Connect to the station's Redis, checking it answers (with backoff up to reconnect.give_up_s)."""
    url = resolve_url(cfg, start_embedded)
    client = client_for_url(url, cfg.redis, decode)
    wait_until_up(client, cfg.redis.reconnect.give_up_s)
    return client


def join_station(cfg: StationConfig, decode: bool = False) -> redis.Redis:
    """Connect only (camera, workers under a supervisor): never start or stop a server. Waits, saying so once
    on stderr, up to ``redis.reconnect.give_up_s`` for the station's Redis to answer."""
    give_up = cfg.redis.reconnect.give_up_s
    deadline = time.monotonic() + give_up
    if cfg.redis.sentinel is not None:  # wait_until_up says what it waits for (the sentinels, the master)
        client = sentinel_client(cfg.redis, decode)
        wait_until_up(client, give_up)
        return client
    url = cfg.redis.url or embedded_url(cfg.station.data_dir)
    if cfg.redis.url and not _ping(cfg.redis.url, 2.0):
        print(
            f"waiting up to {give_up:.0f} s for Redis at {masked_url(cfg.redis.url)} (redis.url)",
            file=sys.stderr,
            flush=True,
        )
    elif not cfg.redis.url and (url is None or not _ping(url, 2.0)):
        awaited = (
            masked_url(url) if url else f"the embedded Redis of {Path(cfg.station.data_dir).resolve()} (its URL file)"
        )
        print(
            f"waiting up to {give_up:.0f} s for {awaited}: run `inspector station run -c FILE` "
            "(or this command with --standalone to run it alone)",
            file=sys.stderr,
            flush=True,
        )
    while url is None:
        if time.monotonic() >= deadline:
            raise TransportError(
                f"no Redis for the station at {Path(cfg.station.data_dir).resolve()} after {give_up:.0f} s",
                "start the station with `inspector station run -c FILE`, or pass --standalone",
            )
        time.sleep(0.2)
        url = embedded_url(cfg.station.data_dir)
    client = client_for_url(url, cfg.redis, decode)
    wait_until_up(client, max(0.1, deadline - time.monotonic()), announce=False)  # announced above
    return client


def station_url(cfg: StationConfig) -> str:
    """``redis.url`` (:func:`sentinel_url` with Sentinel), or the embedded server's fixed URL; never starts anything."""
    if cfg.redis.sentinel is not None:
        return sentinel_url(cfg.redis)
    url = cfg.redis.url or embedded_url(cfg.station.data_dir)
    if url is None:
        raise TransportError(
            f"no embedded Redis was ever started for {Path(cfg.station.data_dir).resolve()}",
            "start the station with `inspector station run -c FILE`, or pass --standalone",
        )
    return url


def open_station_client(cfg: StationConfig, standalone: bool = False, decode: bool = False) -> redis.Redis:
    """A client for a station process: ``standalone`` owns the station when nobody does (under the station
    lock; the owner stops its Redis at exit); otherwise only connect (:func:`join_station`)."""
    return connect(cfg, decode, start_embedded=True) if standalone else join_station(cfg, decode)


def _where(client: redis.Redis) -> str:
    pool = client.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        hosts = ",".join(
            f"{s.connection_pool.connection_kwargs.get('host')}:{s.connection_pool.connection_kwargs.get('port')}"
            for s in pool.sentinel_manager.sentinels
        )
        return f"{SENTINEL_SCHEME}{hosts}/{pool.service_name}"
    kw = client.connection_pool.connection_kwargs
    tls = issubclass(client.connection_pool.connection_class, redis.SSLConnection)
    return f"{'rediss' if tls else 'redis'}://{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}"


def _probe(client: redis.Redis) -> redis.Redis:
    """The same server and options without the client's own retries: one attempt per call."""
    pool = client.connection_pool
    kw = dict(pool.connection_kwargs, retry=Retry(NoBackoff(), 0))
    kw["socket_timeout"] = min(kw.get("socket_timeout") or 2.0, 2.0)
    kw["socket_connect_timeout"] = min(kw.get("socket_connect_timeout") or 2.0, 2.0)
    if isinstance(pool, SentinelConnectionPool):  # ask the same sentinels for the same master, once
        kw.pop("connection_pool", None)
        return redis.Redis(
            connection_pool=SentinelConnectionPool(
                pool.service_name, pool.sentinel_manager, connection_class=pool.connection_class, **kw
            )
        )
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kw))


def _closed_early(err: Exception) -> bool:
    """The server accepted the connection, then closed or reset it instead of answering."""
    text = str(err).lower()
    return (
        isinstance(err, InvalidResponse)
        or "closed by server" in text
        or "reset by peer" in text
        or any(isinstance(e, ConnectionResetError) for e in (err.__cause__, err.__context__))
    )


def _cannot_heal(err: Exception, where: str, tls: bool, closed_before: int) -> TransportError | None:
    """A failure that waiting will not cure: a refused TLS handshake, or a port that does not speak Redis."""
    chain = [err, err.__cause__, err.__context__]
    text = str(err)
    if isinstance(err, MasterNotFoundError) and any(w in text for w in ("AuthenticationError", "WRONGPASS", "NOAUTH")):
        return TransportError(
            f"the sentinels of {where} refused the credentials ({text})",
            "check redis.sentinel.password and redis.sentinel.username (the sentinels' requirepass)",
        )
    if any(isinstance(e, ssl.SSLCertVerificationError) for e in chain) or "CERTIFICATE_VERIFY_FAILED" in text:
        return TransportError(
            f"Redis at {where} refused: its TLS certificate is not trusted ({text})",
            "set redis.tls_ca_certs to the CA bundle that signed the server's certificate",
        )
    if any(isinstance(e, ssl.SSLError) for e in chain) or (tls and "SSL" in text):
        return TransportError(
            f"Redis at {where} refused the TLS handshake ({text})",
            "check that the port serves TLS (else use redis://), and redis.tls_ca_certs",
        )
    if not tls and _closed_early(err) and closed_before >= 1:
        return TransportError(
            f"Redis at {where} closed the connection before answering: a TLS port spoken to in "
            "plain text, or not a Redis server",
            "for a TLS port use a rediss:// URL (or redis.tls: true); else check the port in redis.url",
        )
    return None


def wait_until_up(client: redis.Redis, give_up_s: float, announce: bool = True) -> None:
    """Wait for the server to answer PING, up to ``give_up_s``. Says at once on stderr what it waits for and
    how long (``announce``); fails at once on what cannot heal (bad credentials, a refused TLS handshake,
    a port that does not speak Redis)."""
    deadline = time.monotonic() + give_up_s
    delay = 0.05
    where = _where(client)
    tls = where.startswith("rediss")
    probe = _probe(client)
    closed = 0
    try:
        while True:
            try:
                probe.ping()
                return
            except CREDENTIAL_ERRORS as err:
                raise TransportError(
                    f"Redis at {where} refused the credentials: {err}",
                    "check redis.username and redis.password (or the user:password in redis.url; "
                    "with Sentinel, redis.sentinel.password is the sentinels' own)",
                ) from None
            except (redis.RedisError, OSError) as err:
                fatal = _cannot_heal(err, where, tls, closed)
                if fatal is not None:
                    raise fatal from None
                closed += _closed_early(err)
                if announce:
                    print(
                        f"waiting up to {give_up_s:.0f} s for Redis at {where} (redis.reconnect.give_up_s): {err}",
                        file=sys.stderr,
                        flush=True,
                    )
                    announce = False
                if time.monotonic() > deadline:
                    hint = (
                        "check redis.sentinel.hosts and redis.sentinel.master (`sentinel get-master-addr-by-name "
                        "MASTER` on a sentinel), that a master is up, and the network"
                        if where.startswith(SENTINEL_SCHEME)
                        else "check redis.url (host and port), that the server runs, and the network"
                    )
                    raise TransportError(
                        f"Redis at {where} does not answer after {give_up_s:.0f} s: {err}", hint
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
    finally:
        probe.close()
