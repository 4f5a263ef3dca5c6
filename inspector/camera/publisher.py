"""The camera side of a station: paces a frame source, publishes frames, and watches its own health.

A source that stops delivering raises a ``camera_health`` event within ``camera.health_periods`` frame
periods, and a recovery event when frames come back. The camera heartbeat key expires on its own when
the camera goes silent, so line outputs and the GUI see it even if this process dies.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from inspector.bus.streams import StationBus
from inspector.camera.frame import Capture, FrameSource
from inspector.contracts.errors import TransportError
from inspector.contracts.messages import Event, EventType, FrameMeta
from inspector.models.decode import encode_image
from inspector.products import current_product

log = logging.getLogger(__name__)


def part_id_of(n: int) -> str:
    """The part id shared by the views of the n-th part (parts.views)."""
    return f"part-{n:09d}"


class CameraPublisher:
    def __init__(self, bus: StationBus, source: FrameSource) -> None:
        self.bus = bus
        self.source = source
        self.cam = bus.cfg.camera
        self.period = 1.0 / self.cam.fps
        self.run_id = uuid.uuid4().hex[:6]
        self.seq = 0
        self.last_frame = time.monotonic()
        self.silent = False
        self.not_sent = 0  # parts the camera saw while Redis was unreachable (the line rejects them)
        self._unreported = 0
        self.stop_event = threading.Event()

    def _meta(self, cap: Capture, encoding: str, width: int | None, height: int | None) -> FrameMeta:
        # the product on the line, read per frame: every frame published after a changeover returned carries it
        product = current_product(self.bus.r, self.bus.cfg) if self.bus.cfg.products else None
        part_id, view = f"{self.cam.id}-{self.run_id}-{self.seq:07d}", None
        if self.bus.cfg.parts.views:  # several views per part: the n-th frame of every view shows part n
            view = self.cam.view_of(self.seq)
            part_id = part_id_of(self.bus.r.incr(self.bus.names.part_seq(view)))
        return FrameMeta(
            station=self.bus.cfg.station.id,
            camera=self.cam.id,
            seq=self.seq,
            part_id=part_id,
            captured_at=time.time(),
            view=view,
            encoding=encoding,
            width=width,
            height=height,
            truth=cap.truth,
            product=product,
        )

    def publish(self, cap: Capture) -> FrameMeta:
        arrived = time.monotonic()  # camera health counts from the frame's arrival, not from the end of publishing
        if cap.encoded is not None:
            data, encoding, w, h = cap.encoded, cap.encoding, None, None
        else:
            assert cap.image is not None
            encoding = self.cam.encoding
            data = encode_image(cap.image, encoding, self.cam.jpeg_quality)
            h, w = cap.image.shape[:2]
        meta = self._meta(cap, encoding, w, h)
        self.bus.publish_frame(meta, data)
        ttl_ms = max(1, int(self.cam.health_periods * self.period * 1000))
        self.bus.r.set(self.bus.names.camera_heartbeat(self.cam.id), meta.id, px=ttl_ms)
        self.seq += 1
        self.last_frame = arrived
        return meta

    def _health_event(self, silent: bool) -> None:
        msg = (
            f"camera {self.cam.id} delivered no frame for {self.cam.health_periods:g} frame periods"
            if silent
            else f"camera {self.cam.id} delivers frames again"
        )
        try:
            self.bus.publish_event(
                Event(
                    station=self.bus.cfg.station.id,
                    type=EventType.CAMERA_HEALTH,
                    severity="critical" if silent else "info",
                    message=msg,
                    camera=self.cam.id,
                    data={"silent": silent, "seq": self.seq},
                )
            )
        except Exception:  # noqa: BLE001 - health reporting must not kill the camera loop
            log.exception("could not publish camera health event")
        (log.error if silent else log.info)(msg)

    def _watchdog(self) -> None:
        """Camera health: the event is raised when ``health_periods`` frame periods pass without a frame (checked
        at that moment, not on a coarse tick), and cleared by the next frame."""
        limit = self.cam.health_periods * self.period
        tick = self.period / 4
        while True:
            due = self.last_frame + limit - time.monotonic()
            if self.stop_event.wait(min(tick, due + 0.002) if due > 0 else tick):
                return
            silent = time.monotonic() - self.last_frame > limit
            if silent != self.silent:
                self.silent = silent
                self._health_event(silent)

    def run(self, max_frames: int | None = None, on_frame=None) -> int:  # type: ignore[no-untyped-def]
        """Publish frames at ``camera.fps`` until the source ends, ``max_frames`` or ``stop()``."""
        dog = threading.Thread(target=self._watchdog, name="camera-watchdog", daemon=True)
        self.last_frame = time.monotonic()
        dog.start()
        next_t = time.monotonic()
        try:
            while not self.stop_event.is_set() and (max_frames is None or self.seq < max_frames):
                cap = self.source.read()
                if cap is None:
                    break
                delay = next_t - time.monotonic()
                if delay > 0:
                    self.stop_event.wait(delay)
                meta = self._publish_or_count(cap)
                if meta is not None and on_frame is not None:
                    on_frame(meta, cap)
                next_t = max(next_t + self.period, time.monotonic() - self.period)
        finally:
            self.stop_event.set()
            dog.join(1)
            self.source.close()
        return self.seq

    def _publish_or_count(self, cap: Capture) -> FrameMeta | None:
        """Publish; while Redis is unreachable the part is counted as not sent (never inspected, so rejected)."""
        try:
            meta = self.publish(cap)
        except (RedisConnectionError, RedisTimeoutError, TransportError, OSError) as err:
            self.not_sent += 1
            self._unreported += 1
            self.seq += 1
            self.last_frame = time.monotonic()  # the camera itself delivers: this is a transport outage
            log.warning("camera %s: part %d not sent, Redis unreachable (%s)", self.cam.id, self.seq - 1, err)
            return None
        if self._unreported:
            self._report_not_sent()
        return meta

    def _report_not_sent(self) -> None:
        n, self._unreported = self._unreported, 0
        try:
            self.bus.count("not_sent", n)
            self.bus.publish_event(
                Event(
                    station=self.bus.cfg.station.id,
                    type=EventType.CAMERA_HEALTH,
                    severity="warning",
                    camera=self.cam.id,
                    message=f"{n} parts were not sent while Redis was unreachable (rejected)",
                    data={"not_sent": n},
                )
            )
        except Exception:  # noqa: BLE001 - reported again with the next outage's count otherwise
            self._unreported += n

    def stop(self) -> None:
        self.stop_event.set()
