"""Where each station process serves its Prometheus metrics: the port of a process (``metrics.port_base`` plus
its offset, ``metrics.ports`` overrides any) and the HTTP endpoint, with the station view read from Redis at
scrape time. A port in use is one log line and the process goes on without metrics."""

from __future__ import annotations

import logging
import re

from prometheus_client import start_http_server

from inspector.contracts.config import METRICS_PORT_OFFSETS, METRICS_WORKER_OFFSET, StationConfig
from inspector.telemetry_collectors import register
from inspector.telemetry_station import StationCollector

log = logging.getLogger("inspector.telemetry")  # the metrics log name, as before the split


def worker_process(name: str | None) -> str:
    """The metrics name of a worker: ``worker-N`` for the supervisor's numbered workers, else ``worker``."""
    m = re.search(r"-worker-(\d+)$", name or "")
    return f"worker-{int(m.group(1))}" if m else "worker"


def metrics_port(cfg: StationConfig, process: str) -> int:
    """The port ``process`` (camera, line, drift, jobs, gui, worker, worker-N) serves on; 0: none."""
    if process in cfg.metrics.ports:
        return cfg.metrics.ports[process]
    if process in METRICS_PORT_OFFSETS:
        return cfg.metrics.port_base + METRICS_PORT_OFFSETS[process]
    m = re.match(r"^worker(?:-(\d+))?$", process)
    if not m:
        raise ValueError(f"unknown station process {process!r}")
    return cfg.metrics.port_base + METRICS_WORKER_OFFSET + int(m.group(1) or 0)


_served: dict[str, int | None] = {}


def serve(cfg: StationConfig, process: str, station: bool = True) -> int | None:
    """Serve /metrics for this process (with the station view read from Redis unless ``station`` is False).
    Returns the port, or None when metrics are off or the port cannot be bound (one log line; the process goes on)."""
    if not cfg.metrics.enabled:
        return None
    if station:
        register(f"station:{cfg.station.id}", lambda: StationCollector(cfg), replace=False)
    if process in _served:  # once per process: a second call neither retries nor repeats the line
        return _served[process]
    port = metrics_port(cfg, process)
    _served[process] = None
    if port == 0:
        return None
    host = cfg.metrics.host
    try:
        start_http_server(port, addr=host)
    except OSError as err:
        key = f"metrics.ports.{process}"
        log.error(
            "metrics port %s:%d of %s cannot be served (%s): %s goes on without metrics; free the port or "
            "set %s (or metrics.port_base)",
            host,
            port,
            process,
            err.strerror or err,
            process,
            key,
        )
        return None
    _served[process] = port
    log.info("%s serves Prometheus metrics on http://%s:%d/metrics", process, host, port)
    return port
