"""The benchmark of a package build (``trainer.package``): PyTorch eager and ONNX Runtime fp32 at batch 1, the
machine, the library versions and the INT8 figures, for ``manifest.benchmark``.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trainer.checklist import hardware_description
from trainer.export import open_session
from trainer.package_spec import FP32_FILE, PackageSpec
from trainer.quantize import QuantReport


def torch_eager_ms(net: nn.Module, x: torch.Tensor, threads: int = 2, runs: int = 20) -> float:
    """Median ms of the PyTorch eager network at batch 1: the baseline before any optimisation."""
    torch.set_num_threads(threads)
    net = net.eval()
    times = []
    with torch.no_grad():
        for k in range(runs + 5):
            t0 = time.perf_counter()
            net(x)
            if k >= 5:
                times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def ort_ms(path: Path, x: np.ndarray, threads: int = 2, runs: int = 20) -> float:
    """Median ms of an ONNX file in ONNX Runtime at batch 1 (after 3 warm-up runs)."""
    sess = open_session(path, threads)
    feed = {sess.get_inputs()[0].name: x}
    for _ in range(3):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def benchmark(
    net: nn.Module, stage: Path, x_held: np.ndarray, quant: QuantReport | None, threads: int, spec: PackageSpec
) -> dict[str, Any]:
    """``manifest.benchmark``: the machine, batch-1 times of PyTorch eager and ORT fp32, versions, INT8 figures."""
    x1 = x_held[:1]
    bench: dict[str, Any] = {
        "hardware": hardware_description(),
        "target_hardware": spec.target_hardware,
        "threads": threads,
        "batch": 1,
        "input": list(x1.shape),
        "torch_eager_ms": torch_eager_ms(net, torch.from_numpy(x1), threads),
        "fp32_ms": ort_ms(stage / FP32_FILE, x1, threads),
    }
    import onnxruntime

    bench["onnxruntime"] = onnxruntime.__version__
    bench["torch"] = torch.__version__
    if quant is not None:
        bench["int8"] = quant.to_dict()
        bench["int8_ms"] = quant.int8_ms
    return bench
