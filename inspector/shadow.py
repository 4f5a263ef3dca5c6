"""Shadow mode: a candidate model judges live frames beside the active one, and nothing it says reaches the line.

``inspector shadow run`` (a station process, started by the supervisor when ``shadow`` is in
``supervisor.processes``) reads the frames stream in its own consumer group, so it sees every frame the
workers see without taking any from them. It judges each frame with the candidate named by the Redis hash
``model:shadow`` (set only by ``inspector shadow start VERSION``, audited; the version must be registered and
its package must have the registered hash), decides with the station's policy and stores the result in
``shadow_verdicts``. It never writes the verdicts stream, the done keys or the counters the line reads.

It runs on spare capacity: niced (``shadow.nice``) and under SCHED_IDLE (``shadow.idle_priority``), on ``shadow.threads`` runtime threads, and frames older
than ``shadow.max_lag_ms`` when it reads them are skipped and counted (``shadow_skipped``), so it never
queues behind the line. Images of frames where the candidate's verdict differs from the active one are
archived (up to ``shadow.save_differing`` per version, :mod:`inspector.shadow_differing`) for
``inspector jobs shadow-report``.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import redis

from inspector.archive import Archive
from inspector.bus.heartbeat import StationHeartbeat
from inspector.bus.lag import group_lag
from inspector.bus.streams import Entry, StationBus, decode_message
from inspector.contracts.config import StationConfig
from inspector.contracts.errors import FrameError, InspectorError, ModelPackageError
from inspector.contracts.health import ConsumerRole
from inspector.contracts.messages import Decision, FrameMeta
from inspector.decision import decide, line_rejects
from inspector.models.decode import decode_image
from inspector.models.inference import InspectionModel
from inspector.progress import Progress
from inspector.shadow_differing import MATCH_AFTER_S, DifferingImages
from inspector.store.db import Store
from inspector.store.models import ModelVersionRow
from inspector.store.shadow import record_shadow_verdicts

log = logging.getLogger(__name__)

GAP_SAFETY = 1.3  # the candidate starts a frame only if 1.3 times its measured time fits before the next frame


class ShadowRefused(InspectorError):
    """The version named for shadow mode cannot be shadowed."""


def shadow_pointer(client: redis.Redis, bus: StationBus) -> tuple[str, str] | None:
    raw = client.hgetall(bus.names.shadow_model)
    if not raw or b"version" not in raw:
        return None
    return raw[b"version"].decode(), raw.get(b"sha256", b"").decode()


def registered_version(store: Store, version: str) -> ModelVersionRow:
    with store.session() as s:
        row = s.get(ModelVersionRow, version)
    if row is None:
        raise ShadowRefused(f"model version {version} is not registered", "`inspector jobs status` lists versions")
    return row


def shadow_config(cfg: StationConfig) -> StationConfig:
    """The station config the candidate runs under: the shadow's threads and batch, everything else the same."""
    runtime = cfg.runtime.model_copy(update={"threads": cfg.shadow.threads})
    worker = cfg.worker.model_copy(update={"max_batch": cfg.shadow.max_batch})
    return cfg.model_copy(update={"runtime": runtime, "worker": worker})


