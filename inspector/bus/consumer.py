"""One lifecycle for every stream consumer of a station: setup -> step ... -> teardown.

:class:`StreamConsumer` is the loop the inspection worker, the verdict and part recorders, the drift
monitor, the line runner and the review router share:

- ``setup()`` once before the first step and again after every retried failure (consumer groups, the
  entries left pending under this consumer's own name by a previous run: :meth:`recover_own`);
- ``step()`` one turn of work, returning how many entries it handled; it is called until the stop event is set;
- ``teardown()`` once at the end (flush, drain, close outputs), whatever ended the loop.

A failure of a kind in ``retry_on`` (Redis by default; the recorders add the database) is logged, counted
in the consumer's :class:`~inspector.progress.Progress`, and retried after a doubling backoff from
``backoff_start_s`` to ``backoff_max_s``; any other exception ends the loop (after teardown) as before.
Entries of a consumer that died are taken over with :meth:`reclaim_stale` (XAUTOCLAIM through
:class:`~inspector.bus.streams.StationBus`), at most every ``reclaim_idle_ms / 2``.

Every consumer has a heartbeat (:class:`StationHeartbeat`, its own thread): a key with a TTL that expires
when the process dies (``kill -9`` included), and an entry in the station's process registry hash that
does not expire, so ``inspector status`` lists the consumer as ``down`` once its key is gone.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import ClassVar

import redis

from inspector.bus.heartbeat import StationHeartbeat
from inspector.bus.streams import Entry, StationBus
from inspector.contracts.config import StationConfig
from inspector.contracts.health import ConsumerRole
from inspector.progress import Progress

log = logging.getLogger(__name__)

REDIS_ERRORS: tuple[type[BaseException], ...] = (redis.ConnectionError, redis.TimeoutError, ConnectionError)


class StreamConsumer:
    """Base of a stream consumer; subclasses implement ``step`` and optionally ``setup`` / ``teardown``."""

    role: ClassVar[ConsumerRole]
    retry_on: ClassVar[tuple[type[BaseException], ...]] = REDIS_ERRORS
    backoff_start_s: ClassVar[float] = 0.05
    backoff_max_s: ClassVar[float] = 5.0
    heartbeat_period_s: ClassVar[float] = 1.0
    own_heartbeat: ClassVar[bool] = False  # True: the consumer writes its heartbeat in its loop (the worker's stats)

    def __init__(self, cfg: StationConfig, client: redis.Redis, consumer: str, stall_s: float | None = None) -> None:
        self.cfg = cfg
        self.bus = StationBus(client, cfg)
        self.consumer = consumer
        self.stop_event = threading.Event()
        self.progress = Progress(self.role, consumer, cfg.store.stall_s if stall_s is None else stall_s)
        self.heartbeat = StationHeartbeat(client, self.bus.names, self.progress, self.heartbeat_period_s)
        self.backoff_s = self.backoff_start_s
        self._next_reclaim = 0.0

    # -- what a consumer implements ------------------------------------------------------------------
    def setup(self) -> None:
        """Create groups, recover own pending entries; run again after every retried failure."""

    def step(self) -> object:
        """One turn of work; returns what it handled (a count, or what the consumer makes of it)."""
        raise NotImplementedError

    def teardown(self) -> None:
        """Flush, drain or close; runs once when the loop ends."""

    def finished(self) -> bool:
        """True ends the loop after a step (a worker's ``max_frames`` or idle exit); the stop event ends it too."""
        return False

    def on_failure(self, err: BaseException) -> str:
        """Called on a retried failure before the backoff; returns the reason to log and report."""
        return f"Redis: {err}" if isinstance(err, redis.RedisError) else str(err)

    # -- the loop -------------------------------------------------------------------------------------
    def run(self, stop: threading.Event | None = None) -> None:
        """Set up, step until ``stop`` (or :meth:`stop`), tear down; failures in ``retry_on`` back off and retry."""
        if stop is not None:
            self.stop_event = stop
        if not self.own_heartbeat:
            self.heartbeat.start()
        clean = False
        try:
            self._loop()
            clean = True
        finally:
            try:
                self.teardown()
            finally:
                if not self.own_heartbeat:
                    self.heartbeat.stop(unregister_process=clean)  # a crash stays listed, as down

    def _loop(self) -> None:
        ready = False
        while not self.stop_event.is_set():
            try:
                if not ready:
                    self.setup()
                    ready = True
                self.step()
                self.backoff_s = self.backoff_start_s
                if self.finished():
                    return
            except self.retry_on as err:
                ready = False
                reason = self.on_failure(err)
                self.progress.failed(reason)
                log.error("%s %s: %s; retrying in %.2f s", self.role.value, self.consumer, reason, self.backoff_s)
                self.stop_event.wait(self.backoff_s)
                self.backoff_s = min(self.backoff_s * 2, self.backoff_max_s)

    def stop(self) -> None:
        self.stop_event.set()

    # -- helpers on the bus ---------------------------------------------------------------------------
    def recover_own(self, stream: str, group: str, count: int) -> list[Entry]:
        """Entries delivered to this consumer's name before a restart and never acknowledged (up to ``count``)."""
        return self.bus.read_pending_own(stream, group, self.consumer, count)

    def reclaim_stale(self, stream: str, group: str, idle_ms: int, count: int) -> list[Entry]:
        """Entries another consumer left pending longer than ``idle_ms`` (it died or hangs); at most every
        ``idle_ms / 2``, an empty list in between."""
        now = time.monotonic()
        if now < self._next_reclaim:
            return []
        self._next_reclaim = now + idle_ms / 2000
        entries = self.bus.reclaim(stream, group, self.consumer, idle_ms, count)
        if entries:
            log.info("%s %s reclaimed %d stale entries of %s", self.role.value, self.consumer, len(entries), stream)
        return entries


def default_consumer_name(role: str) -> str:
    """``<role>-<host>-<pid>``: unique on a machine; a supervisor passes a stable name instead so that a restarted
    process re-reads its own pending entries."""
    return f"{role}-{socket.gethostname()}-{os.getpid()}"
