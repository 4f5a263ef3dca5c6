"""Append-only, hash-chained, keyed audit trail of every action that changes what the line does.

Each row stores ``prev_hash`` (the hash of the row before it, or 64 zeros for the first),
``hash = sha256(prev_hash + canonical JSON of {seq, ts, actor, action, target, old, new, details})`` and
``mac = HMAC-SHA256(station key, hash)``. The station key is held outside the database: the environment
variable ``INSPECTOR_AUDIT_KEY``, else ``<data_dir>/secrets/audit.key`` (generated at first use, mode 0600).

The chain head (store id, sequence number, hash) is kept three times, each copy signed with the key: in the
database's ``audit_head`` row (same transaction as the append), in Redis (``Names.audit_head``) and in
``<data_dir>/secrets/audit-head.json`` after every commit, plus a line in ``audit-checkpoints.jsonl`` every
:data:`CHECKPOINT_EVERY` rows. :meth:`AuditLog.verify` names what was done (``VerifyReport.kinds``):

* ``edited``: a row's content no longer matches its hash;
* ``rewritten``: hashes and links are consistent but a row's HMAC is wrong or missing (the chain was
  recomputed from an edited row onwards without the key), or an anchor's hash differs from the row's;
* ``tail_deleted``: the newest rows are gone (the database's own head record, or an anchor, is ahead and
  the database head record is not a genuine signed older head), also ``deleted`` for rows missing mid-chain;
* ``replaced``: the database is internally consistent but older than the anchors (an older copy of the
  file), or it is another database (another store id).

Rows written before the key existed (``mac`` NULL, migration 0002) are "unkeyed legacy rows": they verify by
hash and link, and the first keyed row signs the last of them through its ``prev_hash``. Appends are
serialised (a process lock, plus ``BEGIN IMMEDIATE`` on SQLite or a transaction-scoped advisory lock on
PostgreSQL) and ``prev_hash`` is UNIQUE, so the chain never forks. Pass ``session=`` to record inside the
transaction of the action itself (atomic with it; the anchors are written when it commits).

Limit: someone holding the station key (or root on the station) can rewrite everything; the Redis and file
anchors then only help if they are copied off the machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import event, select, text
from sqlalchemy.orm import Session

from inspector.contracts.messages import now
from inspector.store.audit_signing import (
    GENESIS,
    KEY_ENV,
    Anchor,
    AuditKeyError,
    canonical,
    head_mac,
    key_path,
    plain,
    read_secret,
    read_text_or_none,
    row_hash,
    row_mac,
    secrets_dir,
    station_key,
    write_secret,
)
from inspector.store.audit_verify import ChainWalk, VerifyReport, check_heads
from inspector.store.models import AuditHeadRow, AuditRow

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)

AUDIT_LOCK_KEY = 0x1D5_0002
CHECKPOINT_EVERY = 100
REDIS_RETRY_S = 30.0
_LOCK = threading.Lock()
_REDIS_FAILED: dict[str, float] = {}  # where the station's Redis did not answer, and when (monotonic)

# Set the Redis anchor only forward, and never over the anchor of another store (kept as evidence).
_ANCHOR_LUA = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, old = pcall(cjson.decode, cur)
  if ok and old.store_id ~= ARGV[2] then return -1 end
  if ok and tonumber(old.seq) >= tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[3])
return 1
"""


@dataclass(frozen=True)
class AuditEntry:
    id: int
    seq: int
    ts: float
    actor: str
    action: str
    target: str
    old: Any
    new: Any
    details: dict[str, Any]
    hash: str


def _entry(r: AuditRow) -> AuditEntry:
    return AuditEntry(r.id, r.seq, r.ts, r.actor, r.action, r.target, r.old, r.new, r.details, r.hash)


class SessionSource(Protocol):
    """What the audit trail needs of its store (:class:`inspector.store.db.Store`, which imports this module):
    one transaction at a time; ``data_dir`` and ``cfg`` are read when the store has them."""

    def session(self) -> AbstractContextManager[Session]: ...


