"""Prometheus metrics of the station: every metric name defined here, once (the station view's in
:mod:`inspector.telemetry_station`); each process serves its own (ports and endpoint:
:mod:`inspector.telemetry_serve`; collectors read at scrape time are built with :mod:`inspector.telemetry_collectors`).

Every long-running process calls :func:`serve` from its entry point (``inspector camera | worker | line | gui``,
``inspector jobs drift | worker``) and registers what it watches. Ports (``metrics.*`` in the station file):
``metrics.port_base`` + camera 0, line 1, drift 2, jobs 3, gui 4, worker-N 10+N (``metrics.ports`` overrides any).
A port in use is one log line and the process goes on without metrics: a metrics failure never stops inspection.

What each process serves (besides prometheus-client's own process_* and python_* metrics):

- every process with a station Redis client: the station view read at scrape time — stream length, and per
  consumer group lag, pending entries and consumers (``inspector_stream_*``), the dead-letter stream's length,
  the station counters that ``inspector status`` shows (``inspector_station_counter``), live workers and camera;
- camera: frames published / not sent, camera silent;
- worker (and its verdict recorder and review router): frames, verdicts by decision and defect class, per-stage
  latency histograms, duplicates, errors, dead letters, reclaims, model version and load time, rows recorded;
- line: parts by signal and reason, ready, parts in flight, output errors;
- drift monitor: each statistic's PSI, KS p-value and mean shift against their bands, tripped statistics,
  consecutive tripped checks, alarms;
- jobs worker: RQ jobs of the station's queue by state.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from inspector.contracts.config import StationConfig
from inspector.telemetry_collectors import Watch, counter_family, gauge_family, register
from inspector.telemetry_serve import metrics_port, serve, worker_process
from inspector.telemetry_station import station_view

# Re-exported: inspector.status reads the station view from here; the entry points (inspector.cli, jobs.cli)
# import start and worker_process, tests metrics_port; a process's watch function gets this module.
__all__ = ["metrics_port", "register", "serve", "station_view", "worker_process"]

log = logging.getLogger(__name__)

# Seconds; a line's deadline is ~0.5 s, so the fine end matters most.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)

# Keys of Verdict.stage_ms that are not times.
NOT_STAGES = frozenset({"batch_size"})

# ---------------------------------------------------------------------------------------------- names
# Observed where things happen (hooks); the rest is read at scrape time by the collectors below.
VERDICTS = Counter(
    "inspector_verdicts", "Verdicts a worker committed, by decision and defect class.", ["decision", "defect_class"]
)
STAGE_LATENCY = Histogram(
    "inspector_stage_latency_seconds",
    "Per-stage latency of each verdict (decode, "
    "preprocess, infer, infer_batch, postprocess, decide; end_to_end: capture to decision).",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
RECLAIMS = Counter(
    "inspector_reclaims", "Stream entries this process took over from a dead or hung consumer.", ["stream", "group"]
)
MODEL_LOAD_SECONDS = Gauge(
    "inspector_model_load_seconds",
    "Time to verify, load, warm up and canary-check the model package this worker loaded last.",
    ["version"],
)
MODEL_LOADS = Counter("inspector_model_loads", "Model packages loaded (start and hot swaps).")


def start(cfg: StationConfig, process: str, watch: Callable[[Any], object] | None = None) -> int | None:
    """:func:`serve`, then ``watch(this module)`` to register what the process watches; a failure of either is
    logged and never stops the process."""

    port = serve(cfg, process)
    if watch is not None and cfg.metrics.enabled:
        try:
            watch(sys.modules[__name__])
        except Exception as err:  # noqa: BLE001 - metrics never stop inspection
            log.error("metrics of %s not registered (%s): the process goes on without them", process, err)
    return port


# ---------------------------------------------------------------------------------------------- per process
def watch_camera(pub: Any) -> None:
    """The camera publisher's own counts (``inspector camera``)."""
    cam = pub.cam.id

    def collect() -> Iterable[Any]:
        yield counter_family(
            "inspector_frames_published",
            "Frames this camera process published to the frames stream.",
            ["camera"],
            [([cam], pub.seq - pub.not_sent)],
        )
        yield counter_family(
            "inspector_frames_not_sent",
            "Parts the camera saw while Redis was unreachable.",
            ["camera"],
            [([cam], pub.not_sent)],
        )
        yield gauge_family(
            "inspector_camera_silent",
            "1 while the camera has delivered no frame for camera.health_periods.",
            ["camera"],
            [([cam], 1 if pub.silent else 0)],
        )

    register("camera", lambda: Watch(collect))


