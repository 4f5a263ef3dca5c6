"""Redis streams of one station: publish, consume with groups, reclaim stale entries, dead-letter.

Delivery is at-least-once; every write is idempotent by frame id. A verdict is committed by one Lua
script that, atomically, marks the frame done (SET NX), appends the verdict, bumps the counters and
acknowledges the frame: a redelivered frame can never yield a second verdict, and a crash can never
leave a frame acknowledged without its verdict. With ``redis.wait_replicas`` > 0 the acknowledgement
waits for ``WAIT``: the frame is acked only once the replicas hold its verdict (see commit_verdicts).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from inspector.contracts.config import StationConfig
from inspector.contracts.errors import TransportError, UnsafeInputError
from inspector.contracts.messages import (
    MESSAGE_KINDS,
    SCHEMA_VERSION,
    Event,
    FrameMeta,
    Message,
    Verdict,
)
from inspector.contracts.names import STREAM_FIELD_IMAGE, STREAM_FIELD_MESSAGE, Names

log = logging.getLogger(__name__)

_COMMIT_VERDICT = """
local fresh = redis.call('SET', KEYS[1], ARGV[3], 'NX', 'EX', tonumber(ARGV[4]))
if fresh then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'm', ARGV[6])
  redis.call('HINCRBY', KEYS[4], 'verdicts', 1)
  redis.call('HINCRBY', KEYS[4], ARGV[7], 1)
end
if ARGV[2] ~= '' and ARGV[8] == '1' then redis.call('XACK', KEYS[3], ARGV[1], ARGV[2]) end
if fresh then return 1 else return 0 end
"""


class NotReplicated(TransportError, RedisConnectionError):
    """A verdict commit that fewer replicas than ``redis.wait_replicas`` confirmed within ``redis.wait_timeout_ms``.

    Not acknowledged: its frames stay pending and are reclaimed and committed again (the done key makes the
    second commit a no-op where the first one survived). A ConnectionError, so every loop that waits out an
    outage waits this out too."""


_PUBLISH_FRAME = """
local function newer(a, b)
  local am, as = string.match(a, '(%d+)-(%d+)')
  local bm, bs = string.match(b, '(%d+)-(%d+)')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am > bm or (am == bm and as > bs)
end
local maxlen = tonumber(ARGV[1])
local len = redis.call('XLEN', KEYS[1])
if len >= maxlen then
  local last = nil
  if redis.call('EXISTS', KEYS[1]) == 1 then
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
      local t = {}
      for i = 1, #g, 2 do t[g[i]] = g[i + 1] end
      if t['name'] == ARGV[2] then last = t['last-delivered-id'] end
    end
  end
  local victims = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', len - maxlen + 1)
  for _, e in ipairs(victims) do
    if last == nil or newer(e[1], last) then
      local meta = nil
      for i = 1, #e[2], 2 do if e[2][i] == 'm' then meta = e[2][i + 1] end end
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'm', meta or '', 'reason',
                 'trimmed from the bounded frames stream before inspection (workers too slow or absent)',
                 'entry_id', e[1])
      redis.call('HINCRBY', KEYS[2], 'not_inspected', 1)
    end
    redis.call('XDEL', KEYS[1], e[1])
  end
