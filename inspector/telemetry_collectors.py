"""How a process's metrics are read at scrape time: one collector per watched object (:func:`register`, a newer
object of the same kind replaces the older), built from a function that yields metric families (:class:`Watch`);
a collector that fails yields nothing, so a scrape never raises."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("inspector.telemetry")  # the metrics log name, as before the split

_registered: dict[str, Collector] = {}


def register(key: str, make: Callable[[], Collector], replace: bool = True) -> None:
    """Register the collector of ``key``; a newer object of the same kind (a recorder made again, a second
    runner in one process) replaces the older one, unless ``replace`` is False."""
    old = _registered.get(key)
    if old is not None:
        if not replace:
            return
        REGISTRY.unregister(old)
    _registered[key] = collector = make()
    REGISTRY.register(collector)


def _try(fn: Callable[[], Iterable[Any]]) -> Iterable[Any]:
    """A collector that fails (Redis away, an object mid-swap) yields nothing instead of breaking the scrape."""
    try:
        return list(fn())
    except Exception as err:  # noqa: BLE001 - a scrape never raises
        log.debug("metrics collector failed: %s", err)
        return []


def counter_family(
    name: str, doc: str, labels: list[str], rows: Iterable[tuple[list[str], float]]
) -> CounterMetricFamily:
    """A counter family ``name`` with one sample per row (label values, value)."""
    m = CounterMetricFamily(name, doc, labels=labels)
    for values, v in rows:
        m.add_metric(values, v)
    return m


def gauge_family(name: str, doc: str, labels: list[str], rows: Iterable[tuple[list[str], float]]) -> GaugeMetricFamily:
    """A gauge family ``name`` with one sample per row (label values, value)."""
    m = GaugeMetricFamily(name, doc, labels=labels)
    for values, v in rows:
        m.add_metric(values, v)
    return m


class Watch(Collector):
    """A collector whose metric families ``fn`` yields at each scrape (nothing when ``fn`` fails)."""

    def __init__(self, fn: Callable[[], Iterable[Any]]) -> None:
        self.fn = fn

    def collect(self) -> Iterable[Any]:
        return _try(self.fn)
