"""Clients of a Sentinel-managed master (``redis.sentinel``): every connection asks the sentinels where the
master is, so a client follows a failover on its next retry."""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection

from inspector.bus.retry import client_kwargs
from inspector.contracts.config import RedisSection

SENTINEL_SCHEME = "redis+sentinel://"


def sentinel_url(section: RedisSection) -> str:
    """What names a Sentinel-managed master in output and in the ``url`` argument of :func:`client_for_url`
    (never a password): ``redis+sentinel://h1:26379,h2:26379/MASTER``."""
    assert section.sentinel is not None
    return f"{SENTINEL_SCHEME}{','.join(section.sentinel.hosts)}/{section.sentinel.master}"


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
    kwargs = client_kwargs(section, decode)
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
