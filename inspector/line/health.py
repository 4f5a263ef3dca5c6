"""Is the inspector fit to run the line? Worker heartbeat keys, camera liveness and Redis reachability.

:func:`evaluate` is pure; :class:`HealthProbe` reads the keys. The line runner and the GUI banner use
both, so the operator sees exactly what the line controller sees.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from inspector.contracts.config import StationConfig
from inspector.contracts.names import Names

REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)


@dataclass(frozen=True)
class Health:
    ready: bool
    redis_ok: bool
    workers: int
    camera_ok: bool
    reason: str = ""

    @property
    def label(self) -> str:
        return "READY" if self.ready else f"NOT READY: {self.reason}"


def evaluate(redis_ok: bool, workers: int, camera_ok: bool, require_camera: bool = True) -> Health:
    """Ready only when Redis answers, at least one worker heartbeat is alive and (if required) the camera is."""
    if not redis_ok:
        return Health(False, False, 0, False, "Redis unreachable")
    if workers <= 0:
        return Health(False, True, 0, camera_ok, "inspector down (no worker heartbeat)")
    if require_camera and not camera_ok:
        return Health(False, True, workers, False, "camera silent")
    return Health(True, True, workers, camera_ok)


def camera_silence_s(cfg: StationConfig) -> float:
    """A camera that published nothing for this long is silent (``camera.health_periods`` frame periods)."""
    return cfg.camera.health_periods / cfg.camera.fps


class HealthProbe:
    """Reads the heartbeat keys of the workers and the camera."""

    def __init__(self, client: redis.Redis, names: Names, camera: str, silence_s: float, require_camera: bool) -> None:
        self.client = client
        self.names = names
        self.camera = camera
        self.silence_s = silence_s
        self.require_camera = require_camera

    def workers_alive(self) -> int:
        """Number of live worker heartbeat keys (stops counting at 64)."""
        n = 0
        for _ in self.client.scan_iter(match=self.names.heartbeat_pattern, count=500):
            n += 1
            if n >= 64:
                break
        return n

    def camera_alive(self, last_frame_at: float | None, now: float | None = None) -> bool:
        """Camera heartbeat key alive, or a frame captured within the silence window."""
        now = time.time() if now is None else now
        if last_frame_at is not None and now - last_frame_at <= self.silence_s:
            return True
        return bool(self.client.exists(self.names.camera_heartbeat(self.camera)))

    def check(self, last_frame_at: float | None = None, now: float | None = None) -> Health:
        try:
            workers = self.workers_alive()
            camera_ok = self.camera_alive(last_frame_at, now)
        except REDIS_ERRORS:
            return evaluate(False, 0, False, self.require_camera)
        return evaluate(True, workers, camera_ok, self.require_camera)
