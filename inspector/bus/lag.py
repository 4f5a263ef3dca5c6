"""Lag of a consumer group: entries of its stream not yet delivered to the group.

Redis 7 reports it in ``XINFO GROUPS`` (``lag``); Redis 6.2 (the embedded server) does not, and Redis 7 leaves it
``nil`` when entries were deleted in the range it would count. Then the entries after the group's
``last-delivered-id`` are counted inside Redis by a small Lua script (:data:`COUNT_AFTER`): it walks them in
batches of :data:`LAG_BATCH` and returns only their number, so no payload (frame images) crosses the network; it
stops at :data:`LAG_COUNT_CAP` and the lag then reads as "at least" that many. ``inspector status`` and the
Prometheus metrics both read it through :func:`group_lag` (via :func:`inspector.telemetry_station.station_view`).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import redis
from redis.commands.core import Script

LAG_COUNT_CAP = 10_000
LAG_BATCH = 100

COUNT_AFTER = """
local start = '(' .. ARGV[1]
local cap, batch = tonumber(ARGV[2]), tonumber(ARGV[3])
local n = 0
while n < cap do
  local want = math.min(batch, cap - n)
  local rows = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', want)
  n = n + #rows
  if #rows < want then break end
  start = '(' .. rows[#rows][1]
end
return n
"""

_scripts: weakref.WeakKeyDictionary[Any, Script] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Lag:
    """A group's lag; ``capped``: the count stopped at :data:`LAG_COUNT_CAP`, the lag is at least ``entries``."""

    entries: int
    capped: bool = False

    def __str__(self) -> str:
        return f">={self.entries}" if self.capped else str(self.entries)


def _count_script(client: redis.Redis) -> Script:
    """The counting script, registered once per client (EVALSHA afterwards; reloaded by redis-py if flushed)."""
    script = _scripts.get(client)
    if script is None:
        script = _scripts[client] = client.register_script(COUNT_AFTER)
    return script


def _text(raw: object) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def group_lag(client: redis.Redis, stream: str, info: dict[str, Any], cap: int = LAG_COUNT_CAP) -> Lag:
    """The lag of the group that ``info`` (one row of ``XINFO GROUPS`` on ``stream``, keys as text) describes."""
    reported = info.get("lag")
    if reported is not None:
        return Lag(int(reported))
    last = _text(info.get("last-delivered-id") or "0-0")
    counted = int(_count_script(client)(keys=[stream], args=[last, cap, LAG_BATCH]))
    return Lag(counted, capped=counted >= cap)
