"""Native TensorRT backend (TensorRT 10 Python API, cuda-python for memory and streams).

Optional: ``tensorrt`` and ``cuda-python`` are imported only when this backend is created; without them,
or without an NVIDIA device, :class:`BackendUnavailable` says what to install. An engine is built from the
package's ONNX file (fp32, fp16, or int8 from a QDQ graph or an entropy calibrator over calibration
arrays) with one optimisation profile over the dynamic batch axis, and cached in the cache dir under a key
of sha256(onnx bytes) + TensorRT version + GPU name + precision + profile: a cached engine is reused only
by the same graph, TensorRT and GPU. A runner owns one execution context and one stream: use one runner
per worker thread.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inspector.contracts.errors import BackendUnavailable, ModelPackageError

log = logging.getLogger(__name__)

TRT_INSTALL_HINT = "pip install 'inspection-station[tensorrt]' on a machine with an NVIDIA GPU"
CUDA_PYTHON_HINT = "pip install 'cuda-python>=12' (part of inspection-station[tensorrt])"
WORKSPACE_BYTES = 1 << 30
ENGINE_SUFFIX = ".engine"


def engine_cache_key(
    onnx_sha256: str,
    trt_version: str,
    gpu_name: str,
    precision: str,
    profile: Sequence[Sequence[int]] | None = None,
    extra: str = "",
) -> str:
    """sha256 hex naming a built engine: same graph, TensorRT, GPU, precision and profile -> same key."""
    fields = {
        "onnx": onnx_sha256.lower(),
        "tensorrt": trt_version,
        "gpu": gpu_name.strip(),
        "precision": precision,
        "profile": [list(map(int, s)) for s in profile] if profile else None,
        "extra": extra,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode("utf-8")).hexdigest()


def engine_cache_path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / f"{key}{ENGINE_SUFFIX}"


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailable("TensorRT is not installed", TRT_INSTALL_HINT) from None
    return trt


def import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            raise BackendUnavailable(
                "cuda-python is not installed (needed by the TensorRT backend)", CUDA_PYTHON_HINT
            ) from None
    return cudart


def _check(cudart: Any, result: Any) -> Any:
    """Unwrap a cuda-python call result (err, *values), raising on an error code."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        raise RuntimeError(f"CUDA error {err}")
    return values[0] if len(values) == 1 else tuple(values)


def gpu_name(cudart: Any, device: int = 0) -> str:
    """Name of the CUDA device, or BackendUnavailable when there is none."""
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or count <= device:
        raise BackendUnavailable(
            f"no NVIDIA GPU found (cudaGetDeviceCount: {err}, {count})",
            "check the NVIDIA driver (nvidia-smi), or set runtime.backend to onnxruntime",
        )
    props = _check(cudart, cudart.cudaGetDeviceProperties(device))
    name = props.name
    return (name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)).rstrip("\x00").strip()


