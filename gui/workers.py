"""Everything that touches Redis or the database runs here, off the GUI thread (QThread + signals).

- :class:`LiveFeed` tails the frames, verdicts and events streams and probes health; it survives a
  Redis restart (reports ``connection(False)`` while down, resumes from the stream ends when back).
- :class:`DbWorker` runs database and service calls one after another on its own thread and hands each
  result back to the GUI thread through a signal.
- :class:`ReviewNotices` blocks on the review stream and signals each new review item at once (the quality
  view refreshes its queue then; its SQL poll is only the slow fallback).
- :class:`CameraThread` lets the GUI be the station's camera (the shared camera publisher).
"""

from __future__ import annotations

import itertools
import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from PySide6.QtCore import QObject, QThread, Signal, Slot

from inspector.bus.connection import resolve_url
from inspector.bus.fast import fast_client
from inspector.bus.streams import decode_message
from inspector.contracts.config import StationConfig
from inspector.contracts.messages import Event, FrameMeta, PartVerdict, Verdict
from inspector.contracts.names import STREAM_FIELD_IMAGE, STREAM_FIELD_MESSAGE, Names
from inspector.line.health import REDIS_ERRORS, HealthProbe, camera_silence_s

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameItem:
    meta: FrameMeta
    data: bytes


