"""The one reconciliation every fault test ends with.

Given what the camera side knows (frames it published, frames whose publish raised) and what Redis holds
(the verdicts stream, the dead-letter stream, the counters), check:

1. every frame sent has exactly one outcome: one verdict, or (no verdict and) a dead letter;
   a frame whose publish raised ("not sent" on the camera side) has at most one verdict;
2. no duplicate verdicts (frame ids unique on the verdicts stream, and the ``verdicts`` counter agrees);
3. no part passes without a PASS verdict in time: the line accepts a part only for a PASS whose commit
   time (the Redis time in the verdict's stream entry id) is within ``deadline_s`` of its capture; every
   other part is a fail-safe reject. Checked by replaying the verdicts through the real
   :class:`inspector.line.decider.LineDecider` when it is importable, else by the same rule inline.

The report is printed (figures in the test log) and returned for further assertions.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field

import redis

from inspector.bus.streams import decode_message
from inspector.contracts.messages import Decision, FrameMeta, Verdict
from inspector.contracts.names import Names


@dataclass
class CameraLedger:
    """What the camera side knows: frames published, and frames whose publish raised (outcome unknown)."""

    sent: dict[str, FrameMeta] = field(default_factory=dict)
    not_sent: dict[str, FrameMeta] = field(default_factory=dict)

    def ok(self, meta: FrameMeta) -> None:
        self.sent[meta.id] = meta

    def failed(self, meta: FrameMeta) -> None:
        self.not_sent[meta.id] = meta


@dataclass
class Report:
    sent: int = 0
    not_sent: int = 0
    not_sent_but_committed: int = 0
    verdicts: int = 0
    decisions: dict[str, int] = field(default_factory=dict)
    dead_letter_only: int = 0
    dead_letter_with_verdict: int = 0
    dead_letter_entries: int = 0
    unreadable_dead_letters: int = 0
    accepted: int = 0
    rejected: int = 0
    rejected_late_or_missing: int = 0
    lost: list[str] = field(default_factory=list)
    duplicate_verdicts: list[str] = field(default_factory=list)
    unknown_verdicts: list[str] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        d = asdict(self)
        for k in ("lost", "duplicate_verdicts", "unknown_verdicts"):
            d[k] = len(d[k])
        return json.dumps(d, sort_keys=True)


def _entry_ms(entry_id: bytes | str) -> int:
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(raw.split("-")[0])


def read_verdict_entries(client: redis.Redis, names: Names) -> list[tuple[Verdict, float]]:
    """(verdict, commit time in epoch seconds from its entry id) for the whole verdicts stream."""
    out: list[tuple[Verdict, float]] = []
    for eid, fields in client.xrange(names.verdicts):
        v = decode_message(fields[b"m"])
        assert isinstance(v, Verdict)
        out.append((v, _entry_ms(eid) / 1000.0))
    return out


def read_dead_letters(client: redis.Redis, names: Names) -> tuple[Counter[str], int]:
    """(count of dead letters per frame id, dead letters whose message cannot be read)."""
    per_frame: Counter[str] = Counter()
    unreadable = 0
    for _eid, fields in client.xrange(names.dead_letter):
        try:
            meta = decode_message(fields.get(b"m"))
            per_frame[meta.id] += 1
        except Exception:  # noqa: BLE001 - hostile payloads are dead-lettered as they came
            unreadable += 1
    return per_frame, unreadable


def _line_accepts(verdicts: list[tuple[Verdict, float]], sent: dict[str, FrameMeta], deadline_s: float) -> set[str]:
    """Frame ids the line accepts: a PASS committed within the deadline of capture (first outcome wins).

    Replays captures and verdicts in time order through the real LineDecider when it is importable."""
    try:
        from inspector.line.decider import LineDecider, Part, Signal
    except ImportError:  # pragma: no cover - the line package is optional in lean checkouts
        return {v.frame_id for v, t in verdicts if v.decision is Decision.PASS and t - v.captured_at <= deadline_s}
    now = [0.0]
    decider = LineDecider(deadline_s, clock=lambda: now[0], stale_after_s=1e9)
    events: list[tuple[float, int, object]] = [(m.captured_at, 0, m) for m in sent.values()]
    events += [(t, 1, v) for v, t in verdicts]
    accepted: set[str] = set()
    for t, kind, item in sorted(events, key=lambda e: (e[0], e[1])):
        now[0] = t
        decider.expire(t)
        if kind == 0:
            decider.register(Part.from_meta(item))  # type: ignore[arg-type]
            continue
        out = decider.on_verdict(item, now=t)  # type: ignore[arg-type]
        if out is not None and out.signal is Signal.ACCEPT:
            accepted.add(out.part.frame_id)
    return accepted


def reconcile(
    client: redis.Redis,
    names: Names,
    ledger: CameraLedger,
    deadline_s: float = 0.5,
    extra_dead_ok: set[str] | None = None,
) -> Report:
    """Check the three invariants (see module doc); print and return the report. Raises AssertionError."""
    entries = read_verdict_entries(client, names)
    dead, unreadable = read_dead_letters(client, names)
    counters = {k.decode(): int(v) for k, v in client.hgetall(names.counters).items()}
    per_frame = Counter(v.frame_id for v, _ in entries)
    known = set(ledger.sent) | set(ledger.not_sent) | (extra_dead_ok or set())
    accepted = _line_accepts(entries, ledger.sent, deadline_s)
    rep = Report(
        sent=len(ledger.sent),
        not_sent=len(ledger.not_sent),
        verdicts=len(entries),
        decisions=dict(Counter(v.decision.value for v, _ in entries)),
        dead_letter_entries=sum(dead.values()),
        unreadable_dead_letters=unreadable,
        counters=counters,
        versions=dict(Counter(v.model_version or "none" for v, _ in entries)),
    )
    rep.duplicate_verdicts = [f for f, n in per_frame.items() if n > 1]
    rep.unknown_verdicts = [f for f in per_frame if f not in known]
    for fid in ledger.sent:
        if per_frame[fid] == 1:
            rep.dead_letter_with_verdict += dead[fid] > 0
        elif dead[fid] > 0:
            rep.dead_letter_only += 1
        else:
            rep.lost.append(fid)
    rep.not_sent_but_committed = sum(1 for fid in ledger.not_sent if per_frame[fid] >= 1)
    rep.accepted = len(accepted & set(ledger.sent))
    rep.rejected = rep.sent - rep.accepted
    passes = {v.frame_id for v, _ in entries if v.decision is Decision.PASS}
    rep.rejected_late_or_missing = len((set(ledger.sent) - passes) - {v.frame_id for v, _ in entries}) + len(
        passes - accepted
    )
    print("RECONCILE", rep.to_json())
    _assert(rep, entries, accepted, counters)
    return rep


def _assert(rep: Report, entries: list[tuple[Verdict, float]], accepted: set[str], counters: dict[str, int]) -> None:
    assert not rep.duplicate_verdicts, (
        f"{len(rep.duplicate_verdicts)} frames got two verdicts: {rep.duplicate_verdicts[:3]}"
    )
    assert not rep.lost, f"{len(rep.lost)} frames sent have no outcome (no verdict, no dead letter): {rep.lost[:3]}"
    assert not rep.unknown_verdicts, f"verdicts for frames never sent: {rep.unknown_verdicts[:3]}"
    assert counters.get("verdicts", 0) == len(entries), (
        f"verdicts counter {counters.get('verdicts')} != stream {len(entries)}"
    )
    by_id = {v.frame_id: (v, t) for v, t in entries}
    for fid in accepted:
        v, _t = by_id[fid]
        assert v.decision is Decision.PASS, f"line accepted {fid} without a PASS verdict"
    for v, _t in entries:
        if v.decision is not Decision.PASS:
            assert v.reject, f"{v.frame_id}: {v.decision.value} must reject the part"