end
local id = redis.call('XADD', KEYS[1], '*', 'm', ARGV[3], 'img', ARGV[4])
redis.call('HINCRBY', KEYS[2], 'published', 1)
return id
"""


@dataclass
class Entry:
    """One stream entry as read from a consumer group."""

    entry_id: str
    fields: dict[bytes, bytes] | None  # None: the entry was trimmed or deleted before it was read

    @property
    def message_raw(self) -> bytes | None:
        return None if self.fields is None else self.fields.get(STREAM_FIELD_MESSAGE)

    @property
    def image(self) -> bytes:
        return b"" if self.fields is None else self.fields.get(STREAM_FIELD_IMAGE, b"")


def decode_message(raw: bytes | None) -> Message:
    """Parse a message JSON by its ``kind``; refuses pickle and anything that is not a known message."""
    if raw is None:
        raise UnsafeInputError("stream entry has no message field", "producers must write the field 'm'")
    if raw[:1] == b"\x80":
        raise UnsafeInputError(
            "stream entry holds a pickle payload; refused, nothing executed", "messages are JSON only"
        )
    import json

    try:
        doc = json.loads(raw)
        kind, version = doc.get("kind"), doc.get("v", SCHEMA_VERSION)
    except (ValueError, AttributeError) as err:
        raise UnsafeInputError(f"stream entry is not a JSON message: {err}", "messages are JSON objects") from None
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise UnsafeInputError(
            f"{kind} message of schema version {version}, newer than this process's {SCHEMA_VERSION}",
            "upgrade this station process to the producer's version",
        )
    cls = MESSAGE_KINDS.get(kind)
    if cls is None:
        raise UnsafeInputError(f"unknown message kind {kind!r}", f"known kinds: {sorted(MESSAGE_KINDS)}")
    try:
        return cls.from_json(raw)
    except ValidationError as err:
        where = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()[:5])
        raise UnsafeInputError(
            f"{kind} message does not match its schema: {where}",
            "the producer must send messages built from inspector.contracts.messages",
        ) from None


def _id(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class StationBus:
    """The streams and keys of one station on one Redis connection."""

    def __init__(self, client: redis.Redis, cfg: StationConfig) -> None:
        self.r = client
        self.cfg = cfg
        self.names = Names(cfg.redis.prefix, cfg.station.id)
        self._commit = self.r.register_script(_COMMIT_VERDICT)
        self._publish = self.r.register_script(_PUBLISH_FRAME)

    # -- publishing ---------------------------------------------------------------------------
    def publish_frame(self, meta: FrameMeta, image: bytes) -> str:
        """Append a frame; the stream stays at ``frames_maxlen``. A trimmed frame the inspection group never
        received is dead-lettered and counted ``not_inspected`` (the line rejects it: no verdict, no PASS)."""
        n = self.names
        return _id(
            self._publish(
                keys=[n.frames, n.counters, n.dead_letter],
                args=[
                    self.cfg.redis.frames_maxlen,
                    self.cfg.worker.group,
                    meta.to_json(),
                    image,
                    self.cfg.redis.events_maxlen,
                ],
            )
        )

    def publish_event(self, event: Event) -> str:
        return _id(
            self.r.xadd(
                self.names.events,
                {STREAM_FIELD_MESSAGE: event.to_json()},
                maxlen=self.cfg.redis.events_maxlen,
                approximate=True,
            )
        )

    def commit_verdicts(self, items: list[tuple[Verdict, str]]) -> list[bool]:
        """Atomically publish each verdict and ack its frame entry; False where the frame had one already.

        With ``redis.wait_replicas`` N > 0 (the default with Sentinel) the commits are followed, on the same
        connection, by ``WAIT N redis.wait_timeout_ms``, and the frames are acknowledged (XACK) only once N
        replicas hold the verdicts; fewer raises :class:`NotReplicated` and the frames stay pending, to be
        reclaimed and committed again (exactly once: the done key)."""
        if not items:
            return []
        replicas = self.cfg.redis.commit_replicas
        try:
            out = self._commit_batch(items, replicas)
        except NoScriptError:  # a failover between loading the script and running it: the new master lacks it
            out = self._commit_batch(items, replicas)
        if replicas:
            reached = int(out.pop())
            if reached < replicas:
                raise NotReplicated(
                    f"verdict commit of {len(items)} frame(s) reached {reached} of {replicas} replica(s) within "
                    f"{self.cfg.redis.wait_timeout_ms} ms (redis.wait_replicas): not acknowledged, retried",
                    "check the replicas (`INFO replication` on the master); redis.wait_replicas 0 trades this wait "
                    "for the loss of verdicts acknowledged just before a failover",
                )
            ids = [eid for _v, eid in items if eid]
            if ids:
                self.r.xack(self.names.frames, self.cfg.worker.group, *ids)
        return [bool(x) for x in out]

    def _commit_batch(self, items: list[tuple[Verdict, str]], replicas: int) -> list[object]:
        pipe = self.r.pipeline(transaction=False)
        n = self.names
        ack_in_script = "0" if replicas else "1"
        for verdict, entry_id in items:
            self._commit(
                keys=[n.done(verdict.frame_id), n.verdicts, n.frames, n.counters],
                args=[
                    self.cfg.worker.group,
                    entry_id or "",
                    verdict.id,
                    self.cfg.retention.stream_max_age_s,
                    self.cfg.redis.verdicts_maxlen,
                    verdict.to_json(),
                    verdict.decision.value.lower(),
                    ack_in_script,
                ],
                client=pipe,
            )
        if replicas:  # WAIT counts the writes of this connection: it must run on the pipeline's own connection
            pipe.execute_command("WAIT", replicas, self.cfg.redis.wait_timeout_ms)
        return list(pipe.execute())

    def dead_letter(self, entry: Entry, reason: str, deliveries: int) -> None:
        fields = dict(entry.fields or {})
        fields[b"reason"] = reason.encode()
        fields[b"entry_id"] = entry.entry_id.encode()
        fields[b"deliveries"] = str(deliveries).encode()
        pipe = self.r.pipeline(transaction=False)
        pipe.xadd(self.names.dead_letter, fields, maxlen=self.cfg.redis.events_maxlen, approximate=True)
        pipe.hincrby(self.names.counters, "dead_letter", 1)
        pipe.execute()

    def ack(self, entry_ids: list[str]) -> None:
        if entry_ids:
            self.r.xack(self.names.frames, self.cfg.worker.group, *entry_ids)

    def is_done(self, frame_ids: list[str]) -> list[bool]:
        if not frame_ids:
            return []
        pipe = self.r.pipeline(transaction=False)
        for fid in frame_ids:
            pipe.exists(self.names.done(fid))
        return [bool(x) for x in pipe.execute()]

    def count(self, field: str, by: int = 1) -> None:
        self.r.hincrby(self.names.counters, field, by)

    def counters(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.r.hgetall(self.names.counters).items()}

    # -- consuming ----------------------------------------------------------------------------
    def ensure_group(self, stream: str, group: str, start: str = "0") -> None:
        try:
            self.r.xgroup_create(stream, group, id=start, mkstream=True)
        except ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    def read_new(self, stream: str, group: str, consumer: str, count: int, block_ms: int | None) -> list[Entry]:
        resp = self.r.xreadgroup(group, consumer, {stream: ">"}, count=count, block=block_ms)
        out: list[Entry] = []
        for _stream, entries in resp or []:
            out += [Entry(_id(eid), fields or None) for eid, fields in entries]
        return out

    def read_pending_own(self, stream: str, group: str, consumer: str, count: int) -> list[Entry]:
        """Entries delivered to ``consumer`` and not acknowledged (its previous run died): XREADGROUP from ``0``."""
        resp = self.r.xreadgroup(group, consumer, {stream: "0"}, count=count)
        out: list[Entry] = []
        for _stream, entries in resp or []:
            out += [Entry(_id(eid), fields or None) for eid, fields in entries]
        return out

    def reclaim(self, stream: str, group: str, consumer: str, min_idle_ms: int, count: int) -> list[Entry]:
        """Take over entries pending longer than ``min_idle_ms`` (their consumer died or hung)."""
        resp = self.r.xautoclaim(stream, group, consumer, min_idle_time=min_idle_ms, start_id="0-0", count=count)
        claimed = resp[1] if len(resp) > 1 else []
        out = [Entry(_id(eid), fields or None) for eid, fields in claimed if eid is not None]
        if len(resp) > 2:  # Redis 7 lists entries deleted while pending separately
            out += [Entry(_id(eid), None) for eid in resp[2]]
        elif any(eid is None for eid, _ in claimed):  # Redis 6.2 returns them as nil, without their id
            out += self._deleted_pending(stream, group, consumer, {e.entry_id for e in out})
        return out

    def _deleted_pending(self, stream: str, group: str, consumer: str, known: set[str]) -> list[Entry]:
        rows = self.r.xpending_range(stream, group, min="-", max="+", count=1000, consumername=consumer)
        ids = [_id(row["message_id"]) for row in rows if _id(row["message_id"]) not in known]
        return [Entry(eid, None) for eid in ids if not self.r.xrange(stream, eid, eid)]

    def delivery_counts(self, stream: str, group: str, entry_ids: list[str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for eid in entry_ids:
            rows = self.r.xpending_range(stream, group, min=eid, max=eid, count=1)
            counts[eid] = int(rows[0]["times_delivered"]) if rows else 1
        return counts

    def group_info(self, stream: str) -> list[dict[str, object]]:
        try:
            return [
                {(k.decode() if isinstance(k, bytes) else k): v for k, v in g.items()}
                for g in self.r.xinfo_groups(stream)
            ]
        except ResponseError:
            return []