class LiveFeed(QThread):
    frames = Signal(object)  # list[FrameItem], oldest first
    verdicts = Signal(object)  # list[Verdict]
    parts = Signal(object)  # list[PartVerdict] (parts.views: the line's one verdict per part)
    events = Signal(object)  # list[Event]
    health = Signal(object)  # inspector.line.health.Health
    connection = Signal(bool)

    def __init__(self, cfg: StationConfig, health_every_s: float = 0.25, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.cfg = cfg
        self.names = Names(cfg.redis.prefix, cfg.station.id)
        self.health_every_s = health_every_s
        self.last_frame_at: float | None = None

    def run(self) -> None:
        client: redis.Redis | None = None
        connected: bool | None = None
        while not self.isInterruptionRequested():
            try:
                if client is None:
                    client = fast_client(self.cfg, resolve_url(self.cfg, start_embedded=False), timeout_s=1.0)
                    self._tail(client)  # returns only on interruption
            except (*REDIS_ERRORS, redis.RedisError, Exception) as err:  # noqa: BLE001 - keep the feed alive
                if connected is not False:
                    log.warning("live feed: Redis unavailable (%s)", err)
                    self.connection.emit(False)
                connected = False
                if client is not None:
                    client.close()
                client = None
                self.msleep(500)
        if client is not None:
            client.close()

    def _tail(self, client: redis.Redis) -> None:
        streams = {self.names.frames: "", self.names.verdicts: "", self.names.events: ""}
        if self.cfg.parts.views:
            streams[self.names.parts] = ""
        for s in streams:
            last = client.xrevrange(s, count=1)
            streams[s] = last[0][0] if last else "0-0"
            if s == self.names.frames and last:
                self._emit_entries(s, last)
        probe = HealthProbe(
            client, self.names, self.cfg.camera.id, camera_silence_s(self.cfg), self.cfg.line.require_camera
        )
        self.connection.emit(True)
        next_health = 0.0
        while not self.isInterruptionRequested():
            for stream, entries in client.xread(streams, count=200, block=100) or []:
                name = stream.decode() if isinstance(stream, bytes) else stream
                streams[name] = entries[-1][0]
                self._emit_entries(name, entries)
            if time.monotonic() >= next_health:
                next_health = time.monotonic() + self.health_every_s
                h = probe.check(self.last_frame_at)
                if not h.redis_ok:
                    raise ConnectionError("Redis stopped answering")
                self.health.emit(h)

    def _emit_entries(self, stream: str, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        frames: list[FrameItem] = []
        verdicts: list[Verdict] = []
        events: list[Event] = []
        parts: list[PartVerdict] = []
        for _eid, fields in entries:
            try:
                msg = decode_message((fields or {}).get(STREAM_FIELD_MESSAGE))
            except Exception:  # noqa: BLE001 - skip what cannot be parsed
                continue
            if isinstance(msg, FrameMeta):
                frames.append(FrameItem(msg, (fields or {}).get(STREAM_FIELD_IMAGE, b"")))
                self.last_frame_at = max(self.last_frame_at or 0.0, msg.captured_at)
            elif isinstance(msg, Verdict):
                verdicts.append(msg)
            elif isinstance(msg, Event):
                events.append(msg)
            elif isinstance(msg, PartVerdict):
                parts.append(msg)
        if frames:
            self.frames.emit(frames)
        if verdicts:
            self.verdicts.emit(verdicts)
        if events:
            self.events.emit(events)
        if parts:
            self.parts.emit(parts)

    def stop(self) -> None:
        self.requestInterruption()
        self.wait(3000)


class ReviewNotices(QThread):
    """Reads the review stream (``Names.review``: one notice per review item the router stored) with a blocking
    XREAD from its newest entry on and emits ``arrived(n)`` per batch of new notices. Notices arriving within
    ``settle_ms`` of each other make one signal, so a burst costs the view one queue query. Survives a Redis
    restart like :class:`LiveFeed` (notices written while it was away are covered by the view's poll)."""

    arrived = Signal(int)

    def __init__(
        self, cfg: StationConfig, block_ms: int = 1000, settle_ms: int = 100, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self.cfg, self.block_ms, self.settle_ms = cfg, block_ms, settle_ms
        self.stream = Names(cfg.redis.prefix, cfg.station.id).review
        self.ready = False  # True once reading (tests wait for it before they publish)

    def run(self) -> None:
        while not self.isInterruptionRequested():
            client: redis.Redis | None = None
            try:
                client = fast_client(
                    self.cfg, resolve_url(self.cfg, start_embedded=False), timeout_s=self.block_ms / 1000 + 1.0
                )
                self._read(client)  # returns only on interruption
            except (*REDIS_ERRORS, redis.RedisError) as err:
                log.debug("review notices: Redis unavailable (%s)", err)
                self.ready = False
                self.msleep(500)
            finally:
                if client is not None:
                    client.close()

    def _read(self, client: redis.Redis) -> None:
        newest: Any = client.xrevrange(self.stream, count=1)
        last: Any = newest[0][0] if newest else "0-0"  # from the end: no notice between two reads is lost
        self.ready = True
        while not self.isInterruptionRequested():
            got: Any = client.xread({self.stream: last}, count=500, block=self.block_ms) or []
            entries = [e for _stream, batch in got for e in batch]
            if not entries:
                continue
            last = entries[-1][0]
            self.arrived.emit(len(entries))
            self.msleep(self.settle_ms)

    def stop(self) -> None:
        self.requestInterruption()
        self.wait(self.block_ms + 2000)


Job = Callable[[], Any]


class DbWorker(QThread):
    """Runs submitted calls in order on one thread; results come back on the GUI thread."""

    _done = Signal(int, object)
    _failed = Signal(int, str)
    busy = Signal(bool)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._jobs: queue.Queue[tuple[int, Job] | None] = queue.Queue()
        self._callbacks: dict[int, tuple[Callable[[Any], None] | None, Callable[[str], None] | None]] = {}
        self._ids = itertools.count(1)
        self._done.connect(self._on_done)
        self._failed.connect(self._on_failed)
        self.pending = 0

    def submit(
        self, fn: Job, on_done: Callable[[Any], None] | None = None, on_error: Callable[[str], None] | None = None
    ) -> int:
        job_id = next(self._ids)
        self._callbacks[job_id] = (on_done, on_error)
        self.pending += 1
        self._jobs.put((job_id, fn))
        return job_id

    def run(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            job_id, fn = item
            try:
                result = fn()
            except Exception as err:  # noqa: BLE001 - reported to the view, never crashes the GUI
                log.exception("background job failed")
                self._failed.emit(job_id, str(err))
            else:
                self._done.emit(job_id, result)

    @Slot(int, object)
    def _on_done(self, job_id: int, result: object) -> None:
        self.pending -= 1
        on_done, _ = self._callbacks.pop(job_id, (None, None))
        if on_done is not None:
            on_done(result)

    @Slot(int, str)
    def _on_failed(self, job_id: int, message: str) -> None:
        self.pending -= 1
        _, on_error = self._callbacks.pop(job_id, (None, None))
        if on_error is not None:
            on_error(message)

    def stop(self) -> None:
        self._jobs.put(None)
        self.wait(5000)


class CameraThread(QThread):
    """Publishes the configured camera to the frames stream (the GUI is the station's camera)."""

    failed = Signal(str)

    def __init__(self, cfg: StationConfig, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.cfg = cfg
        self.publisher: Any = None

    def run(self) -> None:
        from inspector.bus.streams import StationBus
        from inspector.camera.publisher import CameraPublisher
        from inspector.camera.sources import open_source

        try:
            client = fast_client(self.cfg, resolve_url(self.cfg), timeout_s=2.0)
            self.publisher = CameraPublisher(StationBus(client, self.cfg), open_source(self.cfg.camera))
            self.publisher.run()
        except Exception as err:  # noqa: BLE001
            log.exception("camera thread stopped")
            self.failed.emit(str(err))

    def stop(self) -> None:
        if self.publisher is not None:
            self.publisher.stop()
        self.wait(3000)
