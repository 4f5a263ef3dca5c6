"""The one small protocol every inference backend implements, and the factory that picks one."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from inspector.contracts.config import RuntimeSection

log = logging.getLogger(__name__)

Precision = str  # "fp32" | "fp16" | "bf16" | "int8": the resolved precision ("auto" is resolved by the caller)


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


def resolve_backend(runtime_cfg: RuntimeSection, recorded: str | None = None) -> str:
    """The backend to run: the configured one, or for ``auto`` the package's recorded ``model.backend``
    (OpenVINO only when it is installed here; a TensorRT package needs ``backend: tensorrt`` set) else onnxruntime."""
    if runtime_cfg.backend != "auto":
        return runtime_cfg.backend
    if recorded == "openvino":
        from inspector.runtime.openvino_runner import openvino_available

        if openvino_available():
            return "openvino"
        log.warning(
            "the package's precision was kept on OpenVINO, which is not installed: running ONNX Runtime fp32 "
            "(pip install openvino)"
        )
    return "onnxruntime"


def create_runner(
    onnx_path: str | Path,
    runtime_cfg: RuntimeSection,
    cache_dir: str | Path | None = None,
    precision: str | None = None,
    max_batch: int = 8,
    input_hw: tuple[int, int] | None = None,
    backend: str | None = None,
    f32_until: str | None = None,
) -> Runner:
    """Create the runner named by ``runtime_cfg.backend`` for one ONNX file.

    ``precision`` overrides ``runtime_cfg.precision`` (the caller resolves ``auto`` from the package);
    ``cache_dir`` holds built TensorRT engines (default: ``runtime_cfg.engine_cache_dir``);
    ``backend`` overrides ``runtime_cfg.backend`` (the caller resolves ``auto`` with :func:`resolve_backend`);
    ``max_batch`` and ``input_hw`` (needed when the graph's H/W are dynamic) shape the native TensorRT
    engine's optimisation profile; ONNX Runtime ignores them. ``f32_until``: OpenVINO bf16 runs the graph up to
    this tensor in f32 (the package's ``model.f32_until``, measured by its precision gate).
    """
    prec = resolve_precision(runtime_cfg, precision)
    cache = Path(cache_dir) if cache_dir is not None else runtime_cfg.engine_cache_dir
    chosen = backend or resolve_backend(runtime_cfg)
    if chosen == "openvino":
        from inspector.runtime.openvino_runner import OpenVinoRunner

        return OpenVinoRunner(Path(onnx_path), threads=runtime_cfg.threads, precision=prec, f32_until=f32_until)
    if chosen == "tensorrt":
        from inspector.runtime.tensorrt_runner import TensorRTRunner

        return TensorRTRunner(Path(onnx_path), precision=prec, cache_dir=cache, max_batch=max_batch, input_hw=input_hw)
    from inspector.runtime.onnx_runner import OnnxRunner

    return OnnxRunner(
        Path(onnx_path),
        providers=list(runtime_cfg.providers),
        threads=runtime_cfg.threads,
        precision=prec,
        cache_dir=cache,
    )
