"""Progress of a background consumer, and the heartbeat thread that reports it even while the consumer hangs.

The consumer thread calls :meth:`Progress.ok` after each unit of progress (a commit, or an idle read with
nothing held) and :meth:`Progress.failed` on an error. The :class:`ConsumerHeartbeat` thread, not the
consumer, writes ``Names.consumer_heartbeat`` with a TTL and logs each change of health at once: a consumer
stuck in a call that never returns is still reported ``stalled``.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from inspector.contracts.health import ConsumerBeat, ConsumerRole, Health, stall_line
from inspector.contracts.names import Names

log = logging.getLogger(__name__)


class Progress:
    def __init__(self, role: ConsumerRole, consumer: str, stall_s: float) -> None:
        self.role, self.consumer, self.stall_s = role, consumer, stall_s
        self._lock = threading.Lock()
        self._last = time.monotonic()
        self._error: str | None = None
        self.done = 0
        self.errors = 0

    def ok(self, n: int = 0) -> None:
        with self._lock:
            self._last = time.monotonic()
            self._error = None
            self.done += n

    def failed(self, reason: str) -> None:
        with self._lock:
            self._error = reason
            self.errors += 1

    @property
    def error(self) -> str | None:
        return self._error

    def beat(self) -> ConsumerBeat:
        with self._lock:
            age = time.monotonic() - self._last
            stalled = age > self.stall_s
            reason = self._error or (f"a call has not returned for {age:.0f} s" if stalled else None)
            return ConsumerBeat(
                role=self.role,
                consumer=self.consumer,
                health=Health.STALLED if stalled else Health.OK,
                reason=reason,
                stalled_s=round(age, 1) if stalled else 0.0,
                done=self.done,
                errors=self.errors,
                ts=time.time(),
            )


class ConsumerHeartbeat:
    """Writes the beat of one :class:`Progress` every ``period_s`` (key TTL ``3 * period_s``) on its own thread."""

    def __init__(self, client: redis.Redis, names: Names, progress: Progress, period_s: float = 1.0) -> None:
        self.client, self.progress, self.period_s = client, progress, period_s
        self.key = names.consumer_heartbeat(progress.role.value, progress.consumer)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._health = Health.OK

    def publish(self) -> ConsumerBeat:
        beat = self.progress.beat()
        if beat.health is not self._health:
            if beat.health is Health.STALLED:
                log.error("%s", stall_line(beat))
            else:
                log.warning("%s %s makes progress again", beat.role.value, beat.consumer)
            self._health = beat.health
        try:
            self.client.set(self.key, beat.model_dump_json(), px=int(self.period_s * 3000))
        except (redis.RedisError, OSError) as err:
            log.debug("heartbeat %s not written: %s", self.key, err)
        return beat

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{self.progress.role.value}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            self.publish()
            if self._stop.wait(self.period_s):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.period_s + 1)
        try:
            self.client.delete(self.key)
        except (redis.RedisError, OSError):
            pass
