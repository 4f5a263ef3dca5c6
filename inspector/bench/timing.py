"""Timing helpers: interleaved side-by-side runs (the only fair comparison on a shared, noisy machine)."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def summary(ms: list[float]) -> dict[str, float]:
    arr = np.asarray(ms, float)
    return {
        "p50_ms": round(float(np.percentile(arr, 50)), 3),
        "p90_ms": round(float(np.percentile(arr, 90)), 3),
        "p99_ms": round(float(np.percentile(arr, 99)), 3),
        "n": len(ms),
    }


def time_one(fn: Callable[[], object], runs: int, warmup: int = 3) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return summary(out)


#: The camera-rate gap of the "paced" regime: one frame every 1/60 s, the worker idle in between.
PACED_GAP_S = 1.0 / 60.0


def interleaved(
    fns: dict[str, Callable[[], object]],
    runs: int,
    warmup: int = 3,
    block: int = 1,
    settle_s: float = 0.0,
    gap_s: float = 0.0,
) -> dict[str, dict[str, float]]:
    """Time the functions in turns, round after round: noise from the neighbours hits all alike.

    ``block`` = 1 runs each function once per turn, so each run finds the caches filled by the others
    ("cold"). ``block`` > 1 runs each ``block`` times per turn and times only the last ``block - 1``: the
    regime of a station, where a worker runs the same model frame after frame ("warm"); the turns still
    take well under a second, so slow phases of a shared machine still hit every function. Before each
    turn the timer sleeps ``settle_s``: thread pools that spin after their last task (torch's OpenMP,
    ONNX Runtime's) go idle instead of stealing the cores from the next backend (measured: with no pause
    or 50 ms, torch's OpenMP threads still spun and added 3.5 ms to a 7.7 ms ONNX Runtime run; 300 ms cured it).
    ``gap_s`` > 0 sleeps that long before every frame: the "paced" regime of a station fed at camera rate, where the
    worker idles between frames and each frame pays the runtime's wake-up (measured on an Intel Xeon with AMX,
    magnetic_tile: OpenVINO bf16 3.0 ms back to back, 5.8 ms after a 16 ms idle gap; ONNX Runtime 8.2 vs 9.4 ms).
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    turns = runs if block <= 1 else max(1, -(-runs // (block - 1)))
    for _ in range(turns):
        for name, fn in fns.items():
            if settle_s > 0:
                time.sleep(settle_s)
            if block > 1:
                fn()  # refill the caches this function uses
            for _ in range(max(1, block - 1)):
                if gap_s > 0:
                    time.sleep(gap_s)
                t0 = time.perf_counter()
                fn()
                samples[name].append((time.perf_counter() - t0) * 1000)
    return {k: summary(v) for k, v in samples.items()}


def machine() -> dict[str, Any]:
    """CPU model, cores, Python and library versions: printed with every figure."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    import onnxruntime

    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "system": platform.platform(),
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    return info


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def proc_status_kb(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (peak RSS) of a process in kB, from /proc (empty on systems without it)."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    except OSError:
        pass
    return out
