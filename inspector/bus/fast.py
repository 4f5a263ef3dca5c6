"""A Redis client that fails fast: for health probes, metric scrapes and the GUI's short calls, which must
never stall for ``redis.reconnect.give_up_s`` on an absent Redis."""

from __future__ import annotations

import redis

from inspector.contracts.config import ReconnectSection, StationConfig

#: Reconnect settings of a fast client: a few tries within 0.2 s, then the error.
FAST_RECONNECT = ReconnectSection(initial_s=0.02, max_s=0.1, give_up_s=0.2)


def fast_client(cfg: StationConfig, url: str, timeout_s: float = 0.5, decode: bool = False) -> redis.Redis:
    """A client of the station's Redis at ``url`` with ``timeout_s`` socket timeout and no long reconnect."""
    from inspector.bus.connection import client_for_url

    section = cfg.redis.model_copy(update={"socket_timeout_s": timeout_s, "reconnect": FAST_RECONNECT})
    return client_for_url(url, section, decode)


__all__ = ["FAST_RECONNECT", "fast_client"]
