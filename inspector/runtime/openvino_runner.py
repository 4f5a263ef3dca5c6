"""OpenVINO backend on the CPU: the package's ONNX graph compiled by OpenVINO, fp32, bf16 or INT8.

- ``fp32``: the fp32 graph with ``INFERENCE_PRECISION_HINT=f32`` (OpenVINO would otherwise pick bf16 by itself
  on CPUs that have it, and the station must run what the gate measured);
- ``bf16``: the same fp32 graph with ``INFERENCE_PRECISION_HINT=bf16`` (AVX512-BF16 / AMX-BF16); refused on a
  CPU whose OpenVINO capabilities lack BF16;
- ``int8``: the package's QDQ INT8 graph (OpenVINO runs the quantised convolutions in INT8, the rest in f32).

``PERFORMANCE_HINT=LATENCY``, one stream, ``threads`` inference threads. Batch 1, the station's latency path,
runs a copy of the graph reshaped to a static batch of 1 (OpenVINO's CPU kernels for a static shape are faster:
magnetic_tile bf16 4.7 vs 5.7 ms, f32 7.2 vs 8.7 ms, measured in turns on a 2-core Xeon with AMX); micro-batches
of 2 or more run the graph with its dynamic batch axis.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inspector.contracts.errors import BackendUnavailable

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "pip install openvino (the 'openvino' extra: pip install -e '.[openvino]'), or set runtime.backend onnxruntime"
)
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def cpu_capabilities() -> list[str]:
    """OpenVINO's OPTIMIZATION_CAPABILITIES of the CPU device (e.g. FP32, BF16, INT8); [] without OpenVINO."""
    try:
        import openvino as ov

        return [str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
    except Exception:  # noqa: BLE001 - not installed, or no CPU plugin
        return []


def cpu_description() -> dict[str, Any]:
    """The CPU a precision was measured on: model name and the instruction-set flags that decide bf16/INT8 speed."""
    name, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name == "unknown":
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile", "avx_vnni")
    return {"model": name, "flags": [f for f in wanted if f in flags], "openvino_capabilities": cpu_capabilities()}


class _Stage:
    """One compiled part of the graph: dynamic batch for micro-batches, a static batch-1 copy for batch 1."""

    def __init__(self, core: Any, path: Path, config: dict[str, Any]) -> None:
        model = core.read_model(str(path))
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.single = _compile_batch_one(core, model, config)
        self.single_request = self.single.create_infer_request() if self.single is not None else None

    def infer(self, batch: np.ndarray) -> tuple[Any, Any]:
        """(OpenVINO result, compiled model it came from); the result's tensors are the request's own."""
        request, compiled = self.request, self.compiled
        if len(batch) == 1 and self.single_request is not None:
            request, compiled = self.single_request, self.single
        return request.infer({0: np.ascontiguousarray(batch)}, share_inputs=True, share_outputs=True), compiled


def _compile_batch_one(core: Any, model: Any, config: dict[str, Any]) -> Any:
    """The graph compiled for a static batch of 1; None when its batch axis is already static."""
    shape = model.inputs[0].get_partial_shape()
    if not shape[0].is_dynamic or any(d.is_dynamic for d in list(shape)[1:]):
        return None
    single = model.clone()
    single.reshape({single.inputs[0]: [1, *(d.get_length() for d in list(shape)[1:])]})
    return core.compile_model(single, "CPU", config)


class OpenVinoRunner:
    """Runs one ONNX file compiled by OpenVINO for the CPU.

    ``f32_until`` (bf16 only): the graph up to this tensor runs in f32, the rest in bf16
    (``inspector.runtime.graph_split``: the package's precision gate measured it and recorded the cut)."""

    def __init__(
        self, onnx_path: Path, threads: int = 2, precision: str = "fp32", f32_until: str | None = None
    ) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise BackendUnavailable(
                "runtime.backend openvino: the openvino package is not installed", INSTALL_HINT
            ) from None
        if precision not in PRECISION_HINTS:
            raise BackendUnavailable(
                f"runtime.backend openvino runs fp32, bf16 or int8, not {precision!r}",
                "set runtime.precision to auto, fp32, bf16 or int8 (fp16 is TensorRT's)",
            )
        self.path = Path(onnx_path)
        self.threads = threads
        self.precision = precision
        self.f32_until = f32_until if precision == "bf16" else None
        core = ov.Core()
        if precision == "bf16" and "BF16" not in cpu_capabilities():
            raise BackendUnavailable(
                f"this CPU ({cpu_description()['model']}) has no bf16 support in OpenVINO",
                "set runtime.precision to auto or fp32 (bf16 needs AVX512-BF16 or AMX)",
            )
        try:
            self._stages = self._compile(core)
        except Exception as err:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses of its own
            raise BackendUnavailable(
                f"OpenVINO could not compile {self.path}: {str(err).splitlines()[0][:300]}",
                "check the export (opset 17, static H/W), or set runtime.backend onnxruntime",
            ) from None
        self.compiled = self._stages[-1].compiled
        self._input = self._stages[0].compiled.inputs[0].get_any_name()
        # an output tensor can carry several names in OpenVINO; name each by the ONNX graph's own output name
        wanted = _onnx_output_names(self.path)
        self._outputs = [
            next((n for n in sorted(o.get_names()) if n in wanted), o.get_any_name()) for o in self.compiled.outputs
        ]
        self._version = ov.__version__
        split = f", f32 up to {self.f32_until}" if self.f32_until else ""
        log.info("OpenVINO %s: %s on CPU (%s%s, %d threads)", self._version, self.path.name, precision, split, threads)

    def _compile(self, core: Any) -> list[_Stage]:
        def config(precision: str) -> dict[str, Any]:
            return {
                "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision],
                "PERFORMANCE_HINT": "LATENCY",
                "NUM_STREAMS": 1,
                "INFERENCE_NUM_THREADS": int(self.threads),
            }

        if not self.f32_until:
            return [_Stage(core, self.path, config(self.precision))]
        from inspector.runtime.graph_split import split_at

        with tempfile.TemporaryDirectory(prefix="ov_split_") as tmp:
            head, tail = split_at(self.path, self.f32_until, tmp)
            return [_Stage(core, head, config("fp32")), _Stage(core, tail, config("bf16"))]

    @property
    def input_name(self) -> str:
        return self._input

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if batch.ndim != 4 or batch.dtype != np.float32:
            raise ValueError(f"runner input must be float32 [B,3,H,W], got {batch.dtype} {batch.shape}")
        x = batch
        for stage in self._stages[:-1]:
            result, compiled = stage.infer(x)
            x = np.asarray(result[compiled.outputs[0]], dtype=np.float32)
        result, compiled = self._stages[-1].infer(x)
        return {  # copied: the shared output tensors are overwritten by the request's next call
            name: np.array(result[compiled.outputs[i]], dtype=np.float32, copy=True)
            for i, name in enumerate(self._outputs)
        }

    def warmup(self, input_hw: tuple[int, int] | None = None, batch_sizes: Sequence[int] = (1,)) -> float:
        hw = input_hw or self._static_hw()
        start = time.perf_counter()
        for b in batch_sizes:
            self.run(np.zeros((b, 3, *hw), np.float32))
        return (time.perf_counter() - start) * 1000.0

    def _static_hw(self) -> tuple[int, int]:
        shape = self._stages[0].compiled.inputs[0].get_partial_shape()
        if len(shape) != 4 or shape[2].is_dynamic or shape[3].is_dynamic:
            raise ValueError(f"{self.path.name}: input {shape} has dynamic H/W; pass input_hw to warmup()")
        return int(shape[2].get_length()), int(shape[3].get_length())

    def close(self) -> None:
        self._stages = []
        self.compiled = None

    def describe(self) -> dict[str, object]:
        executed = None
        if self.compiled is not None:
            try:
                executed = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
            except Exception:  # noqa: BLE001 - property not exposed by this version
                executed = None
        return {
            "backend": "openvino",
            "version": self._version,
            "file": self.path.name,
            "device": "CPU",
            "precision": self.precision,
            "f32_until": self.f32_until,
            "inference_precision": executed,
            "threads": self.threads,
        }


def _onnx_output_names(path: Path) -> set[str]:
    """The graph output names of an ONNX file (its weights are not read)."""
    if path.suffix != ".onnx":
        return set()
    import onnx

    return {o.name for o in onnx.load(str(path), load_external_data=False).graph.output}
