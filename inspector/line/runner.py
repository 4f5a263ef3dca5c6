"""The line runner: frames and verdicts in, one fail-safe signal per part and a ready signal out.

It reads the frames stream (capture times) and the verdicts stream with the consumer group
``Names.line_group``, feeds a :class:`LineDecider`, and drives the configured outputs. Deadlines are
honoured even while Redis is down (pending parts are rejected on time), and the ready signal is
re-evaluated every ``line.health_poll_ms`` so it drops within a second of the last worker heartbeat
expiring, the camera going silent, or Redis going away.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import ClassVar

import redis

from inspector.bus.connection import station_url
from inspector.bus.consumer import StreamConsumer
from inspector.bus.fast import fast_client
from inspector.bus.streams import decode_message
from inspector.contracts.config import StationConfig
from inspector.contracts.errors import InspectorError
from inspector.contracts.health import ConsumerRole
from inspector.contracts.messages import FrameMeta, Verdict
from inspector.contracts.names import STREAM_FIELD_MESSAGE, Names
from inspector.line.decider import LineDecider, Outcome, Part
from inspector.line.health import REDIS_ERRORS, Health, HealthProbe, camera_silence_s
from inspector.line.outputs import LineOutput, outputs_from_config
from inspector.line.parts import PartCommitter, PartDecider, PartOutcome, replay_recent

log = logging.getLogger(__name__)

CONSUMER = "line"
#: How often the line runner re-reads the entries pending under its own name (normally none: it acknowledges
#: what it reads at once), so that a read whose reply was lost costs at most this much of a part's deadline.
OWN_PENDING_CHECK_S = 0.1


class LineRunner(StreamConsumer):
    """One per station. ``step()`` is one loop turn (tests drive it); ``run()`` loops until stopped (a
    :class:`StreamConsumer` with a heartbeat; ``step`` itself rides out Redis outages to keep the deadlines)."""

    role: ClassVar[ConsumerRole] = ConsumerRole.LINE_RUNNER

    def __init__(
        self,
        cfg: StationConfig,
        outputs: Sequence[LineOutput] | None = None,
        client: redis.Redis | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client or fast_client(cfg, station_url(cfg), timeout_s=2.0)  # connect only, never own Redis
        super().__init__(cfg, self.client, CONSUMER)
        self.names = Names(cfg.redis.prefix, cfg.station.id)
        self.outputs = list(outputs_from_config(cfg) if outputs is None else outputs)
        self.decider: LineDecider | PartDecider = LineDecider(cfg.line.deadline_ms / 1000, clock=clock)
        self.parts: PartCommitter | None = None
        if cfg.parts.views:  # several views per part: one outcome per part, its part verdict committed once
            self.decider = PartDecider(cfg.parts.views, cfg.line.deadline_ms / 1000, cfg.station.id, clock=clock)
            self.parts = PartCommitter(self.client, cfg)
        self._replayed = False
        self.clock = clock
        self.probe = HealthProbe(self.client, self.names, cfg.camera.id, camera_silence_s(cfg), cfg.line.require_camera)
        self.health: Health | None = None
        self.last_frame_at: float | None = None
        self._next_health = 0.0
        self._groups_ready = False
        self._recovered = False
        self._next_own_check = 0.0
        self.handled = 0  # stream entries read and acknowledged (frames and verdicts)
        self.counts = {"accept": 0, "reject": 0}
        self.outcomes_by_reason: Counter[tuple[str, str]] = Counter()  # (signal, reason): the line's metrics

    # ------------------------------------------------------------------ setup
    def _ensure_groups(self) -> None:
        if self._groups_ready:
            return
        for stream in (self.names.frames, self.names.verdicts):
            try:
                self.client.xgroup_create(stream, self.names.line_group, id="$", mkstream=True)
            except redis.ResponseError as err:
                if "BUSYGROUP" not in str(err):
                    raise
        self._groups_ready = True

    # ------------------------------------------------------------------ loop
    def step(self, max_block_ms: int = 50) -> list[Outcome]:
        """Read what arrived (blocking at most until the next deadline), emit outcomes, refresh ready."""
        outcomes: list[Outcome] = []
        try:
            self._ensure_groups()
            if self.parts is not None and not self._replayed:  # parts a previous line process held in memory
                outcomes += replay_recent(self.client, self.names, self.decider)  # type: ignore[arg-type]
                self._replayed = True
            if not self._recovered or time.monotonic() >= self._next_own_check:
                # entries delivered to this consumer and never acknowledged: a previous line process's (kill -9),
                # or a read whose reply was lost and that the client's retry sent again (it delivered the next
                # entries; the lost ones wait in the group's pending list, and would never get a signal)
                outcomes += self._read(None, start="0")
                self._recovered = True
                self._next_own_check = time.monotonic() + OWN_PENDING_CHECK_S
            outcomes += self._read(self._block_ms(max_block_ms))
            self.progress.ok()
        except REDIS_ERRORS as err:
            log.warning("line runner: Redis unreachable (%s); deadlines still enforced", err)
            self._groups_ready = False
            self._recovered = False  # a read may have been delivered and its reply lost: read own pending first
            self.progress.failed(f"Redis unreachable: {err}")
            self._set_health(Health(False, False, 0, False, "Redis unreachable"))
            self.stop_event.wait(min(max_block_ms, 50) / 1000)
        outcomes += self.decider.expire()
        for outcome in outcomes:
            self._emit(outcome)
        self._poll_health()
        return outcomes

    def setup(self) -> None:
        log.info(
            "line runner for station %s: deadline %.0f ms, %d output(s)",
            self.cfg.station.id,
            self.cfg.line.deadline_ms,
            len(self.outputs),
        )

    def teardown(self) -> None:
        self.close()

    def close(self) -> None:
        for out in self.outputs:
            _safely(out.close)

    # ------------------------------------------------------------------ internals
    def _block_ms(self, max_block_ms: int) -> int:
        nxt = self.decider.next_deadline()
        until_health = self._next_health - time.monotonic()
        wait = max_block_ms / 1000
        if nxt is not None:
            wait = min(wait, nxt - self.clock())
        wait = min(wait, until_health)
        return max(1, int(wait * 1000))

    def _read(self, block_ms: int | None, start: str = ">") -> list[Outcome]:
        streams = {self.names.frames: start, self.names.verdicts: start}
        resp = self.client.xreadgroup(self.names.line_group, CONSUMER, streams, count=200, block=block_ms)
        outcomes: list[Outcome] = []
        for stream, entries in resp or []:
            name = stream.decode() if isinstance(stream, bytes) else stream
            ids = [eid for eid, _ in entries]
            for _eid, fields in entries:
                outcome = self._handle(name, fields)
                if outcome is not None:
                    outcomes.append(outcome)
            if ids:
                self._ack(name, ids)
        return outcomes

    def _ack(self, stream: str, ids: list[bytes]) -> None:
        """Acknowledge what was handled. A failed XACK must not lose the outcomes already decided from these
        entries (the decider would refuse them a second time): they are emitted, the entries stay pending and
        are read again, and acknowledged, with the next check of this consumer's own pending entries."""
        try:
            self.client.xack(stream, self.names.line_group, *ids)
        except REDIS_ERRORS as err:
            log.warning("line runner: %d entries of %s handled, not acknowledged yet (%s)", len(ids), stream, err)
            self._recovered = False
            return
        self.handled += len(ids)
        self.progress.ok(len(ids))

    def _handle(self, stream: str, fields: dict[bytes, bytes] | None) -> Outcome | None:
        try:
            msg = decode_message((fields or {}).get(STREAM_FIELD_MESSAGE))
        except (InspectorError, ValueError) as err:
            log.warning("line runner: skipped a bad entry on %s: %s", stream, err)
            return None
        if isinstance(msg, FrameMeta):
            self.last_frame_at = max(self.last_frame_at or 0.0, msg.captured_at)
            self.decider.register(msg if self.parts else Part.from_meta(msg))  # type: ignore[arg-type]
            return None
        if isinstance(msg, Verdict):
            return self.decider.on_verdict(msg)
        return None

    def _emit(self, outcome: Outcome) -> None:
        if (
            isinstance(outcome, PartOutcome)
            and self.parts
            and outcome.verdict
            and not self.parts.first(outcome.verdict)
        ):
            return  # this part had its verdict before a restart: never a second signal
        self.counts["accept" if outcome.signal.value == "ACCEPT" else "reject"] += 1
        self.outcomes_by_reason[(outcome.signal.value, outcome.reason.value)] += 1
        log.debug("part %s: %s (%s)", outcome.part.part_id, outcome.signal.value, outcome.reason.value)
        for out in self.outputs:
            _safely(out.publish, outcome)

    def _poll_health(self) -> None:
        now = time.monotonic()
        if now < self._next_health:
            return
        self._next_health = now + self.cfg.line.health_poll_ms / 1000
        self._set_health(self.probe.check(self.last_frame_at))

    def _set_health(self, health: Health) -> None:
        changed = self.health is None or health.ready != self.health.ready
        self.health = health
        if changed:
            (log.info if health.ready else log.warning)("line %s", health.label)
            for out in self.outputs:
                _safely(out.set_ready, health.ready, health.reason)


def _safely(fn: Callable[..., object], *args: object) -> None:
    """An isolated sink: a failing output is logged and never stops the line runner or the other outputs."""
    try:
        fn(*args)
    except Exception:  # noqa: BLE001
        log.exception("line output %s failed", getattr(fn, "__qualname__", fn))


def run_line(cfg: StationConfig, stop: threading.Event | None = None) -> LineRunner:
    """Run the line runner in the foreground until ``stop`` is set (or Ctrl-C); returns it for its counts."""
    from inspector import telemetry
    from inspector.line.changeover import start_changeover

    runner = LineRunner(cfg)
    telemetry.start(cfg, "line", lambda t: t.watch_line(runner))
    changeover = start_changeover(cfg)  # the PLC's product requests on MQTT (stations with products)
    if stop is not None:
        runner.stop_event = stop
    try:
        runner.run()
    except KeyboardInterrupt:
        runner.stop()
    finally:
        if changeover is not None:
            changeover.close()
    return runner
