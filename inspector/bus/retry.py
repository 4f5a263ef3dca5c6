"""How a station's Redis clients ride out an outage: which errors are transient (waited out with capped
exponential backoff up to ``redis.reconnect.give_up_s``), which are bad credentials (never retried), and the
keyword arguments every station client is built with (:func:`client_kwargs`)."""

from __future__ import annotations

from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import AuthenticationError, AuthorizationError, NoPermissionError, ReadOnlyError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError

from inspector.contracts.config import RedisSection

CREDENTIAL_ERRORS = (AuthenticationError, AuthorizationError, NoPermissionError)


class OutageRetry(Retry):
    """Retries lost connections with backoff, but never bad credentials (redis-py's AuthenticationError is a
    ConnectionError): retrying them only delays the error a person must fix."""

    def call_with_retry(self, do, fail, is_retryable=None, with_failure_count=False):  # type: ignore[no-untyped-def,override]  # redis-py's own signature, passed on as is
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


def client_kwargs(section: RedisSection, decode: bool) -> dict[str, object]:
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
