"""The one small protocol every inference backend implements, and the factory that picks one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from inspector.contracts.config import RuntimeSection

Precision = str  # "fp32" | "fp16" | "int8": the resolved precision ("auto" is resolved by the caller)


@runtime_checkable
class Runner(Protocol):
    """Runs one ONNX graph: a float32 batch [B,3,H,W] in, named float32 arrays out."""

    @property
    def input_name(self) -> str: ...

    @property
    def output_names(self) -> list[str]: ...

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run a batch; every output's first axis is B."""
        ...

    def warmup(self, input_hw: tuple[int, int] | None = None, batch_sizes: Sequence[int] = (1,)) -> float:
        """Run zero batches of each size once (builds lazy kernels/engines); return the time taken in ms."""
        ...

    def close(self) -> None: ...

    def describe(self) -> dict[str, object]:
        """Backend, active providers or device, precision, versions: for logs and the maintenance view."""
        ...


def resolve_precision(runtime_cfg: RuntimeSection, precision: str | None = None) -> Precision:
    """The precision to build for; ``auto`` without a package to decide means fp32."""
    chosen = precision or runtime_cfg.precision
    return "fp32" if chosen == "auto" else chosen


def create_runner(
    onnx_path: str | Path,
    runtime_cfg: RuntimeSection,
    cache_dir: str | Path | None = None,
    precision: str | None = None,
    max_batch: int = 8,
    input_hw: tuple[int, int] | None = None,
) -> Runner:
    """Create the runner named by ``runtime_cfg.backend`` for one ONNX file.

    ``precision`` overrides ``runtime_cfg.precision`` (the caller resolves ``auto`` from the package);
    ``cache_dir`` holds built TensorRT engines (default: ``runtime_cfg.engine_cache_dir``);
    ``max_batch`` and ``input_hw`` (needed when the graph's H/W are dynamic) shape the native TensorRT
    engine's optimisation profile; ONNX Runtime ignores them.
    """
    prec = resolve_precision(runtime_cfg, precision)
    cache = Path(cache_dir) if cache_dir is not None else runtime_cfg.engine_cache_dir
    if runtime_cfg.backend == "tensorrt":
        from inspector.runtime.tensorrt_runner import TensorRTRunner

        return TensorRTRunner(Path(onnx_path), precision=prec, cache_dir=cache, max_batch=max_batch, input_hw=input_hw)
    from inspector.runtime.onnx_runner import OnnxRunner

    return OnnxRunner(
        Path(onnx_path), providers=list(runtime_cfg.providers), threads=runtime_cfg.threads, precision=prec, cache_dir=cache
    )
