"""The drift scenario's view of the running station: its Redis, the camera it plays (``publish``,
``run_line``), readiness of workers, line, drift monitor and RQ worker, the drift alarms and retrain jobs."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis
from rich.console import Console

from inspector.bus.connection import client_for_url, embedded_url
from inspector.bus.streams import StationBus, decode_message
from inspector.camera.synthetic import PartFactory
from inspector.contracts.config import StationConfig
from inspector.contracts.messages import Event, EventType, FrameMeta
from inspector.line.sim_plc import SimulatedPlc
from inspector.models.decode import encode_image
from jobs.queues import JobKeys, names_of, station_queue
from jobs.scenario.parts import (
    DriftScenario,
    LineLog,
    ScenarioError,
    ScriptedQualityEngineer,
    Sent,
    relight,
)
from jobs.scenario.station import Station, scenario_config


class ScenarioLine:
    """The station as the scenario drives and reads it; :class:`jobs.scenario.drift.DriftRun` plays the loop."""

    def __init__(self, cfg: StationConfig, root: Path, size: DriftScenario, console: Console) -> None:
        self.size, self.console, self.root = size, console, root
        self.plc = SimulatedPlc()
        self.cfg = scenario_config(cfg, root, size, self.plc)
        self.t0 = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self.summary: dict[str, Any] = {
            "scenario": "drift",
            "image_size": size.image_size,
            "workers": size.workers,
            "lighting_gain": size.lighting_gain,
            "drift_hysteresis": self.cfg.drift.hysteresis,
            "review_per_minute": self.cfg.review.limits.per_minute,
            "auto_promote": self.cfg.jobs.auto_promote,
        }
        self.factory = PartFactory(seed=size.seed, size=size.image_size)
        self.gain = 1.0
        self.phase = "before_change"
        self.seq = 0
        self.station: Station | None = None
        self.qe: ScriptedQualityEngineer | None = None
        self.store: Any = None
        self.client: redis.Redis | None = None

    # -- helpers
    def say(self, msg: str) -> None:
        self.console.print(f"[dim]{time.perf_counter() - self.t0:6.1f} s[/] {msg}", highlight=False)

    @contextlib.contextmanager
    def step(self, name: str, title: str) -> Iterator[None]:
        t = time.perf_counter()
        with self.console.status(f"[bold]{title}[/]"):
            yield
        self.seconds[name] = round(time.perf_counter() - t, 1)
        self.say(f"{title}: done in {self.seconds[name]} s")

    # -- 2. the station
    def start_station(self) -> None:
        self.station = Station(self.cfg, self.config_file, Path(self.cfg.data_dir) / "station.log")
        self.station.start()
        deadline = time.monotonic() + 30
        url = None
        while url is None and time.monotonic() < deadline and self.station.alive():
            url = embedded_url(Path(self.cfg.data_dir))
            time.sleep(0.1)
        if url is None:
            raise ScenarioError("the station's Redis did not start", f"read {self.station.log_file}")
        self.client = client_for_url(url, self.cfg.redis)
        self.bus = StationBus(self.client, self.cfg)
        self.line = LineLog(self.client, self.bus.names.verdicts)
        self._wait_ready()
        self.line.last_id = self._last_id(self.bus.names.verdicts)
        self.events_from = self._last_id(self.bus.names.events)
        self.qe = ScriptedQualityEngineer(self.cfg, self.store, self._truth)
        self.qe.start()

    def _last_id(self, stream: str) -> str:
        assert self.client is not None
        if not self.client.exists(stream):
            return "0-0"
        return str(self.client.xinfo_stream(stream)["last-generated-id"].decode())

    def _truth(self, frame_id: str) -> str | None:
        sent = self.line.sent.get(frame_id)
        return sent.truth if sent else None

    def _workers_on(self, version: str) -> bool:
        assert self.client is not None
        beats = [self.client.get(k) for k in self.client.scan_iter(self.bus.names.heartbeat_pattern)]
        versions = [json.loads(b)["model_version"] for b in beats if b]
        return len(versions) >= self.size.workers and all(v == version for v in versions)

    def _groups(self, stream: str) -> set[str]:
        assert self.client is not None
        if not self.client.exists(stream):
            return set()
        return {g["name"].decode() for g in self.client.xinfo_groups(stream)}

    def _rq_workers(self) -> int:
        from rq import Worker

        assert self.client is not None
        return len(Worker.all(queue=station_queue(self.cfg, self.client)))

    def _wait_ready(self) -> None:
        names = self.bus.names
        deadline = time.monotonic() + self.size.ready_wait_s
        while time.monotonic() < deadline:
            if self.station is None or not self.station.alive():
                raise ScenarioError("the station's supervisor exited", self.station.tail() if self.station else "")
            verdict_groups = self._groups(names.verdicts)
            if (
                self._workers_on(self.v1)
                and names.drift_group in verdict_groups
                and names.line_group in verdict_groups
                and self._rq_workers() >= 1
            ):
                return
            time.sleep(0.2)
        raise ScenarioError(
            f"the station was not ready within {self.size.ready_wait_s:.0f} s",
            self.station.tail() if self.station else "",
        )

    # -- 3. the camera
    def publish(self) -> None:
        kind = self.factory.sample_kind(self.size.defect_rate)
        img = relight(self.factory.make(kind), self.gain) if self.gain != 1.0 else self.factory.make(kind)
        meta = FrameMeta(
            station=self.cfg.station.id,
            camera="cam0",
            seq=self.seq,
            part_id=f"part-{self.seq:05d}",
            captured_at=time.time(),
            encoding="jpeg",
            truth=kind,
        )
        self.line.sent[meta.id] = Sent(self.phase, kind, time.time())
        self.bus.publish_frame(meta, encode_image(img, "jpeg", self.cfg.camera.jpeg_quality))
        self.seq += 1

    def run_line(
        self,
        fps: float,
        until: Callable[[], bool],
        max_frames: int | None = None,
        every: Callable[[], None] | None = None,
    ) -> int:
        """Publish at ``fps`` until ``until()`` (checked between frames) or ``max_frames``; returns frames sent."""
        period, n = 1.0 / fps, 0
        next_t = time.monotonic()
        while not until() and (max_frames is None or n < max_frames):
            if self.station is not None and not self.station.alive():
                raise ScenarioError("the station's supervisor exited", self.station.tail())
            self.publish()
            n += 1
            next_t += period
            while (left := next_t - time.monotonic()) > 0:
                self.line.poll(int(left * 1000))
            if every is not None:
                every()
        return n

    def drift_alarms(self) -> list[Event]:
        assert self.client is not None
        out = []
        for _eid, fields in self.client.xrange(self.bus.names.events, min=f"({self.events_from}"):
            ev = decode_message(fields[b"m"])
            if isinstance(ev, Event) and ev.type is EventType.DRIFT_ALARM:
                out.append(ev)
        return out

    def retrain_jobs(self) -> list[str]:

        assert self.client is not None
        return [j.decode() for j in self.client.lrange(JobKeys(names_of(self.cfg)).history, 0, -1)]