def watch_worker(worker: Any) -> None:
    """An inspection worker's counts and model (``inspector worker``); verdicts come through :func:`verdict_sink`."""

    def collect() -> Iterable[Any]:
        c, name = dict(worker.counts), worker.name
        yield counter_family(
            "inspector_frames_inspected",
            "Frames this worker read and gave an outcome.",
            ["worker"],
            [([name], c.get("frames", 0))],
        )
        yield counter_family(
            "inspector_worker_verdicts",
            "New verdicts this worker committed.",
            ["worker"],
            [([name], c.get("verdicts", 0))],
        )
        yield counter_family(
            "inspector_worker_duplicates",
            "Verdicts for frames that had one already (redelivery).",
            ["worker"],
            [([name], c.get("duplicates", 0))],
        )
        yield counter_family(
            "inspector_worker_errors", "ERROR verdicts of this worker.", ["worker"], [([name], c.get("errors", 0))]
        )
        yield counter_family(
            "inspector_dead_lettered",
            "Frames this worker moved to the dead-letter stream.",
            ["worker"],
            [([name], c.get("dead_letter", 0))],
        )
        yield gauge_family(
            "inspector_model_info",
            "1 for the model version this worker serves.",
            ["worker", "version"],
            [([name, str(worker.model.version)], 1)],
        )

    register("worker", lambda: Watch(collect))


def verdict_sink(verdict: Any, image: Any = None, encoding: str | None = None) -> None:
    """A worker sink (runs once per new verdict): verdicts by decision and defect class, stage latencies."""
    VERDICTS.labels(verdict.decision.value, verdict.defect_class or "none").inc()
    for stage, ms in (verdict.stage_ms or {}).items():
        if stage not in NOT_STAGES:
            STAGE_LATENCY.labels(stage).observe(ms / 1000)
    if verdict.latency_ms is not None:
        STAGE_LATENCY.labels("end_to_end").observe(verdict.latency_ms / 1000)


def model_loaded(version: str, seconds: float) -> None:
    MODEL_LOADS.inc()
    MODEL_LOAD_SECONDS.clear()
    MODEL_LOAD_SECONDS.labels(version).set(seconds)


def reclaimed(stream: str, group: str, n: int) -> None:
    if n:
        RECLAIMS.labels(stream.rsplit(":", 1)[-1], group).inc(n)


def watch_recorder(recorder: Any) -> None:
    """The verdict recorder's counts (a thread of ``inspector worker``)."""

    def collect() -> Iterable[Any]:
        s, who = dict(recorder.stats), recorder.consumer
        yield counter_family(
            "inspector_verdicts_recorded",
            "Verdicts written to the station database.",
            ["consumer"],
            [([who], s.get("recorded", 0))],
        )
        yield counter_family(
            "inspector_recorder_batches",
            "Database transactions of the recorder.",
            ["consumer"],
            [([who], s.get("batches", 0))],
        )
        yield counter_family(
            "inspector_recorder_reclaimed",
            "Verdict entries the recorder took over from a dead one.",
            ["consumer"],
            [([who], s.get("reclaimed", 0))],
        )
        yield counter_family(
            "inspector_recorder_bad_entries",
            "Verdict entries that could not be recorded.",
            ["consumer"],
            [([who], s.get("bad_entries", 0))],
        )

    register("recorder", lambda: Watch(collect))


def watch_line(runner: Any) -> None:
    """The line runner (``inspector line``): parts by signal and reason, ready, in flight, output errors."""

    def collect() -> Iterable[Any]:
        yield counter_family(
            "inspector_line_parts",
            "Parts given a line signal, by signal and reason.",
            ["signal", "reason"],
            [(list(k), v) for k, v in sorted(runner.outcomes_by_reason.items())],
        )
        h = runner.health
        yield gauge_family(
            "inspector_line_ready", "1 while the line is told READY.", [], [([], 1 if h and h.ready else 0)]
        )
        yield gauge_family(
            "inspector_line_in_flight",
            "Parts waiting for a verdict or their deadline.",
            [],
            [([], runner.decider.pending)],
        )
        yield gauge_family(
            "inspector_line_deadline_seconds",
            "No PASS within this time of capture: reject.",
            [],
            [([], runner.decider.deadline_s)],
        )
        yield counter_family(
            "inspector_line_output_errors",
            "Failed writes or connections of a line output.",
            ["output"],
            [([type(o).__name__], getattr(o, "errors", 0)) for o in runner.outputs],
        )

    register("line", lambda: Watch(collect))