class ShadowRunner:
    """The shadow process's loop: read live frames, judge them with the candidate, store, acknowledge."""

    def __init__(self, cfg: StationConfig, client: redis.Redis, store: Store, name: str = "shadow") -> None:
        self.cfg, self.store, self.name = cfg, store, name
        self.bus = StationBus(client, cfg)
        self.names = self.bus.names
        self.group = self.names.shadow_group
        self.model: InspectionModel | None = None
        self.pointer: tuple[str, str] | None = None
        self._refused: set[tuple[str, str]] = set()
        self.archive = Archive.for_data_dir(cfg.data_dir)
        self.progress = Progress(ConsumerRole.SHADOW, name, cfg.store.stall_s)
        self.heartbeat = StationHeartbeat(client, self.names, self.progress)  # listed in `inspector status`
        self.counts: dict[str, int] = {"judged": 0, "skipped": 0, "trimmed": 0, "unreadable": 0, "saved_images": 0}
        self.differing = DifferingImages(store, self.archive, cfg.shadow.save_differing)
        self._next_poll = 0.0
        self._next_match = 0.0
        self._next_read = 0.0
        self._judge_s = 0.05  # the candidate's time per frame (decode + model + decide), measured as it runs
        self._next_flush = 0.0
        self._rows: list[dict[str, object]] = []
        self._acks: list[str] = []
        self.stop_event = threading.Event()
        self.bus.ensure_group(self.names.frames, self.group, start="$")

    # -- which candidate -----------------------------------------------------------------------------
    def poll_pointer(self) -> None:
        """Load the candidate the Redis pointer names once the registry backs it; unload when it is cleared."""
        pointer = shadow_pointer(self.bus.r, self.bus)
        if pointer == self.pointer or (pointer is not None and pointer in self._refused):
            return
        if pointer is None:
            log.info("shadow %s: shadow mode stopped (was %s)", self.name, self.pointer and self.pointer[0])
            self._unload()
            return
        version, sha = pointer
        try:
            row = registered_version(self.store, version)
            if row.package_sha256 != sha:
                raise ShadowRefused(
                    f"the shadow pointer's hash {sha[:12]} is not the registered {row.package_sha256[:12]}"
                    f" of {version}",
                    "start it again with `inspector shadow start VERSION`",
                )
            from inspector.worker import load_model

            model = load_model(shadow_config(self.cfg), row.package_path)
            if model.package.package_sha256 != row.package_sha256:
                model.close()
                raise ShadowRefused(
                    f"the package at {row.package_path} is not the one registered as {version}",
                    "restore the registered package",
                )
        except (InspectorError, ModelPackageError) as err:
            log.error("shadow %s: %s refused: %s", self.name, version, err.message)
            self._refused.add(pointer)
            return
        self._unload()
        self.differing.follow(version)
        self._judge_s = self._time_one(model)
        self._skip_backlog()
        # only now: a frame published after `model` is set is judged (set before the backlog skip, the frames
        # published while the canary was timed were skipped: the promotion test saw 39 of its 40)
        self.model, self.pointer = model, pointer
        log.info("shadow %s: judging live frames with %s (never sent to the line)", self.name, version)

    def _time_one(self, model: InspectionModel) -> float:
        """The candidate's time for one frame, measured on its canary before it judges live frames."""
        package = model.package
        files = [c.file for c in package.manifest.canaries]
        if not files:
            return 0.05
        image = decode_image(package.file(files[0]).read_bytes(), "png" if files[0].endswith(".png") else "jpeg")
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            model.infer([image])
            best = min(best, time.perf_counter() - t0)
        return best

    def _unload(self) -> None:
        self.flush(force=True)
        if self.model is not None:
            self.model.close()
        self.model, self.pointer = None, None
        self.differing.forget()

    def _skip_backlog(self) -> None:
        """A new candidate starts at the live end of the stream: what was pending or unread is skipped."""
        self.bus.r.xgroup_setid(self.names.frames, self.group, "$")
        while True:
            pending = self.bus.r.xpending_range(self.names.frames, self.group, min="-", max="+", count=500)
            if not pending:
                return
            self.bus.r.xack(self.names.frames, self.group, *[p["message_id"] for p in pending])

    # -- loop ----------------------------------------------------------------------------------------
    def run(self, max_frames: int | None = None) -> dict[str, int]:
        self.heartbeat.start()
        clean = False
        try:
            while not self.stop_event.is_set():
                try:
                    self.step()
                except (redis.ConnectionError, redis.TimeoutError) as err:
                    self.progress.failed(f"Redis: {err}")
                    self.stop_event.wait(0.5)
                    continue
                except Exception as err:  # noqa: BLE001 - the shadow never takes the station down; say it and go on
                    log.exception("shadow %s: step failed", self.name)
                    self.progress.failed(str(err))
                    self.stop_event.wait(1.0)
                    continue
                if max_frames is not None and self.counts["judged"] >= max_frames:
                    break
            clean = True
        finally:
            try:
                self.flush(force=True)
            except Exception:  # noqa: BLE001 - unflushed frames stay pending; a restart skips them (live only)
                log.exception("shadow %s: last rows not written", self.name)
            self.heartbeat.stop(unregister_process=clean)  # a crash stays listed, as down
            self._unload()
        return dict(self.counts)

    def stop(self) -> None:
        self.stop_event.set()

    def step(self) -> int:
        now = time.monotonic()
        if now >= self._next_poll:
            self._next_poll = now + self.cfg.worker.reload_poll_s
            self.poll_pointer()
        if self.model is None:
            self.progress.ok()
            self.stop_event.wait(0.2)
            return 0
        n = self._judge_in_gaps() if self.cfg.shadow.pace == "gaps" else self._judge_batches()
        self.flush()
        if now >= self._next_match:
            self._next_match = now + MATCH_AFTER_S
            self.counts["saved_images"] += self.differing.save_due()
        self.progress.ok(n)
        return n

    def _judge_batches(self) -> int:
        """pace=batch: every poll_ms, everything that arrived since, in batches (a machine with cores to spare)."""
        wait_s = self._next_read - time.monotonic()
        if wait_s > 0:
            self.stop_event.wait(wait_s)
        self._next_read = time.monotonic() + self.cfg.shadow.poll_ms / 1000
        n = 0
        while not self.stop_event.is_set():
            entries = self.bus.read_new(
                self.names.frames, self.group, self.name, self.cfg.shadow.max_batch, block_ms=None
            )
            if not entries:
                break
            n += self._judge(entries)
            if len(entries) < self.cfg.shadow.max_batch:
                break
        return n

    def _judge_in_gaps(self) -> int:
        """pace=gaps: judge one frame at a time, only while the line's workers have nothing to do and the
        candidate's measured time fits before the camera's next frame is due (or the camera is between parts):
        the active model never waits for the shadow's CPU. Returns within about 200 ms."""
        n, until = 0, time.monotonic() + 0.2
        while time.monotonic() < until and not self.stop_event.is_set():
            if not self._line_idle():
                self.stop_event.wait(0.003)
                continue
            entries = self.bus.read_new(self.names.frames, self.group, self.name, 1, block_ms=None)
            if not entries:
                self.stop_event.wait(0.01)
                continue
            t0 = time.perf_counter()
            judged = self._judge(entries)
            if judged:
                self._judge_s = 0.8 * self._judge_s + 0.2 * (time.perf_counter() - t0)
            n += judged
        return n

    def _line_idle(self) -> bool:
        """No frame waits for the inspection workers, and the next one is not due before the candidate would be
        done (the frames group's last delivered id is the newest frame's arrival, in Redis's milliseconds)."""
        for g in self.bus.group_info(self.names.frames):
            if g.get("name") in (self.cfg.worker.group, self.cfg.worker.group.encode()):
                if (g.get("pending") or 0) or group_lag(self.bus.r, self.names.frames, g, cap=1).entries:
                    return False
                last = g.get("last-delivered-id", b"0-0")
                last = last.decode() if isinstance(last, bytes) else str(last)
                since = time.time() - int(last.split("-")[0]) / 1000
                period = 1.0 / self.cfg.camera.fps
                return since > 2 * period or since + GAP_SAFETY * self._judge_s < period
        return True  # no inspection workers' group yet: nothing to delay

    def _fresh(self, entries: list[Entry]) -> list[tuple[Entry, FrameMeta]]:
        fresh: list[tuple[Entry, FrameMeta]] = []
        for entry in entries:
            if entry.fields is None:
                self.counts["trimmed"] += 1
                continue
            try:
                meta = decode_message(entry.message_raw)
            except InspectorError:
                self.counts["unreadable"] += 1
                continue
            if not isinstance(meta, FrameMeta):
                self.counts["unreadable"] += 1
                continue
            if (time.time() - meta.captured_at) * 1000 > self.cfg.shadow.max_lag_ms:
                self.counts["skipped"] += 1
                continue
            fresh.append((entry, meta))
        return fresh

    def _judge(self, entries: list[Entry]) -> int:
        assert self.model is not None and self.pointer is not None
        fresh = self._fresh(entries)
        skipped = len(entries) - len(fresh)
        if skipped:
            self.bus.count("shadow_skipped", skipped)
        rows, images, decoded = [], [], []
        for entry, meta in fresh:
            try:
                images.append(decode_image(entry.image, meta.encoding, self.cfg.worker.max_image_pixels))
                decoded.append((entry, meta))
            except FrameError as err:
                rows.append(self._row(meta, Decision.ERROR, None, None, None, f"decode: {err.message}"))
        if decoded:
            t0 = time.perf_counter()
            outputs = self.model.infer(images)
            per_frame = (time.perf_counter() - t0) * 1000 / len(decoded)
            for (entry, meta), out in zip(decoded, outputs, strict=True):
                if isinstance(out, FrameError):
                    rows.append(self._row(meta, Decision.ERROR, None, None, per_frame, f"model: {out.message}"))
                    continue
                result = decide(out.class_probs, out.anomaly_score, self.cfg.policy, out.classifier_decides)
                rows.append(self._row(meta, result.decision, result.defect_class, out.anomaly_score, per_frame, None))
                self.differing.remember(meta, entry.image)
        self._rows += rows
        self._acks += [e.entry_id for e in entries]
        self.counts["judged"] += len(rows)
        return len(rows)

    def flush(self, force: bool = False) -> None:
        """Write the judged rows in one transaction, then acknowledge their frames (at most every flush_s:
        the shadow's database and Redis writes stay few beside the line's own fsynced ones)."""
        if not self._acks or (not force and time.monotonic() < self._next_flush):
            return
        record_shadow_verdicts(self.store, self._rows)
        self.bus.r.xack(self.names.frames, self.group, *self._acks)
        self._rows, self._acks = [], []
        self._next_flush = time.monotonic() + self.cfg.shadow.flush_s

    def _row(
        self,
        meta: FrameMeta,
        decision: Decision,
        defect_class: str | None,
        score: float | None,
        infer_ms: float | None,
        error: str | None,
    ) -> dict[str, object]:
        assert self.pointer is not None
        return {
            "version": self.pointer[0],
            "frame_id": meta.id,
            "part_id": meta.part_id,
            "camera": meta.camera,
            "captured_at": meta.captured_at,
            "decided_at": time.time(),
            "decision": decision.value,
            "reject": line_rejects(decision, self.cfg.policy),
            "defect_class": defect_class,
            "anomaly_score": score,
            "infer_ms": None if infer_ms is None else round(infer_ms, 3),
            "latency_ms": round((time.time() - meta.captured_at) * 1000, 3),
            "error": error,
        }


def run_shadow_process(cfg: StationConfig, client: redis.Redis, store: Store, name: str) -> dict[str, int]:
    """``inspector shadow run``: nice the process, stop on SIGTERM, run until stopped."""
    import signal

    if cfg.shadow.nice:
        try:
            os.nice(cfg.shadow.nice)
        except OSError as err:
            log.warning("shadow %s: cannot lower its CPU priority (%s); it runs at normal priority", name, err)
    if cfg.shadow.idle_priority and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError as err:
            log.warning("shadow %s: SCHED_IDLE refused (%s); it runs niced only", name, err)
    runner = ShadowRunner(cfg, client, store, name)

    def handler(_signum: int, _frame: object) -> None:
        runner.stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return runner.run()