def _onnx_io(onnx_path: Path) -> tuple[str, tuple[int, int] | None, bool]:
    """(input name, static (H, W) or None, whether the graph holds Q/DQ nodes)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    inp = next(i for i in graph.input if i.name not in inits)
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    hw = (int(dims[2]), int(dims[3])) if len(dims) == 4 and dims[2] and dims[3] else None
    qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node)
    return inp.name, hw, qdq


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _make_calibrator(trt: Any, cudart: Any, data: np.ndarray, batch_size: int, cache_file: Path) -> Any:
    """An IInt8EntropyCalibrator2 feeding ``data`` [N,3,H,W] float32 in batches of ``batch_size``."""

    class ArrayCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.data = np.ascontiguousarray(data, dtype=np.float32)
            self.batch_size = batch_size
            self.index = 0
            self.device = _check(cudart, cudart.cudaMalloc(self.data[:batch_size].nbytes))

        def get_batch_size(self) -> int:
            return self.batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.index + self.batch_size > len(self.data):
                return None
            chunk = np.ascontiguousarray(self.data[self.index : self.index + self.batch_size])
            _check(
                cudart,
                cudart.cudaMemcpy(
                    self.device, chunk.ctypes.data, chunk.nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
                ),
            )
            self.index += self.batch_size
            return [int(self.device)]

        def read_calibration_cache(self) -> bytes | None:
            return cache_file.read_bytes() if cache_file.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            _write_atomic(cache_file, bytes(cache))

        def free(self) -> None:
            cudart.cudaFree(self.device)

    return ArrayCalibrator()


class TensorRTRunner:
    """Runs a TensorRT engine built from (or cached for) one ONNX file."""

    def __init__(
        self,
        onnx_path: Path,
        precision: str = "fp16",
        cache_dir: Path | None = None,
        max_batch: int = 8,
        calibration: np.ndarray | None = None,
        input_hw: tuple[int, int] | None = None,
    ) -> None:
        self.trt = import_tensorrt()
        self.cudart = import_cudart()
        self.gpu = gpu_name(self.cudart)
        self.path = Path(onnx_path)
        self.precision = precision
        self.max_batch = max_batch
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.path.parent / ".engines"
        self._input, static_hw, self._qdq = _onnx_io(self.path)
        hw = input_hw or static_hw
        if hw is None:
            raise ModelPackageError(f"{self.path.name}: input H/W are dynamic", "export with a fixed H and W")
        self.hw = hw
        self.logger = self.trt.Logger(self.trt.Logger.WARNING)
        plan = self._load_or_build(calibration)
        self.engine = self.trt.Runtime(self.logger).deserialize_cuda_engine(plan)
        if self.engine is None:
            raise BackendUnavailable(
                f"TensorRT could not deserialize the engine for {self.path.name}",
                f"delete the cache folder {self.cache_dir} to rebuild it",
            )
        self.context = self.engine.create_execution_context()
        self.stream = _check(self.cudart, self.cudart.cudaStreamCreate())
        self._outputs = self._output_tensor_names()
        self._device: dict[str, int] = {}
        self._allocate()
        log.info(
            "TensorRT %s engine for %s on %s (%s, batch 1..%d)",
            self.trt.__version__,
            self.path.name,
            self.gpu,
            precision,
            max_batch,
        )

    # ---- engine build and cache -------------------------------------------------------------------
    def _profile(self) -> list[tuple[int, int, int, int]]:
        h, w = self.hw
        opt = max(1, min(self.max_batch, 4))
        return [(1, 3, h, w), (opt, 3, h, w), (self.max_batch, 3, h, w)]

    def cache_key(self, calibration: np.ndarray | None = None) -> str:
        onnx_sha = hashlib.sha256(self.path.read_bytes()).hexdigest()
        extra = ""
        if self.precision == "int8" and not self._qdq and calibration is not None:
            extra = "calib:" + hashlib.sha256(np.ascontiguousarray(calibration, np.float32).tobytes()).hexdigest()
        return engine_cache_key(onnx_sha, self.trt.__version__, self.gpu, self.precision, self._profile(), extra)

    def _load_or_build(self, calibration: np.ndarray | None) -> bytes:
        key = self.cache_key(calibration)
        path = engine_cache_path(self.cache_dir, key)
        if path.is_file():
            log.info("TensorRT engine cache hit: %s", path)
            return path.read_bytes()
        start = time.perf_counter()
        plan = self._build(calibration, path.with_suffix(".calib"))
        _write_atomic(path, plan)
        meta = {
            "onnx": self.path.name,
            "tensorrt": self.trt.__version__,
            "gpu": self.gpu,
            "precision": self.precision,
            "profile": self._profile(),
            "build_s": round(time.perf_counter() - start, 1),
        }
        _write_atomic(path.with_suffix(".json"), json.dumps(meta, indent=2).encode("utf-8"))
        log.info("TensorRT engine built in %.1f s and cached at %s", meta["build_s"], path)
        return plan

    def _build(self, calibration: np.ndarray | None, calib_cache: Path) -> bytes:
        trt = self.trt
        builder = trt.Builder(self.logger)
        network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(self.path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ModelPackageError(
                f"TensorRT could not parse {self.path.name}: {errors}",
                "check the export (opset, dynamic batch axis) or use runtime.backend onnxruntime",
            )
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        profile = builder.create_optimization_profile()
        profile.set_shape(self._input, *self._profile())
        config.add_optimization_profile(profile)
        calibrator = self._configure_precision(config, profile, calibration, calib_cache)
        try:
            plan = builder.build_serialized_network(network, config)
        finally:
            if calibrator is not None:
                calibrator.free()
        if plan is None:
            raise BackendUnavailable(
                f"TensorRT failed to build an engine for {self.path.name} ({self.precision})",
                "see the TensorRT log above; try precision fp32 or fp16",
            )
        return bytes(plan)

    def _configure_precision(self, config: Any, profile: Any, calibration: np.ndarray | None, cache: Path) -> Any:
        trt = self.trt
        if self.precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        if self.precision != "int8":
            return None
        config.set_flag(trt.BuilderFlag.INT8)
        if self._qdq:
            return None  # explicit quantisation: the scales are in the graph
        if calibration is None or len(calibration) == 0:
            raise ModelPackageError(
                f"{self.path.name}: INT8 needs a QDQ graph or calibration arrays",
                "use the package's int8 (QDQ) file, pass calibration frames, or choose precision fp16",
            )
        calibrator = _make_calibrator(trt, self.cudart, calibration, min(self.max_batch, len(calibration)), cache)
        config.int8_calibrator = calibrator
        config.set_calibration_profile(profile)
        return calibrator

    # ---- execution --------------------------------------------------------------------------------
    def _output_tensor_names(self) -> list[str]:
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        return [n for n in names if self.engine.get_tensor_mode(n) == self.trt.TensorIOMode.OUTPUT]

    def _allocate(self) -> None:
        """Device buffers for the largest batch, reused for every run."""
        self.context.set_input_shape(self._input, (self.max_batch, 3, *self.hw))
        for name in [self._input, *self._outputs]:
            shape = tuple(self.context.get_tensor_shape(name))
            itemsize = np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name))).itemsize
            self._device[name] = _check(self.cudart, self.cudart.cudaMalloc(int(np.prod(shape)) * itemsize))
            self.context.set_tensor_address(name, int(self._device[name]))

    @property
    def input_name(self) -> str:
        return self._input

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if batch.ndim != 4 or batch.dtype != np.float32 or tuple(batch.shape[2:]) != self.hw:
            raise ValueError(
                f"runner input must be float32 [B,3,{self.hw[0]},{self.hw[1]}], got {batch.dtype} {batch.shape}"
            )
        parts = [self._run_chunk(batch[i : i + self.max_batch]) for i in range(0, len(batch), self.max_batch)]
        if len(parts) == 1:
            return parts[0]
        return {n: np.concatenate([p[n] for p in parts]) for n in self._outputs}

    def _run_chunk(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        cudart, stream = self.cudart, self.stream
        host_in = np.ascontiguousarray(batch, dtype=np.float32)
        self.context.set_input_shape(self._input, host_in.shape)
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(
            cudart, cudart.cudaMemcpyAsync(self._device[self._input], host_in.ctypes.data, host_in.nbytes, h2d, stream)
        )
        if not self.context.execute_async_v3(int(stream)):
            raise RuntimeError(f"TensorRT execution failed for a batch of {len(batch)}")
        out: dict[str, np.ndarray] = {}
        for name in self._outputs:
            dtype = self.trt.nptype(self.engine.get_tensor_dtype(name))
            host = np.empty(tuple(self.context.get_tensor_shape(name)), dtype=dtype)
            _check(cudart, cudart.cudaMemcpyAsync(host.ctypes.data, self._device[name], host.nbytes, d2h, stream))
            out[name] = host
        _check(cudart, cudart.cudaStreamSynchronize(stream))
        return {n: a.astype(np.float32, copy=False) for n, a in out.items()}

    def warmup(self, input_hw: tuple[int, int] | None = None, batch_sizes: Sequence[int] = (1,)) -> float:
        start = time.perf_counter()
        for b in batch_sizes:
            self.run(np.zeros((b, 3, *(input_hw or self.hw)), np.float32))
        return (time.perf_counter() - start) * 1000.0

    def close(self) -> None:
        for ptr in self._device.values():
            self.cudart.cudaFree(ptr)
        self._device.clear()
        if getattr(self, "stream", None) is not None:
            self.cudart.cudaStreamDestroy(self.stream)
            self.stream = None
        self.context = None
        self.engine = None

    def describe(self) -> dict[str, object]:
        return {
            "backend": "tensorrt",
            "version": self.trt.__version__,
            "gpu": self.gpu,
            "file": self.path.name,
            "precision": self.precision,
            "max_batch": self.max_batch,
            "qdq": self._qdq,
        }
