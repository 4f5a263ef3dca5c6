"""Verifying an audit chain (``AuditLog.verify``): walk the rows in order, then compare the walked head with the
database's head record and the external anchors, and name what was done (``VerifyReport.kinds``).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from inspector.store.audit_signing import GENESIS, Anchor, head_mac, row_hash, row_mac
from inspector.store.models import AuditHeadRow, AuditRow


@dataclass
class VerifyReport:
    """What ``AuditLog.verify`` found: problems by kind, the first bad rows, notes that are not problems."""

    ok: bool
    rows: int
    head: str
    problems: list[str] = field(default_factory=list)
    bad_ids: list[int] = field(default_factory=list)
    kinds: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    legacy_rows: int = 0

    @property
    def first_bad_id(self) -> int | None:
        return self.bad_ids[0] if self.bad_ids else None

    def bad(self, kind: str, problem: str, row_id: int | None = None) -> None:
        self.kinds.add(kind)
        self.problems.append(problem)
        if row_id is not None and row_id not in self.bad_ids:
            self.bad_ids.append(row_id)


@dataclass
class ChainWalk:
    """The state of one walk over the rows, oldest first."""

    key: bytes | None
    checkpoints: dict[int, str]
    prev: str = GENESIS
    last_seq: int = 0
    hashes: dict[int, str] = field(default_factory=dict)
    keyed_seen: bool = False
    keyed_rows: int = 0
    legacy: list[int] = field(default_factory=list)
    rewritten: list[tuple[int, int]] = field(default_factory=list)  # (row id, seq)

    def check(self, r: AuditRow, report: VerifyReport) -> None:
        expected = self.last_seq + 1
        if r.seq != expected:
            report.bad(
                "deleted",
                f"row {r.id}: sequence {r.seq} follows {expected - 1}: {r.seq - expected} row(s) deleted before it",
                r.id,
            )
        if r.prev_hash != self.prev:
            report.bad(
                "deleted",
                f"row {r.id}: link to the previous row is broken (a row before it was deleted or edited)",
                r.id,
            )
        digest = row_hash(r.prev_hash, r.seq, r.ts, r.actor, r.action, r.target, r.old, r.new, r.details)
        if digest != r.hash:
            report.bad("edited", f"row {r.id}: content does not match its hash (edited)", r.id)
        elif self.key is not None and r.mac is None and not self.keyed_seen:
            self.legacy.append(r.seq)
        elif self.key is not None and not hmac.compare_digest(r.mac or "", row_mac(self.key, r.hash)):
            self.rewritten.append((r.id, r.seq))
        elif r.mac is not None:
            self.keyed_seen = True
        if r.seq in self.checkpoints and self.checkpoints[r.seq] != r.hash and digest == r.hash:
            self.rewritten.append((r.id, r.seq))
        self.keyed_rows += r.mac is not None
        self.hashes[r.seq] = r.hash
        self.prev, self.last_seq = r.hash, r.seq
        report.rows += 1

    def finish(self, report: VerifyReport) -> None:
        if self.rewritten:
            first_id, first_seq = min(self.rewritten, key=lambda t: t[1])
            report.bad_ids.extend(
                i for i, _ in sorted(set(self.rewritten), key=lambda t: t[1]) if i not in report.bad_ids
            )
            report.bad(
                "rewritten",
                f"chain rewritten from row {first_id} (seq {first_seq}) onwards: "
                f"{len(set(self.rewritten))} row(s) carry hashes recomputed without the station key "
                "(HMAC does not match)",
                first_id,
            )
        if self.legacy:
            report.legacy_rows = len(self.legacy)
            covered = (
                "signed by the first keyed row after them" if self.keyed_seen else "not yet covered by a keyed row"
            )
            report.notes.append(
                f"{len(self.legacy)} unkeyed legacy row(s) (seq {self.legacy[0]}..{self.legacy[-1]}, "
                f"written before the station key): {covered}"
            )
        if self.key is None and self.keyed_rows:
            report.bad(
                "key_missing",
                f"station key missing (INSPECTOR_AUDIT_KEY or secrets/audit.key) but {self.keyed_rows} "
                "row(s) are keyed: their HMACs cannot be checked (the key was removed or replaced)",
            )
        elif self.key is None and report.rows:
            report.notes.append(
                "no station key (INSPECTOR_AUDIT_KEY or secrets/audit.key): HMACs and anchors not checked"
            )


def check_heads(
    report: VerifyReport, walk: ChainWalk, key: bytes | None, db_head: AuditHeadRow | None, anchors: list[Anchor]
) -> None:
    """Compare the walked chain with the database's head record and the external anchors; one line per finding."""
    if key is None:
        return
    genuine_db_head = (
        db_head is not None
        and db_head.mac is not None
        and hmac.compare_digest(db_head.mac, head_mac(key, db_head.store_id, db_head.seq, db_head.hash))
    )
    _check_db_head(report, walk, db_head, genuine_db_head)
    store_id = db_head.store_id if db_head is not None else None
    ahead = _check_anchors(report, walk, store_id, anchors)
    if ahead and "tail_deleted" not in report.kinds:
        _report_anchors_ahead(report, walk.last_seq, ahead, genuine_db_head)
    if walk.keyed_seen and not anchors:
        report.notes.append(
            "no external anchor found (secrets/audit-head.json, Redis): a replaced database file "
            "cannot be told from the original"
        )


