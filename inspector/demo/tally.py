"""The demo's readers of the station streams: what the line saw (verdicts) and what the station said (events)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import redis

from inspector.bus.streams import decode_message
from inspector.contracts.messages import Event, EventType, Verdict


@dataclass
class _StreamReader:
    client: redis.Redis
    stream: str
    last_id: str = "0-0"

    def start(self) -> None:
        """Read from the stream's last id: only what comes after."""
        info = self.client.xinfo_stream(self.stream) if self.client.exists(self.stream) else None
        self.last_id = info["last-generated-id"].decode() if info else "0-0"


@dataclass
class VerdictTally(_StreamReader):
    """Reads the verdicts stream from where the demo started and tallies what the line saw."""

    frames: set[str] = field(default_factory=set)
    verdicts: int = 0
    duplicates: int = 0
    decisions: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    truth_vs_decision: Counter[tuple[str, str]] = field(default_factory=Counter)
    first_t: float | None = None
    last_t: float | None = None
    last: Verdict | None = None

    def poll(self, block_ms: int = 200) -> int:
        resp = self.client.xread({self.stream: self.last_id}, count=1000, block=block_ms)
        n = 0
        for _s, entries in resp or []:
            for eid, fields in entries:
                self.last_id = eid.decode()
                v = decode_message(fields[b"m"])
                assert isinstance(v, Verdict)
                self._add(v)
                n += 1
        return n

    def _add(self, v: Verdict) -> None:
        now = time.monotonic()
        self.first_t = self.first_t or now
        self.last_t = now
        self.verdicts += 1
        if v.frame_id in self.frames:
            self.duplicates += 1
            return
        self.frames.add(v.frame_id)
        self.decisions[v.decision.value] += 1
        if v.latency_ms is not None:
            self.latencies.append(v.latency_ms)
        if v.truth:
            self.truth_vs_decision[(v.truth, v.decision.value)] += 1
        self.last = v

    def fps(self, started: float) -> float:
        if not self.last_t:
            return 0.0
        return len(self.frames) / max(1e-6, self.last_t - started)


@dataclass
class EventTally(_StreamReader):
    """Reads the events stream from where the demo started: drift alarms, job and model events."""

    types: Counter[str] = field(default_factory=Counter)
    last_drift: str = ""

    def poll(self) -> None:
        for _s, entries in self.client.xread({self.stream: self.last_id}, count=1000) or []:
            for eid, fields in entries:
                self.last_id = eid.decode()
                ev = decode_message(fields[b"m"])
                if isinstance(ev, Event):
                    self.types[ev.type.value] += 1
                    if ev.type is EventType.DRIFT_ALARM:
                        self.last_drift = ev.message


def chunks(items: list[str], n: int = 500) -> Iterator[list[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]
