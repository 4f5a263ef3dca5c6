"""Redis: the station's transport (server URL or Sentinel, reconnects, stream bounds, commit replicas)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from inspector.contracts.config.base import Section, shown_value

REDIS_URL_SCHEMES = ("redis://", "rediss://", "unix://")


class ReconnectSection(Section):
    initial_s: float = Field(0.05, gt=0, le=10, description="First wait before reconnecting to Redis.")
    max_s: float = Field(2.0, gt=0, le=60, description="Longest wait between reconnect attempts.")
    give_up_s: float = Field(120.0, gt=0, le=86400, description="Total time to keep retrying before raising.")


class SentinelSection(Section):
    """Redis Sentinel: the station asks the sentinels which server is the master and follows a failover."""

    hosts: list[str] = Field(
        ...,
        min_length=1,
        max_length=16,
        description="Sentinels as host:port, e.g. [10.0.0.5:26379, 10.0.0.6:26379, 10.0.0.7:26379] (three on separate hosts).",
    )
    master: str = Field(
        "inspector",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Name of the master the sentinels monitor (`sentinel monitor NAME ...` in sentinel.conf).",
    )
    username: str | None = Field(None, description="ACL user of the sentinels (their own, not the master's).")
    password: str | None = Field(
        None, description="Password of the sentinels (sentinel requirepass); the master's is redis.password."
    )
    socket_timeout_s: float = Field(0.5, gt=0, le=30, description="Timeout of one question to one sentinel.")

    @field_validator("hosts")
    @classmethod
    def _host_port(cls, hosts: list[str]) -> list[str]:
        for i, h in enumerate(hosts):
            host, sep, port = h.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(
                    f"hosts[{i}] {h!r} is not host:port: write e.g. 10.0.0.5:26379 (26379 is Sentinel's port)"
                )
        if len(set(hosts)) != len(hosts):
            raise ValueError("hosts lists a sentinel twice: list each sentinel once")
        return hosts

    def addresses(self) -> list[tuple[str, int]]:
        return [(h.rpartition(":")[0].strip("[]"), int(h.rpartition(":")[2])) for h in self.hosts]


class RedisSection(Section):
    url: str | None = Field(
        None, description="redis:// or rediss:// URL of an external Redis. Unset: start an embedded redis-server."
    )
    prefix: str = Field("insp", pattern=r"^[A-Za-z0-9_-]{1,32}$", description="Prefix of every key and stream.")
    username: str | None = Field(None, description="ACL user name (external Redis).")
    password: str | None = Field(None, description="Password or ACL password (external Redis).")
    tls: bool = Field(False, description="Use TLS (same as a rediss:// URL).")
    tls_ca_certs: Path | None = Field(None, description="CA bundle to verify the Redis server's certificate.")
    appendfsync: Literal["always", "everysec", "no"] = Field(
        "always", description="fsync policy of the embedded server's append-only file."
    )
    frames_maxlen: int = Field(2000, ge=10, le=1_000_000, description="Bound of the frames stream (entries).")
    verdicts_maxlen: int = Field(100_000, ge=100, le=10_000_000, description="Bound of the verdicts stream.")
    events_maxlen: int = Field(10_000, ge=100, le=1_000_000, description="Bound of the events stream.")
    socket_timeout_s: float = Field(5.0, gt=0, le=120, description="Socket timeout of Redis calls.")
    reconnect: ReconnectSection = Field(default_factory=ReconnectSection)
    sentinel: SentinelSection | None = Field(
        None,
        description="Redis Sentinel (high availability): every client finds the master through the sentinels. "
        "Unset: redis.url or the embedded server.",
    )
    wait_replicas: int | None = Field(
        None,
        ge=0,
        le=16,
        description="A verdict is acknowledged only once WAIT says this many replicas hold it. Unset: 1 with "
        "redis.sentinel, 0 (no WAIT) otherwise.",
    )
    wait_timeout_ms: int = Field(
        250,
        ge=1,
        le=60_000,
        description="Longest WAIT on a verdict commit; fewer replicas by then: not acknowledged, the frame is retried.",
    )

    @property
    def commit_replicas(self) -> int:
        """Replicas a verdict commit waits for: ``wait_replicas``, or by default 1 with Sentinel, else 0."""
        if self.wait_replicas is not None:
            return self.wait_replicas
        return 1 if self.sentinel is not None else 0

    @model_validator(mode="after")
    def _one_way_to_redis(self) -> RedisSection:
        if self.sentinel is not None and self.url:
            raise ValueError(
                "redis.url and redis.sentinel are both set: with Sentinel the sentinels name the master; "
                "remove redis.url (keep redis.password for the master)"
            )
        return self

    @field_validator("url")
    @classmethod
    def _redis_scheme(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(REDIS_URL_SCHEMES):
            shown = shown_value("url", url)  # never echo a password
            raise ValueError(
                f"{shown!r} is not a Redis URL: use redis://host:6379/0, rediss://host:6380/0 (TLS) "
                "or unix:///path/to/redis.sock"
            )
        return url
