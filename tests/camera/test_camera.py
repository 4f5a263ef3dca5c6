"""Camera sources and the publisher's health watchdog, on a real Redis."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.bus.streams import StationBus, decode_message
from inspector.camera.publisher import CameraPublisher
from inspector.camera.sources import Capture, FolderSource, FrameSource, OpenCVSource, SyntheticSource
from inspector.contracts.errors import ConfigError, InspectorError
from inspector.contracts.messages import Event, EventType, FrameMeta


def _folder(tmp_path: Path) -> Path:
    for cls in ("good", "scratch"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            cv2.imwrite(str(tmp_path / cls / f"{i}.png"), np.full((20, 20, 3), 40 * i, np.uint8))
    return tmp_path


def test_folder_replay_order_loop_and_truth(tmp_path: Path) -> None:
    src = FolderSource(_folder(tmp_path), order="name", loop=False)
    caps = list(src)
    assert [c.truth for c in caps] == ["good"] * 3 + ["scratch"] * 3
    assert all(c.encoded and c.encoding == "png" for c in caps)
    looped = FolderSource(tmp_path, loop=True)
    assert len([looped.read() for _ in range(14)]) == 14


def test_folder_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="camera.source.path"):
        FolderSource(tmp_path / "missing")
    with pytest.raises(ConfigError, match="no .jpg or .png"):
        FolderSource(tmp_path)


def test_video_file_source(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    for i in range(5):
        writer.write(np.full((24, 32, 3), i * 40, np.uint8))
    writer.release()
    frames = list(OpenCVSource(str(path)))
    assert len(frames) == 5 and frames[0].image.shape == (24, 32, 3)
    with pytest.raises(InspectorError, match="cannot be opened"):
        OpenCVSource(str(tmp_path / "nope.avi"))


def test_published_frames_carry_identity(station_config, redis_client) -> None:  # type: ignore[no-untyped-def]
    station_config.camera.fps = 200
    bus = StationBus(redis_client, station_config)
    n = CameraPublisher(bus, SyntheticSource(seed=1)).run(max_frames=5)
    assert n == 5
    entries = redis_client.xrange(bus.names.frames)
    metas = [decode_message(f[b"m"]) for _, f in entries]
    assert [m.seq for m in metas] == list(range(5))
    m = metas[0]
    assert isinstance(m, FrameMeta) and m.station == station_config.station.id and m.camera == "cam0"
    assert m.part_id and m.captured_at > 0 and entries[0][1][b"img"][:2] == b"\xff\xd8"
    assert redis_client.exists(bus.names.camera_heartbeat("cam0"))


class StallingSource(FrameSource):
    """Delivers a few frames, then blocks like a camera whose cable was pulled."""

    def __init__(self, frames: int, release: threading.Event) -> None:
        self.left = frames
        self.release = release
        self.inner = SyntheticSource()

    def read(self) -> Capture | None:
        if self.left == 0:
            self.release.wait(10)
            return None
        self.left -= 1
        return self.inner.read()


def test_silent_camera_raises_health_event_within_two_periods(station_config, redis_client) -> None:  # type: ignore[no-untyped-def]
    station_config.camera.fps = 10  # period 100 ms; alarm due within 200 ms of the last frame
    bus = StationBus(redis_client, station_config)
    release = threading.Event()
    pub = CameraPublisher(bus, StallingSource(3, release))
    t = threading.Thread(target=pub.run, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 5
        events: list[Event] = []
        while time.monotonic() < deadline and not events:
            events = [decode_message(f[b"m"]) for _, f in redis_client.xrange(bus.names.events)]
            time.sleep(0.01)
        detected = time.monotonic()
        assert events and events[0].type is EventType.CAMERA_HEALTH and events[0].severity == "critical"
        delay = detected - pub.last_frame
        assert delay <= 2 * 0.1 + 0.1, f"camera silence reported after {delay:.3f} s"
    finally:
        release.set()
        pub.stop()
        t.join(5)


def test_parts_seen_while_redis_is_down_are_counted_not_sent(station_config) -> None:  # type: ignore[no-untyped-def]
    from inspector.bus.connection import _free_port, client_for_url

    cfg = station_config.model_copy(deep=True)
    cfg.redis.reconnect.give_up_s = 0.1
    cfg.camera.fps = 100
    dead = client_for_url(f"redis://127.0.0.1:{_free_port()}/0", cfg.redis)
    pub = CameraPublisher(StationBus(dead, cfg), SyntheticSource())
    assert pub.run(max_frames=3) == 3
    assert pub.not_sent == 3
