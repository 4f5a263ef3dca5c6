"""The inspection worker: consumer-group reads, micro-batches, decode -> preprocess -> models -> decide()
-> publish verdict -> XACK, with reclaim of dead workers' entries, dead letters, hot reload and a heartbeat.

Per-frame problems (corrupt image, wrong size, NaN output) become ERROR verdicts with their reason; a
frame that keeps killing workers is dead-lettered after ``worker.max_deliveries`` and gets an ERROR
verdict. SIGTERM finishes the batch in hand, then exits.

Hot swap: the Redis hash ``active_model`` only says *that* the model changed. A worker loads a version
only if the station's registry (the SQL store, the system of record) holds it as the active version with
its gate report (or an audited forced promotion), the hash names the same package hash, and the package
loaded from the registry's path has that hash. Every swap is audited (``model.swap``); anything else is
refused with one log line and an audit row (``model.swap_refused``), and the old model keeps serving. So
one ``HSET`` by whoever can write to Redis cannot put a model on the line: only ``jobs.registry``'s
promote and rollback can.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import redis

from inspector import telemetry
from inspector.bus.consumer import REDIS_ERRORS, StreamConsumer
from inspector.bus.heartbeat import HEARTBEAT_ERRORS, register_beat, unregister
from inspector.bus.streams import Entry, decode_message
from inspector.contracts.config import StationConfig
from inspector.contracts.errors import FrameError, InspectorError, ModelPackageError
from inspector.contracts.health import ConsumerRole
from inspector.contracts.messages import Event, EventType, FrameMeta, Verdict
from inspector.metrics import LatencyWindow
from inspector.models.decode import decode_image
from inspector.models.inference import InspectionModel, ModelOutput
from inspector.store.db import Store, open_store
from inspector.worker_model import (
    ModelSwapping,
    SwapRefused,
    active_model_path,
    active_pointer,
    load_model,
    registered_active,
)
from inspector.worker_verdicts import error_verdict, model_verdict

log = logging.getLogger(__name__)

__all__ = ["SwapRefused", "Worker", "Work", "active_model_path", "active_pointer", "load_model", "registered_active"]

Sink = Callable[[Verdict, bytes, str], None]


@dataclass
class Work:
    """One frame in hand: its stream entry, parsed metadata, and what became of it."""

    entry: Entry
    meta: FrameMeta
    verdict: Verdict | None = None
    image: object = None


class Worker(ModelSwapping, StreamConsumer):
    """The inspection worker, a :class:`StreamConsumer` on the frames stream that writes its own heartbeat
    (``Names.heartbeat``: its stats, read by the line's ready signal and ``inspector status``)."""

    role: ClassVar[ConsumerRole] = ConsumerRole.WORKER
    retry_on: ClassVar[tuple[type[BaseException], ...]] = REDIS_ERRORS
    backoff_start_s: ClassVar[float] = 0.1
    backoff_max_s: ClassVar[float] = 0.5
    own_heartbeat: ClassVar[bool] = True

    def __init__(
        self,
        cfg: StationConfig,
        client: redis.Redis,
        model: InspectionModel | None = None,
        name: str | None = None,
        sinks: list[Sink] | None = None,
        store: Store | None = None,
    ) -> None:
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
        super().__init__(cfg, client, self.name)
        self._store = store
        self._unsure: tuple[str, str, str] | None = None  # last pointer the registry could not be asked about
        self.product_models = self._product_models()  # every product's package, loaded and warm: no changeover reload
        self.model = model or self._default_model()
        self.sinks = sinks or []
        self.latency = LatencyWindow()
        self.counts: dict[str, int] = {"frames": 0, "verdicts": 0, "duplicates": 0, "errors": 0, "dead_letter": 0}
        self._next_reclaim = 0.0
        self._next_reload = time.monotonic() + cfg.worker.reload_poll_s
        self._next_heartbeat = 0.0
        self._refused: set[tuple[str, str, str]] = set()
        self._recovered: list[Entry] = []
        self._started = False
        self._limits: tuple[int | None, float | None] = (None, None)  # max_frames, idle_exit_s of run()
        self._last_work = time.monotonic()
        self.bus.ensure_group(self.bus.names.frames, cfg.worker.group)

    # -- model -----------------------------------------------------------------------------------
    def _product_models(self) -> dict[str, InspectionModel]:
        return {name: load_model(self.cfg, product.package) for name, product in self.cfg.products.items()}

    def _default_model(self) -> InspectionModel:
        """The model of frames without a product: model.package, the registry's active one, else the default product's."""
        if self.product_models and not self.cfg.model.package and active_pointer(self.bus.r, self.bus) is None:
            from inspector.products import default_product

            return self.product_models[default_product(self.cfg) or next(iter(self.product_models))]
        return self._initial_model()

    def _initial_model(self) -> InspectionModel:
        if self.cfg.model.package:
            return load_model(self.cfg, self.cfg.model.package)
        active = active_pointer(self.bus.r, self.bus)
        if active is None:
            raise ModelPackageError(
                f"station {self.cfg.station.id} has no model: model.package is unset and no active model is registered",
                "set model.package to a package folder, or promote one (inspector jobs promote)",
            )
        row = registered_active(self.store, active[0], active[2])  # the registry, not Redis, says what to load
        model = load_model(self.cfg, row.package_path)
        if model.package.package_sha256 != row.package_sha256:
            raise SwapRefused(
                f"the package at {row.package_path} is not the one registered as {row.version}",
                "restore the registered package, or register and promote the new one",
            )
        return model

    @property
    def store(self) -> Store:
        """The station's registry (SQL store), opened on first use."""
        if self._store is None:
            self._store = open_store(self.cfg, lazy=True)
        return self._store

    # -- loop --------------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: object) -> None:
            log.info("worker %s: signal %s, draining", self.name, signum)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run(self, max_frames: int | None = None, idle_exit_s: float | None = None) -> dict[str, int]:  # type: ignore[override]  # its limits, not a stop event
        """Inspect until stopped (SIGTERM drains the batch in hand), ``max_frames``, or idle for ``idle_exit_s``."""
        self._limits, self._last_work = (max_frames, idle_exit_s), time.monotonic()
        super().run()
        return dict(self.counts)

    def setup(self) -> None:
        """At start, the frames a previous run under this name read and never acknowledged go first (a supervised
        worker keeps its name across restarts); the rest of them come back by reclaim once idle. Not after a Redis
        failure: re-reading would count a delivery per outage toward ``worker.max_deliveries``."""
        self.bus.ensure_group(self.bus.names.frames, self.cfg.worker.group)
        if not self._started:
            self._recovered = self.recover_own(self.bus.names.frames, self.cfg.worker.group, self.cfg.worker.max_batch)
            self._started = True

    def finished(self) -> bool:
        max_frames, idle_exit_s = self._limits
        if max_frames is not None and self.counts["frames"] >= max_frames:
            return True
        return idle_exit_s is not None and time.monotonic() - self._last_work > idle_exit_s

    def teardown(self) -> None:
        self._heartbeat(force=True, alive=False)

    def step(self) -> int:
        """Read one micro-batch (reclaimed entries first) and give every frame in it exactly one outcome."""
        now = time.monotonic()
        if now >= self._next_reload:
            self._next_reload = now + self.cfg.worker.reload_poll_s
            self.maybe_reload()
        self._heartbeat()
        entries, self._recovered = self._recovered, []
        entries += self._reclaim(now)
        entries += self._read_batch(self.cfg.worker.max_batch - len(entries))
        if not entries:
            return 0
        self._last_work = time.monotonic()
        work = self._triage(entries)
        self._inspect([w for w in work if w.verdict is None])
        self._publish(work)
        return len(entries)

    def _read_batch(self, room: int) -> list[Entry]:
        if room <= 0:
            return []
        names, wcfg = self.bus.names, self.cfg.worker
        entries = self.bus.read_new(names.frames, wcfg.group, self.name, room, block_ms=100)
        deadline = time.monotonic() + wcfg.max_wait_ms / 1000
        while entries and len(entries) < room and time.monotonic() < deadline:
            more = self.bus.read_new(names.frames, wcfg.group, self.name, room - len(entries), block_ms=None)
            if not more:
                time.sleep(min(0.001, max(0.0, deadline - time.monotonic())))
            entries += more
        return entries

    def _reclaim(self, now: float) -> list[Entry]:
        if now < self._next_reclaim:
            return []
        wcfg = self.cfg.worker
        self._next_reclaim = now + wcfg.reclaim_idle_ms / 2000
        entries = self.bus.reclaim(self.bus.names.frames, wcfg.group, self.name, wcfg.reclaim_idle_ms, wcfg.max_batch)
        if entries:
            log.info("worker %s reclaimed %d stale entries", self.name, len(entries))
            telemetry.reclaimed(self.bus.names.frames, wcfg.group, len(entries))
        return entries

    # -- per-frame outcome ---------------------------------------------------------------------------
    def _triage(self, entries: list[Entry]) -> list[Work]:
        """Parse, dedupe, dead-letter and expire; what is left needs inspection (verdict None)."""
        work: list[Work] = []
        deliveries = self.bus.delivery_counts(
            self.bus.names.frames, self.cfg.worker.group, [e.entry_id for e in entries]
        )
        for entry in entries:
            if entry.fields is None:  # trimmed from the bounded stream while pending
                self.bus.count("not_inspected")
                self.bus.ack([entry.entry_id])
                continue
            try:
                meta = decode_message(entry.message_raw)
                if not isinstance(meta, FrameMeta):
                    raise FrameError(
                        f"entry {entry.entry_id} on the frames stream is a {meta.kind}", "only frames belong there"
                    )
            except InspectorError as err:
                self.bus.dead_letter(
                    entry, f"unreadable frame message: {err.message}", deliveries.get(entry.entry_id, 1)
                )
                self.bus.ack([entry.entry_id])
                self.counts["dead_letter"] += 1
                continue
            item = Work(entry, meta)
            n = deliveries.get(entry.entry_id, 1)
            if n > self.cfg.worker.max_deliveries:
                self.bus.dead_letter(entry, f"failed {n - 1} deliveries", n)
                self.counts["dead_letter"] += 1
                item.verdict = self._error(meta, f"dead-lettered after {n - 1} failed deliveries")
            elif self.cfg.worker.expire_ms and (time.time() - meta.captured_at) * 1000 > self.cfg.worker.expire_ms:
                self.bus.count("expired")
                item.verdict = self._error(
                    meta, f"expired: {(time.time() - meta.captured_at) * 1000:.0f} ms old when read"
                )
            work.append(item)
        done = self.bus.is_done([w.meta.id for w in work])
        for w, is_done in zip(work, done, strict=True):
            if is_done:  # redelivered after its verdict was committed: acknowledge only
                self.counts["duplicates"] += 1
                self.bus.ack([w.entry.entry_id])
        return [w for w, is_done in zip(work, done, strict=True) if not is_done]

    def _inspect(self, work: list[Work]) -> None:
        decoded: list[Work] = []
        for w in work:
            t0 = time.perf_counter()
            try:
                w.image = decode_image(w.entry.image, w.meta.encoding, self.cfg.worker.max_image_pixels)
                self.latency.add("decode", (time.perf_counter() - t0) * 1000)
                decoded.append(w)
            except FrameError as err:
                w.verdict = self._error(w.meta, f"decode: {err.message}")
        by_model: dict[int, tuple[InspectionModel, list[Work]]] = {}
        for w in decoded:  # each frame is judged by its own product's model; one batch per model
            if self.cfg.parts.views and w.meta.view not in self.cfg.parts.views:
                w.verdict = self._error(
                    w.meta,
                    f"view {w.meta.view!r} is not one of parts.views "
                    f"({', '.join(self.cfg.parts.views)}): set camera.view to one of them",
                )
                continue
            model = self._model_for(w.meta)
            if model is None:
                w.verdict = self._error(
                    w.meta,
                    f"product {w.meta.product!r} is not served by this worker "
                    f"(its products: {', '.join(self.product_models) or 'none'})",
                )
                continue
            by_model.setdefault(id(model), (model, []))[1].append(w)
        for model, group in by_model.values():
            t0 = time.perf_counter()
            outputs = model.infer([w.image for w in group])  # type: ignore[misc]
            infer_ms = (time.perf_counter() - t0) * 1000
            self.latency.add("infer_batch", infer_ms)
            for w, out in zip(group, outputs, strict=True):
                if isinstance(out, FrameError):
                    w.verdict = self._error(w.meta, f"model: {out.message}", model.version)
                else:
                    w.verdict = self._verdict(w, out, model)

    def _model_for(self, meta: FrameMeta) -> InspectionModel | None:
        if meta.product is None:
            return self.model
        return self.product_models.get(meta.product)

    def _verdict(self, w: Work, out: ModelOutput, model: InspectionModel) -> Verdict:
        return model_verdict(self.cfg, w.meta, w.image, out, model.version, self.name)

    def _error(self, meta: FrameMeta, reason: str, version: str | None = None) -> Verdict:
        self.counts["errors"] += 1
        return error_verdict(self.cfg, meta, reason, version or self.model.version, self.name)

    def _publish(self, work: list[Work]) -> None:
        items = [(w.verdict, w.entry.entry_id) for w in work if w.verdict is not None]
        t0 = time.perf_counter()
        fresh = self.bus.commit_verdicts(items)  # type: ignore[arg-type]
        self.latency.add("publish", (time.perf_counter() - t0) * 1000)
        self.counts["frames"] += len(work)
        self.counts["verdicts"] += sum(fresh)
        self.counts["duplicates"] += len(fresh) - sum(fresh)
        for w, is_new in zip([w for w in work if w.verdict is not None], fresh, strict=True):
            if w.verdict.latency_ms is not None:  # type: ignore[union-attr]
                self.latency.add("end_to_end", w.verdict.latency_ms)  # type: ignore[union-attr]
            if is_new:
                self._run_sinks(w)

    def _run_sinks(self, w: Work) -> None:
        for sink in self.sinks:
            try:
                sink(w.verdict, w.entry.image, w.meta.encoding)  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001 - a failing side output never blocks the verdict
                log.exception("sink %s failed for frame %s", getattr(sink, "__name__", sink), w.meta.id)

    # -- health ---------------------------------------------------------------------------------------
    def stats(self) -> dict[str, object]:
        return {
            "worker": self.name,
            "model_version": self.model.version,
            "counts": self.counts,
            "latency_ms": self.latency.percentiles(),
            "ts": time.time(),
        }

    def _heartbeat(self, force: bool = False, alive: bool = True) -> None:
        now = time.monotonic()
        if not force and now < self._next_heartbeat:
            return
        ttl = self.cfg.worker.heartbeat_ttl_s
        self._next_heartbeat = now + ttl / 3
        key = self.bus.names.heartbeat(self.name)
        try:
            if alive:
                self.bus.r.set(key, json.dumps(self.stats()), px=int(ttl * 1000))
                register_beat(self.bus.r, self.bus.names, self.role, self.name, ttl)
            else:
                self.bus.r.delete(key)
                unregister(self.bus.r, self.bus.names, self.role, self.name)
        except HEARTBEAT_ERRORS:
            pass

    def _event(self, etype: EventType, severity: str, message: str, version: str | None = None) -> None:
        try:
            self.bus.publish_event(
                Event(
                    station=self.cfg.station.id,
                    type=etype,
                    severity=severity,  # type: ignore[arg-type]
                    message=message,
                    model_version=version,
                    data={"worker": self.name},
                )
            )
        except Exception:  # noqa: BLE001
            log.exception("could not publish event")