def watch_drift(monitor: Any) -> None:
    """The drift monitor (``inspector jobs drift``): its statistics against their bands."""
    cfg = monitor.cfg.drift

    def collect() -> Iterable[Any]:
        det = monitor.detector
        yield counter_family("inspector_drift_alarms", "DRIFT_ALARM events raised.", [], [([], len(monitor.alarms))])
        yield gauge_family(
            "inspector_drift_band",
            "The bands the statistics are held against.",
            ["band"],
            [
                (["psi_threshold"], cfg.psi_threshold),
                (["p_value"], cfg.p_value),
                (["mean_shift_sigma"], cfg.mean_shift_sigma),
                (["hysteresis"], cfg.hysteresis),
            ],
        )
        if det is None:
            return
        yield counter_family("inspector_drift_checks", "Drift checks of the full window.", [], [([], det.checks)])
        yield gauge_family(
            "inspector_drift_consecutive",
            "Consecutive checks with a tripped statistic (alarm at drift.hysteresis).",
            [],
            [([], det.consecutive)],
        )
        rows = list(_drift_numbers.items())
        yield gauge_family(
            "inspector_drift_psi",
            "Population stability index of the window against the reference.",
            ["statistic"],
            [([k], v["psi"]) for k, v in rows],
        )
        yield gauge_family(
            "inspector_drift_ks_p",
            "KS-test p-value of the window against the reference.",
            ["statistic"],
            [([k], v["ks_p"]) for k, v in rows],
        )
        yield gauge_family(
            "inspector_drift_shift_sigma",
            "Window mean minus reference mean, in reference standard deviations.",
            ["statistic"],
            [([k], v["shift"]) for k, v in rows],
        )
        tripped = set(det.last.tripped) if getattr(det, "last", None) is not None else set()
        names = sorted(set(_drift_numbers) | tripped)
        yield gauge_family(
            "inspector_drift_tripped",
            "1 when the statistic tripped in the last check.",
            ["statistic"],
            [([k], 1 if k in tripped else 0) for k in names],
        )

    register("drift", lambda: Watch(collect))


_drift_numbers: dict[str, dict[str, float]] = {}


def drift_numeric(name: str, result: Any) -> None:
    """Hook of the drift detector's check: the numbers of one numeric statistic."""
    if result is not None:
        _drift_numbers[name] = {"psi": result.psi, "ks_p": result.ks_p, "shift": result.shift}


def watch_jobs(q: Any) -> None:
    """The RQ jobs worker (``inspector jobs worker``): the jobs of its queue ``q`` (an ``rq.Queue``) by state."""

    def collect() -> Iterable[Any]:
        from rq.registry import (
            DeferredJobRegistry,
            FailedJobRegistry,
            FinishedJobRegistry,
            ScheduledJobRegistry,
            StartedJobRegistry,
        )

        rows = [(["queued"], q.count)]
        for state, reg in (
            ("started", StartedJobRegistry),
            ("finished", FinishedJobRegistry),
            ("failed", FailedJobRegistry),
            ("deferred", DeferredJobRegistry),
            ("scheduled", ScheduledJobRegistry),
        ):
            rows.append(([state], reg(queue=q).count))
        yield gauge_family("inspector_jobs", "Jobs of the station's RQ queue by state.", ["state"], rows)

    register("jobs", lambda: Watch(collect))


def watch_gui(started_at: float | None = None) -> None:
    """The GUI process: that it is up (the station view comes with its Redis client)."""
    t0 = started_at or time.time()
    register(
        "gui",
        lambda: Watch(
            lambda: [gauge_family("inspector_gui_start_time_seconds", "When the GUI started.", [], [([], t0)])]
        ),
    )
