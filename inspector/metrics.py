"""Counters and latency percentiles per stage, kept in memory by each process and published with its heartbeat."""

from __future__ import annotations

from collections import defaultdict, deque

import numpy as np


class LatencyWindow:
    """The last ``size`` samples of each stage, with percentiles."""

    def __init__(self, size: int = 4096) -> None:
        self.samples: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=size))

    def add(self, stage: str, ms: float) -> None:
        self.samples[stage].append(ms)

    def percentiles(self, q: tuple[float, ...] = (50, 99)) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for stage, values in self.samples.items():
            if values:
                arr = np.fromiter(values, float)
                out[stage] = {f"p{int(p)}": round(float(np.percentile(arr, p)), 3) for p in q}
                out[stage]["n"] = len(arr)
        return out


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, float), q)) if values else float("nan")