class AuditLog:
    """The audit trail of one store. ``data_dir`` (from the station config, else the SQLite file's folder)
    holds the key and the file anchors; the Redis anchor is written when a client is attached
    (:meth:`anchor_to`) or the station's Redis is found (``redis.url``, or a running embedded server)."""

    def __init__(self, store: SessionSource) -> None:
        self.store = store
        self._key: bytes | None = None
        self._redis: redis.Redis | None = None
        self._redis_key: str | None = None

    # ------------------------------------------------------------------ key and anchors
    @property
    def data_dir(self) -> Path | None:
        return getattr(self.store, "data_dir", None)

    def key(self, create: bool = True) -> bytes | None:
        if self._key is None:
            self._key = station_key(self.data_dir, create)
        return self._key

    def anchor_to(self, client: redis.Redis, key: str) -> None:
        """Also anchor the head in this Redis key at every write."""
        self._redis, self._redis_key = client, key

    def _station_redis(self) -> tuple[redis.Redis, str] | None:
        if self._redis is not None and self._redis_key:
            return self._redis, self._redis_key
        cfg = getattr(self.store, "cfg", None)
        where = str(cfg.redis.url or cfg.station.data_dir) if cfg is not None else ""
        if cfg is None or time.monotonic() - _REDIS_FAILED.get(where, -REDIS_RETRY_S) < REDIS_RETRY_S:
            return None
        from inspector.bus.connection import client_for_url, resolve_url
        from inspector.contracts.names import Names

        try:  # short timeouts and retries: a dead Redis must not slow down the action being audited
            url = resolve_url(cfg, start_embedded=False)
            section = cfg.redis.model_copy(
                update={
                    "socket_timeout_s": min(cfg.redis.socket_timeout_s, 0.5),
                    "reconnect": cfg.redis.reconnect.model_copy(
                        update={"initial_s": 0.01, "max_s": 0.05, "give_up_s": 0.05}
                    ),
                }
            )
            client = client_for_url(url, section)
            client.ping()
        except Exception:  # no Redis for this station now: the file anchor still holds
            _REDIS_FAILED[where] = time.monotonic()
            return None
        self._redis, self._redis_key = client, Names(cfg.redis.prefix, cfg.station.id).audit_head
        return self._redis, self._redis_key

    @property
    def head_file(self) -> Path | None:
        return secrets_dir(self.data_dir) / "audit-head.json" if self.data_dir else None

    @property
    def checkpoint_file(self) -> Path | None:
        return secrets_dir(self.data_dir) / "audit-checkpoints.jsonl" if self.data_dir else None

    def _anchor_now(self) -> None:
        """Publish the committed head (read back from the database) to the file and Redis anchors."""
        key = self.key()
        if key is None:
            return
        try:
            with self.store.session() as s:
                h = s.get(AuditHeadRow, 1)
                if h is None or h.mac is None:
                    return
                store_id, seq, digest = h.store_id, h.seq, h.hash
        except Exception as err:  # the append committed; a missing anchor is reported by verify
            log.warning("audit anchor: cannot read the head: %s", err)
            return
        body = canonical(
            {"store_id": store_id, "seq": seq, "hash": digest, "ts": now(), "mac": head_mac(key, store_id, seq, digest)}
        )
        if self.head_file is not None:
            try:
                self._write_head_file(body, store_id, seq, key)
            except OSError as err:
                log.warning("audit anchor: cannot write %s: %s", self.head_file, err)
        target = self._station_redis()
        if target is not None:
            client, rkey = target
            try:
                if client.eval(_ANCHOR_LUA, 1, rkey, seq, store_id, body) == -1:
                    log.warning("audit anchor: %s anchors another database; left as it is", rkey)
            except Exception as err:
                log.warning("audit anchor: Redis %s not written: %s", rkey, err)
                self._redis = None

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        assert self.head_file is not None
        self.head_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.head_file.with_suffix(".lock"), "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _write_head_file(self, body: str, store_id: str, seq: int, key: bytes) -> None:
        assert self.head_file is not None and self.checkpoint_file is not None
        with self._file_lock():
            old = Anchor.parse("file", read_text_or_none(self.head_file), key)
            if old is not None and old.signed and old.store_id != store_id:
                log.warning(
                    "audit anchor: %s anchors another database (%s); left as it is", self.head_file, old.store_id
                )
                return
            if old is not None and old.signed and old.seq >= seq:
                return
            tmp = self.head_file.with_suffix(f".tmp{os.getpid()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(body)
            os.replace(tmp, self.head_file)
            if old is None or seq // CHECKPOINT_EVERY > max(old.seq, 0) // CHECKPOINT_EVERY:
                fd = os.open(self.checkpoint_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                with os.fdopen(fd, "a") as fh:
                    fh.write(body + "\n")

    # ------------------------------------------------------------------ writing
    def record(
        self,
        actor: str,
        action: str,
        target: str,
        old: Any = None,
        new: Any = None,
        details: dict[str, Any] | None = None,
        session: Session | None = None,
    ) -> AuditEntry:
        """Append one row. With ``session`` the row commits (or rolls back) with the caller's transaction."""
        key = self.key()
        if session is not None:
            entry = self._append(session, key, actor, action, target, old, new, details or {})
            event.listen(session, "after_commit", lambda _s: self._anchor_now(), once=True)
            return entry
        with self.store.session() as s:
            entry = self._append(s, key, actor, action, target, old, new, details or {})
        self._anchor_now()
        return entry

    def _append(
        self,
        s: Session,
        key: bytes | None,
        actor: str,
        action: str,
        target: str,
        old: Any,
        new: Any,
        details: dict[str, Any],
    ) -> AuditEntry:
        with _LOCK:
            if s.get_bind().dialect.name == "postgresql":
                s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": AUDIT_LOCK_KEY})
            last = s.execute(select(AuditRow.seq, AuditRow.hash).order_by(AuditRow.seq.desc()).limit(1)).first()
            seq, prev = (last.seq + 1, last.hash) if last else (1, GENESIS)
            ts, old, new, details = now(), plain(old), plain(new), plain(details)
            digest = row_hash(prev, seq, ts, actor, action, target, old, new, details)
            row = AuditRow(
                seq=seq,
                ts=ts,
                actor=actor,
                action=action,
                target=target,
                old=old,
                new=new,
                details=details,
                prev_hash=prev,
                hash=digest,
                mac=row_mac(key, digest) if key else None,
            )
            s.add(row)
            head = s.get(AuditHeadRow, 1)
            if head is None:
                head = AuditHeadRow(id=1, store_id=uuid.uuid4().hex, seq=0, hash=GENESIS)
                s.add(head)
            head.seq, head.hash = seq, digest
            head.mac = head_mac(key, head.store_id, seq, digest) if key else None
            s.flush()
            return _entry(row)

    # ------------------------------------------------------------------ reading
    def entries(self, limit: int = 50, action: str | None = None) -> list[AuditEntry]:
        """Newest first."""
        q = select(AuditRow).order_by(AuditRow.seq.desc()).limit(limit)
        if action:
            q = q.where(AuditRow.action == action)
        with self.store.session() as s:
            return [_entry(r) for r in s.scalars(q)]

    def head(self) -> str:
        with self.store.session() as s:
            return s.scalar(select(AuditRow.hash).order_by(AuditRow.seq.desc()).limit(1)) or GENESIS

    def anchors(self, client: redis.Redis | None = None) -> list[Anchor]:
        """The external anchors that exist now (file, Redis)."""
        key = self.key(create=False)
        out: list[Anchor] = []
        if self.head_file is not None:
            a = Anchor.parse(f"anchor file {self.head_file}", read_text_or_none(self.head_file), key)
            if a is not None:
                out.append(a)
        target = (client, self._redis_key or self._default_redis_key()) if client is not None else self._station_redis()
        if target is not None and target[1]:
            try:
                a = Anchor.parse(f"Redis key {target[1]}", target[0].get(target[1]), key)
            except Exception as err:
                log.warning("audit verify: Redis anchor not read: %s", err)
                a = None
            if a is not None:
                out.append(a)
        return out

    def _default_redis_key(self) -> str | None:
        cfg = getattr(self.store, "cfg", None)
        if cfg is None:
            return None
        from inspector.contracts.names import Names

        return Names(cfg.redis.prefix, cfg.station.id).audit_head

    def checkpoints(self) -> dict[int, str]:
        key = self.key(create=False)
        out: dict[int, str] = {}
        text_ = read_text_or_none(self.checkpoint_file) if self.checkpoint_file else None
        for line in (text_ or "").splitlines():
            a = Anchor.parse("checkpoint", line, key)
            if a is not None and a.signed:
                out[a.seq] = a.hash
        return out

    def verify(self, batch: int = 1000, client: redis.Redis | None = None) -> VerifyReport:
        """Walk the chain in order, then compare its head with the database's head record and the anchors."""
        key = self.key(create=False)
        report = VerifyReport(ok=True, rows=0, head=GENESIS)
        walk = ChainWalk(key, self.checkpoints())
        with self.store.session() as s:
            after = 0
            while True:
                rows = s.scalars(select(AuditRow).where(AuditRow.seq > after).order_by(AuditRow.seq).limit(batch)).all()
                if not rows:
                    break
                for r in rows:
                    walk.check(r, report)
                    after = r.seq
            db_head = s.get(AuditHeadRow, 1)
        walk.finish(report)
        report.head = walk.prev
        check_heads(report, walk, key, db_head, self.anchors(client))
        report.ok = not report.problems
        return report


__all__ = [
    "GENESIS",
    "KEY_ENV",
    "Anchor",
    "AuditEntry",
    "AuditKeyError",
    "AuditLog",
    "VerifyReport",
    "canonical",
    "key_path",
    "plain",
    "read_secret",
    "row_hash",
    "station_key",
    "write_secret",
]