def _check_db_head(report: VerifyReport, walk: ChainWalk, db_head: AuditHeadRow | None, genuine_db_head: bool) -> None:
    """The database's head record against the walked chain: missing, ahead of the rows, or not signed by the key."""
    last = walk.last_seq
    rewritten = "rewritten" in report.kinds
    if db_head is None:
        if walk.keyed_seen:
            report.bad("tail_deleted", "the database's head record is missing (deleted)")
    elif db_head.seq > last:
        report.bad(
            "tail_deleted",
            f"tail deleted: the database's head record is at seq {db_head.seq}, the rows end at "
            f"seq {last} ({db_head.seq - last} row(s) missing)",
        )
    elif (
        walk.keyed_seen and (not genuine_db_head or db_head.seq != last or db_head.hash != walk.prev) and not rewritten
    ):
        report.bad(
            "tail_deleted",
            f"tail deleted: the database's head record (seq {db_head.seq}) is not signed with "
            "the station key: rows were removed and the record forged",
        )


def _check_anchors(report: VerifyReport, walk: ChainWalk, store_id: str | None, anchors: list[Anchor]) -> list[Anchor]:
    """Each external anchor against the walked chain; returns the anchors that record rows beyond its end."""
    last = walk.last_seq
    rewritten = "rewritten" in report.kinds
    ahead: list[Anchor] = []
    for a in anchors:
        if not a.signed:
            report.bad("anchor", f"{a.where}: its signature does not match (edited, or signed with another key)")
        elif store_id is not None and a.store_id != store_id:
            report.bad(
                "replaced",
                f"database replaced: {a.where} anchors another database (store id {a.store_id[:8]}…, "
                f"this one {store_id[:8]}…)",
            )
        elif a.seq > last:
            ahead.append(a)
        elif a.seq > 0 and walk.hashes.get(a.seq) != a.hash and not rewritten:
            report.bad("rewritten", f"chain rewritten: the row at seq {a.seq} is not the one {a.where} records")
    return ahead


def _report_anchors_ahead(report: VerifyReport, last: int, ahead: list[Anchor], genuine_db_head: bool) -> None:
    """Anchors beyond the rows' end: an older copy of the database (genuine head) or a deleted tail."""
    top = max(a.seq for a in ahead)
    where = " and ".join(a.where for a in ahead)
    if genuine_db_head:
        report.bad(
            "replaced",
            f"database replaced by an older copy: it ends at seq {last}, {where} record seq {top} "
            f"({top - last} row(s) newer than this file)",
        )
    else:
        report.bad("tail_deleted", f"tail deleted: the rows end at seq {last}, {where} record seq {top}")
