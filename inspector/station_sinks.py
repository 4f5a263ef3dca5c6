"""What a worker process runs beside inspection: the verdict recorder (a thread consuming the verdicts
stream into the database) and review routing (a non-blocking sink that hands picked frames to the review
inbox, and a thread that archives and queues them).

Neither needs the database to start: the store is opened lazily, so with the database down the worker
still inspects and the line still gets verdicts, while both consumers hold their entries pending and catch
up when it returns. Each consumer has a heartbeat thread that reports it ``stalled`` (``inspector status``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

import redis

from inspector.archive import Archive
from inspector.contracts.config import StationConfig
from inspector.contracts.names import Names
from inspector.recording.part_recorder import PartRecorder
from inspector.recording.recorder import VerdictRecorder
from inspector.review.router import ReviewRouter
from inspector.store import open_store
from inspector.store.db import Store
from inspector.store.retention import start_retention
from inspector.worker import Sink

log = logging.getLogger(__name__)


def _names(cfg: StationConfig) -> Names:
    return Names(cfg.redis.prefix, cfg.station.id)


def build_sinks(cfg: StationConfig, client: redis.Redis, consumer: str | None = None) -> list[Sink]:
    """Review routing: sampling on the verdict path, archive and database work on the router's thread."""
    if not cfg.review.enabled:
        return []
    router = ReviewRouter(
        cfg,
        client,
        _names(cfg),
        Archive.for_data_dir(cfg.data_dir),
        open_store(cfg, lazy=True),
        consumer=consumer or f"{socket.gethostname()}-{os.getpid()}",
    )
    router.start()  # its run() writes its own heartbeat (StreamConsumer)

    def review_sink(verdict, image, encoding):  # type: ignore[no-untyped-def]
        router.submit(verdict, image, encoding)

    review_sink.router = router  # type: ignore[attr-defined]
    return [review_sink]


def start_recorder(cfg: StationConfig, client: redis.Redis, name: str) -> Callable[[], int]:
    """Start the verdict recorder thread; the returned function stops it within ``store.stop_timeout_s``
    (recording what is left when the database answers) and returns the rows drained at the end."""
    recorder = VerdictRecorder(cfg, client, open_store(cfg, lazy=True), consumer=name)
    stop = threading.Event()
    thread = threading.Thread(target=recorder.run, args=(stop,), name="verdict-recorder", daemon=True)
    thread.start()  # its run() writes its own heartbeat (StreamConsumer)
    stop_retention = start_retention(cfg, client, recorder.store)  # retention runs where the recorder runs
    stop_parts = _start_part_recorder(cfg, client, recorder.store, name) if cfg.parts.views else None

    def finish() -> int:
        stop_retention()
        if stop_parts is not None:
            stop_parts()
        deadline = time.monotonic() + cfg.store.stop_timeout_s
        stop.set()
        thread.join(cfg.store.stop_timeout_s)
        drained = [0]
        if not thread.is_alive() and recorder.progress.error is None:

            def drain() -> None:
                try:
                    drained[0] = recorder.drain()
                except Exception as err:  # noqa: BLE001 - what is left stays pending for the next recorder
                    log.error("verdict recorder %s: final drain failed: %s", name, recorder.store.describe(err))

            last = threading.Thread(target=drain, name="verdict-recorder-drain", daemon=True)
            last.start()
            last.join(max(0.1, deadline - time.monotonic()))
        if thread.is_alive() or recorder.progress.error is not None:
            log.warning(
                "verdict recorder %s stopped with verdicts not recorded (%s); they stay pending for the next recorder",
                name,
                recorder.progress.error or "a database call did not return in time",
            )
        return drained[0]

    return finish


def _start_part_recorder(cfg: StationConfig, client: redis.Redis, store: Store, name: str) -> Callable[[], None]:
    """The part verdicts of the parts stream into part_verdicts (parts.views), in a thread beside the recorder."""
    recorder = PartRecorder(cfg, client, store, consumer=name)
    stop = threading.Event()
    thread = threading.Thread(target=recorder.run, args=(stop,), name="part-recorder", daemon=True)
    thread.start()

    def finish() -> None:
        stop.set()
        thread.join(cfg.store.stop_timeout_s)  # what is left stays pending for the next recorder

    return finish


def stop_sinks(sinks: list[Sink]) -> None:
    for sink in sinks:
        router = getattr(sink, "router", None)
        if router is not None:
            router.stop()
