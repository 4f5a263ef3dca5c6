"""What a worker process runs beside inspection: the verdict recorder (a thread consuming the verdicts
stream into the database) and review routing (a non-blocking sink fed after each verdict is published)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis

from inspector.archive import Archive
from inspector.contracts.config import StationConfig
from inspector.contracts.names import Names
from inspector.review.router import ReviewRouter
from inspector.store import open_store
from inspector.store.recorder import VerdictRecorder
from inspector.store.retention import start_retention
from inspector.worker import Sink

log = logging.getLogger(__name__)


def build_sinks(cfg: StationConfig, client: redis.Redis) -> list[Sink]:
    """Review routing runs in its own thread: archive or database stalls never delay a verdict."""
    if not cfg.review.enabled:
        return []
    router = ReviewRouter(cfg, client, Names(cfg.redis.prefix, cfg.station.id), Archive.for_data_dir(cfg.data_dir),
                          open_store(cfg))
    router.start()

    def review_sink(verdict, image, encoding):  # type: ignore[no-untyped-def]
        router.submit(verdict, image, encoding)

    review_sink.router = router  # type: ignore[attr-defined]
    return [review_sink]


def start_recorder(cfg: StationConfig, client: redis.Redis, name: str) -> Callable[[], int]:
    """Start the verdict recorder thread; the returned function stops it and drains what is left."""
    recorder = VerdictRecorder(cfg, client, open_store(cfg), consumer=name)
    stop = threading.Event()
    thread = threading.Thread(target=recorder.run, args=(stop,), name="verdict-recorder", daemon=True)
    thread.start()
    stop_retention = start_retention(cfg, client, recorder.store)  # retention runs where the recorder runs

    def finish() -> int:
        stop_retention()
        stop.set()
        thread.join(30)
        return recorder.drain()

    return finish


def stop_sinks(sinks: list[Sink]) -> None:
    for sink in sinks:
        router = getattr(sink, "router", None)
        if router is not None:
            router.stop()
