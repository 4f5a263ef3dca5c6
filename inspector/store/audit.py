"""Append-only, hash-chained audit trail of every action that changes what the line does.

Each row stores ``prev_hash`` (the hash of the row before it, or 64 zeros for the first) and
``hash = sha256(prev_hash + canonical JSON of {seq, ts, actor, action, target, old, new, details})``.
Editing any field of a row breaks its hash; deleting a row breaks the next row's ``prev_hash`` link and
the contiguity of ``seq``. Appends are serialised (a process lock, plus ``BEGIN IMMEDIATE`` on SQLite
or a transaction-scoped advisory lock on PostgreSQL) and ``prev_hash`` is UNIQUE, so the chain never
forks. Pass ``session=`` to record inside the transaction of the action itself (atomic with it).

Limit: deleting the newest rows is only visible against an external anchor (``head()`` published
elsewhere, e.g. in a report or another system).
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from inspector.contracts.messages import now
from inspector.store.models import AuditRow

if TYPE_CHECKING:
    from inspector.store.db import Store

GENESIS = "0" * 64
AUDIT_LOCK_KEY = 0x1D5_0002
_LOCK = threading.Lock()


def canonical(value: Any) -> str:
    """Canonical JSON: sorted keys, no spaces, UTF-8; non-JSON values become strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def plain(value: Any) -> Any:
    """The JSON value as it will read back from the database."""
    return json.loads(canonical(value))


def row_hash(prev_hash: str, seq: int, ts: float, actor: str, action: str, target: str,
             old: Any, new: Any, details: Any) -> str:
    body = canonical({"seq": seq, "ts": ts, "actor": actor, "action": action, "target": target,
                      "old": old, "new": new, "details": details})
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


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


@dataclass
class VerifyReport:
    ok: bool
    rows: int
    head: str
    problems: list[str] = field(default_factory=list)
    bad_ids: list[int] = field(default_factory=list)

    @property
    def first_bad_id(self) -> int | None:
        return self.bad_ids[0] if self.bad_ids else None


def _entry(r: AuditRow) -> AuditEntry:
    return AuditEntry(r.id, r.seq, r.ts, r.actor, r.action, r.target, r.old, r.new, r.details, r.hash)


class AuditLog:
    def __init__(self, store: Store) -> None:
        self.store = store

    def record(self, actor: str, action: str, target: str, old: Any = None, new: Any = None,
               details: dict[str, Any] | None = None, session: Session | None = None) -> AuditEntry:
        """Append one row. With ``session`` the row commits (or rolls back) with the caller's transaction."""
        if session is not None:
            return self._append(session, actor, action, target, old, new, details or {})
        with self.store.session() as s:
            return self._append(s, actor, action, target, old, new, details or {})

    def _append(self, s: Session, actor: str, action: str, target: str, old: Any, new: Any,
                details: dict[str, Any]) -> AuditEntry:
        with _LOCK:
            if s.get_bind().dialect.name == "postgresql":
                s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": AUDIT_LOCK_KEY})
            last = s.execute(select(AuditRow.seq, AuditRow.hash).order_by(AuditRow.seq.desc()).limit(1)).first()
            seq, prev = (last.seq + 1, last.hash) if last else (1, GENESIS)
            ts, old, new, details = now(), plain(old), plain(new), plain(details)
            digest = row_hash(prev, seq, ts, actor, action, target, old, new, details)
            row = AuditRow(seq=seq, ts=ts, actor=actor, action=action, target=target, old=old, new=new,
                           details=details, prev_hash=prev, hash=digest)
            s.add(row)
            s.flush()
            return _entry(row)

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

    def verify(self, batch: int = 1000) -> VerifyReport:
        """Walk the chain in order; report every row whose hash, link or sequence number is wrong."""
        report = VerifyReport(ok=True, rows=0, head=GENESIS)
        prev, expected_seq, after = GENESIS, 1, 0
        with self.store.session() as s:
            while True:
                rows = s.scalars(select(AuditRow).where(AuditRow.seq > after).order_by(AuditRow.seq).limit(batch)).all()
                if not rows:
                    break
                for r in rows:
                    _check_row(r, prev, expected_seq, report)
                    prev, expected_seq, after = r.hash, r.seq + 1, r.seq
                    report.rows += 1
        report.head = prev
        report.ok = not report.problems
        return report


def _check_row(r: AuditRow, prev: str, expected_seq: int, report: VerifyReport) -> None:
    if r.seq != expected_seq:
        _bad(report, r.id, f"row {r.id}: sequence {r.seq} follows {expected_seq - 1}: "
                           f"{r.seq - expected_seq} row(s) deleted before it")
    if r.prev_hash != prev:
        _bad(report, r.id, f"row {r.id}: link to the previous row is broken (a row before it was deleted or edited)")
    digest = row_hash(r.prev_hash, r.seq, r.ts, r.actor, r.action, r.target, r.old, r.new, r.details)
    if digest != r.hash:
        _bad(report, r.id, f"row {r.id}: content does not match its hash (edited)")


def _bad(report: VerifyReport, row_id: int, problem: str) -> None:
    report.problems.append(problem)
    if row_id not in report.bad_ids:
        report.bad_ids.append(row_id)
