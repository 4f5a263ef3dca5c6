"""Waiting for a station's Redis to answer (:func:`wait_until_up`), and telling an outage that heals (waited
out, said once on stderr) from a mistake that does not (bad credentials, a refused TLS handshake, a port that
does not speak Redis), which fails at once with a hint."""

from __future__ import annotations

import ssl
import sys
import time

import redis
from redis.backoff import NoBackoff
from redis.exceptions import InvalidResponse
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, SentinelConnectionPool

from inspector.bus.retry import CREDENTIAL_ERRORS
from inspector.bus.sentinel import SENTINEL_SCHEME
from inspector.contracts.errors import TransportError


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
