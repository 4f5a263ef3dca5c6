"""Redis connections of a station: an external server by URL (plain, TLS, or through Redis Sentinel), or the
station's embedded server (:mod:`inspector.bus.embedded`, whose owner starts it; everyone else connects).

Clients retry lost connections with backoff up to ``redis.reconnect.give_up_s`` but never bad credentials;
clients of the embedded server read its password from the data folder (:func:`embedded_url`). Secrets never
appear in output: :func:`masked_url` is what logs, ``validate-config`` and ``status`` print.

Split by concept: retry policy in :mod:`inspector.bus.retry`, Sentinel clients in :mod:`inspector.bus.sentinel`,
waiting for a server in :mod:`inspector.bus.readiness`; their public names are re-exported here.
"""

from __future__ import annotations

import atexit
import logging
import sys
import time
from pathlib import Path

import redis

from inspector.bus.embedded import (  # re-exported: the station's processes and tests import them from here
    LOCK_FILE,
    EmbeddedRedis,
    StationLock,
    _free_port,
    _ping,
    _redis_server_binary,
)
from inspector.bus.readiness import wait_until_up
from inspector.bus.retry import CREDENTIAL_ERRORS, TRANSIENT_ERRORS, OutageRetry, client_kwargs
from inspector.bus.sentinel import SENTINEL_SCHEME, sentinel_client, sentinel_url
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
    kwargs = client_kwargs(section, decode)
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
