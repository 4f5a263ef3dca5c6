"""ONNX Runtime backend: TensorRT, CUDA or CPU execution providers, in the order the config lists them.

A provider the config names but this machine lacks is skipped only when a later one is listed
(``[cuda, cpu]`` means "CUDA if possible, else CPU"); when none of them is available the runner refuses
with :class:`BackendUnavailable` and an install hint. The provider actually active is logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inspector.contracts.errors import BackendUnavailable

log = logging.getLogger(__name__)

ORT_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
INSTALL_HINTS = {
    "tensorrt": "pip install onnxruntime-gpu (CUDA 12 build) and TensorRT 10 libraries on a machine with an NVIDIA GPU, "
    "or list 'cuda'/'cpu' after 'tensorrt' in runtime.providers to allow a fallback",
    "cuda": "pip uninstall onnxruntime && pip install onnxruntime-gpu on a machine with an NVIDIA GPU and CUDA 12/cuDNN 9, "
    "or add 'cpu' after 'cuda' in runtime.providers to allow a fallback",
    "cpu": "reinstall onnxruntime: pip install --force-reinstall onnxruntime",
}


def provider_options(name: str, precision: str, cache_dir: Path | None) -> dict[str, Any]:
    """ONNX Runtime options for one provider short name ('tensorrt', 'cuda', 'cpu')."""
    if name == "tensorrt":
        opts: dict[str, Any] = {
            "trt_fp16_enable": precision in ("fp16", "int8"),
            "trt_int8_enable": precision == "int8",  # QDQ graphs: the scales come from the graph, no table
            "trt_int8_use_native_calibration_table": False,
        }
        if cache_dir is not None:
            trt_dir = Path(cache_dir) / "ort-trt"
            trt_dir.mkdir(parents=True, exist_ok=True)
            opts.update(
                trt_engine_cache_enable=True,
                trt_engine_cache_path=str(trt_dir),
                trt_timing_cache_enable=True,
                trt_timing_cache_path=str(trt_dir),
            )
        return opts
    if name == "cuda":
        return {"cudnn_conv_algo_search": "HEURISTIC"}
    return {}


def select_providers(requested: Sequence[str], available: Sequence[str]) -> list[str]:
    """Short names to try, in order: unavailable ones dropped; refuse when nothing requested is available.

    Everything from the first available provider on is kept (ONNX Runtime assigns nodes in that order).
    """
    for i, name in enumerate(requested):
        if ORT_NAMES[name] in available:
            for skipped in requested[:i]:
                log.warning("ONNX Runtime provider %r is not available here; falling back to %r", skipped, name)
            return [n for n in requested[i:] if ORT_NAMES[n] in available]
    first = requested[0]
    raise BackendUnavailable(
        f"ONNX Runtime execution provider(s) {list(requested)} not available (this onnxruntime has {list(available)})",
        INSTALL_HINTS[first],
    )


class OnnxRunner:
    """Runs one ONNX file in an onnxruntime InferenceSession."""

    def __init__(
        self,
        onnx_path: Path,
        providers: Sequence[str] = ("cpu",),
        threads: int = 2,
        precision: str = "fp32",
        cache_dir: Path | None = None,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(onnx_path)
        self.precision = precision
        self.threads = threads
        chosen = select_providers(list(providers), ort.get_available_providers())
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        ort_providers = [(ORT_NAMES[n], provider_options(n, precision, cache_dir)) for n in chosen]
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=ort_providers)
        except Exception as err:  # onnxruntime raises its own (non-exported) exception types
            raise BackendUnavailable(
                f"ONNX Runtime could not open {self.path} with providers {chosen}: {err}",
                INSTALL_HINTS[chosen[0]],
            ) from None
        self._check_active(chosen)
        self._input = self.session.get_inputs()[0].name
        self._outputs = [o.name for o in self.session.get_outputs()]
        log.info(
            "ONNX Runtime %s: %s on %s (%s, %d threads)",
            ort.__version__,
            self.path.name,
            self.active_providers[0],
            precision,
            threads,
        )

    @property
    def active_providers(self) -> list[str]:
        return list(self.session.get_providers())

    def _check_active(self, chosen: list[str]) -> None:
        """ONNX Runtime silently drops a provider whose libraries fail to load: refuse unless allowed."""
        active = self.active_providers
        wanted = [ORT_NAMES[n] for n in chosen]
        if any(p in active for p in wanted if p != "CPUExecutionProvider"):
            return
        if "cpu" in chosen:
            return
        raise BackendUnavailable(
            f"ONNX Runtime could not start {wanted} (active: {active}); its CUDA/TensorRT libraries did not load",
            INSTALL_HINTS[chosen[0]],
        )

    @property
    def input_name(self) -> str:
        return self._input

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if batch.ndim != 4 or batch.dtype != np.float32:
            raise ValueError(f"runner input must be float32 [B,3,H,W], got {batch.dtype} {batch.shape}")
        values = self.session.run(self._outputs, {self._input: np.ascontiguousarray(batch)})
        return {name: np.asarray(v) for name, v in zip(self._outputs, values, strict=True)}

    def warmup(self, input_hw: tuple[int, int] | None = None, batch_sizes: Sequence[int] = (1,)) -> float:
        hw = input_hw or self._static_hw()
        start = time.perf_counter()
        for b in batch_sizes:
            self.run(np.zeros((b, 3, *hw), np.float32))
        return (time.perf_counter() - start) * 1000.0

    def _static_hw(self) -> tuple[int, int]:
        shape = self.session.get_inputs()[0].shape
        if len(shape) != 4 or not all(isinstance(d, int) for d in shape[2:]):
            raise ValueError(f"{self.path.name}: input {shape} has dynamic H/W; pass input_hw to warmup()")
        return int(shape[2]), int(shape[3])

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]

    def describe(self) -> dict[str, object]:
        import onnxruntime as ort

        return {
            "backend": "onnxruntime",
            "version": ort.__version__,
            "file": self.path.name,
            "providers": self.active_providers if self.session is not None else [],
            "precision": self.precision,
            "threads": self.threads,
        }
