"""What the network's tensors mean: one verified package, one runner, per-frame outputs or per-frame errors.

``infer`` never lets one bad frame spoil a batch: a frame that cannot be preprocessed, or whose outputs
hold NaN/Inf, becomes a :class:`FrameError` in its slot while the other frames get their
:class:`ModelOutput`. Anomaly scores and maps are normalised by the package (0 = typical good part, 1.0 = threshold).
"""

from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from inspector.contracts.config import RuntimeSection
from inspector.contracts.errors import FrameError, InspectorError, ModelPackageError
from inspector.contracts.manifest import Manifest
from inspector.models.preprocess import Preprocessor
from inspector.runtime.base import Runner, create_runner, resolve_backend
from inspector.runtime.package import ModelPackage

log = logging.getLogger(__name__)

MODEL_HINT = "the model produced an invalid value for this frame; if it repeats, roll back the model package"


@dataclass
class ModelOutput:
    """One frame's model outputs, post-processed."""

    class_probs: dict[str, float] | None
    anomaly_raw: float | None
    anomaly_score: float | None  # manifest.anomaly.normalise(raw): 0 typical good part, 1.0 the threshold
    anomaly_map: np.ndarray | None  # (h, w) float32, normalised the same way
    stage_ms: dict[str, float] = field(default_factory=dict)
    classifier_decides: bool = True  # manifest.model.outputs.classifier_decides


def choose_model_file(manifest: Manifest, precision: str, backend: str = "onnxruntime") -> tuple[str, str]:
    """(relative ONNX path, resolved precision) for a requested precision on ``backend``.

    auto = the manifest's recommended precision when the gate kept it on this backend (``model.backend``; an
    INT8 graph kept on ONNX Runtime also serves TensorRT, as before), else fp32. bf16 runs the package's own
    bf16 graph (``model.bf16``: the scorer fitted on bf16 features) where it has one, else the fp32 graph."""
    files = manifest.model
    if precision == "auto":
        rec = files.recommended
        same = files.backend == backend or (rec == "int8" and files.backend == "onnxruntime" and backend == "tensorrt")
        precision = rec if same and (rec != "int8" or files.int8) else "fp32"
    if precision == "bf16" and backend != "openvino":
        raise ModelPackageError(
            f"runtime.precision bf16 runs on the openvino backend only, not {backend}",
            "set runtime.backend to openvino (or auto), or runtime.precision to auto or fp32",
        )
    if precision == "bf16" and files.bf16:
        return files.bf16, "bf16"
    if precision == "int8":
        if not files.int8:
            raise ModelPackageError(
                f"package {manifest.name} {manifest.version} has no INT8 model",
                "set runtime.precision to auto or fp32, or install a package with an INT8 file",
            )
        return files.int8, "int8"
    return files.fp32, precision  # fp32, or fp16 built from the fp32 graph by TensorRT


class InspectionModel:
    """A package loaded into a runner, ready to turn RGB frames into ModelOutputs."""

    def __init__(
        self,
        package: ModelPackage,
        runtime_cfg: RuntimeSection,
        cache_dir: str | Path | None = None,
        precision: str | None = None,
        max_batch: int = 8,
    ) -> None:
        self.package = package
        self.manifest = package.manifest
        self.version = package.version
        _check_outputs_usable(self.manifest)
        self.backend = resolve_backend(runtime_cfg, self.manifest.model.backend)
        relpath, self.precision = choose_model_file(self.manifest, precision or runtime_cfg.precision, self.backend)
        self.preprocessor = Preprocessor(self.manifest.preprocess)
        self.max_batch = max_batch
        self.runner: Runner = create_runner(
            package.file(relpath),
            runtime_cfg,
            cache_dir,
            precision=self.precision,
            max_batch=max_batch,
            input_hw=self.preprocessor.size,
            backend=self.backend,
            f32_until=self.manifest.model.f32_until,
        )
        log.info("model %s %s loaded from %s (%s)", self.manifest.name, self.version, relpath, self.precision)

    def warmup(self) -> float:
        """Run zero batches (1 and max_batch) through the runner; return ms."""
        sizes = sorted({1, self.max_batch})
        return self.runner.warmup(self.preprocessor.size, sizes)

    def close(self) -> None:
        self.runner.close()

    def describe(self) -> dict[str, object]:
        return {
            "name": self.manifest.name,
            "version": self.version,
            "sha256": self.package.package_sha256,
            "precision": self.precision,
            **self.runner.describe(),
        }

    def infer(self, images: list[np.ndarray]) -> list[ModelOutput | FrameError]:
        """Outputs per frame, in order; a bad frame gets a FrameError in its slot."""
        results: list[ModelOutput | FrameError] = [FrameError("not processed")] * len(images)
        ok_idx, tensors, pre_ms = self._preprocess(images, results)
        for start in range(0, len(ok_idx), self.max_batch):
            chunk = ok_idx[start : start + self.max_batch]
            batch = np.stack([tensors[i] for i in chunk])
            for i, res in zip(chunk, self._run_chunk(batch), strict=True):
                if isinstance(res, ModelOutput):
                    res.stage_ms["preprocess"] = pre_ms[i]
                results[i] = res
        return results

    def _preprocess(
        self, images: list[np.ndarray], results: list[ModelOutput | FrameError]
    ) -> tuple[list[int], dict[int, np.ndarray], dict[int, float]]:
        ok: list[int] = []
        tensors: dict[int, np.ndarray] = {}
        ms: dict[int, float] = {}
        for i, img in enumerate(images):
            t0 = time.perf_counter()
            try:
                tensors[i] = self.preprocessor(img)
            except FrameError as err:
                results[i] = err
                continue
            ms[i] = (time.perf_counter() - t0) * 1000.0
            ok.append(i)
        return ok, tensors, ms

    def _run_chunk(self, batch: np.ndarray) -> list[ModelOutput | FrameError]:
        t0 = time.perf_counter()
        try:
            outputs = self.runner.run(batch)
        except InspectorError:
            raise
        except Exception as err:  # a runtime failure: retry frame by frame so one frame cannot sink the batch
            if len(batch) == 1:
                return [FrameError(f"inference failed: {err}", MODEL_HINT)]
            log.warning("batch of %d failed (%s); retrying frame by frame", len(batch), err)
            return [r for k in range(len(batch)) for r in self._run_chunk(batch[k : k + 1])]
        infer_ms = (time.perf_counter() - t0) * 1000.0
        out: list[ModelOutput | FrameError] = []
        for k in range(len(batch)):
            t1 = time.perf_counter()
            res = self._postprocess(outputs, k)
            if isinstance(res, ModelOutput):
                res.stage_ms.update(
                    infer=infer_ms / len(batch),
                    infer_batch=infer_ms,
                    batch_size=float(len(batch)),
                    postprocess=(time.perf_counter() - t1) * 1000.0,
                )
            out.append(res)
        return out

    def _postprocess(self, outputs: dict[str, np.ndarray], k: int) -> ModelOutput | FrameError:
        names = self.manifest.model.outputs
        try:
            probs = _class_probs(self.manifest, outputs[names.class_probs][k]) if names.class_probs else None
            raw = _finite_scalar(outputs[names.anomaly_score][k], names.anomaly_score) if names.anomaly_score else None
            amap = self._anomaly_map(outputs[names.anomaly_map][k]) if names.anomaly_map else None
        except FrameError as err:
            return err
        spec = self.manifest.anomaly
        score = spec.normalise(raw) if (raw is not None and spec is not None) else None
        return ModelOutput(probs, raw, score, amap, classifier_decides=names.classifier_decides)

    def _anomaly_map(self, value: np.ndarray) -> np.ndarray:
        amap = np.asarray(value, np.float32)
        amap = amap.reshape(amap.shape[-2:]) if amap.ndim >= 2 else amap
        if amap.ndim != 2:
            raise FrameError(f"anomaly map has shape {value.shape}, expected [1,h,w]", MODEL_HINT)
        if not np.isfinite(amap).all():
            raise FrameError("anomaly map holds NaN or Inf for this frame", MODEL_HINT)
        assert self.manifest.anomaly is not None
        spec = self.manifest.anomaly
        return ((amap - np.float32(spec.origin)) / np.float32(spec.threshold - spec.origin)).astype(np.float32)


def _check_outputs_usable(manifest: Manifest) -> None:
    names = manifest.model.outputs
    if not (names.class_probs or names.anomaly_score or names.anomaly_map):
        raise ModelPackageError(f"package {manifest.name}: model.outputs names no output", "set model.outputs")
    if (names.anomaly_score or names.anomaly_map) and (manifest.anomaly is None or manifest.anomaly.threshold <= 0):
        raise ModelPackageError(
            f"package {manifest.name}: anomaly outputs need anomaly.threshold > 0 in the manifest",
            "set anomaly.threshold (raw score at the operating point) and rebuild the package",
        )


def _class_probs(manifest: Manifest, row: np.ndarray) -> dict[str, float]:
    vec = np.asarray(row, np.float64).reshape(-1)
    if not np.isfinite(vec).all():
        raise FrameError("class probabilities hold NaN or Inf for this frame", MODEL_HINT)
    names = manifest.class_names or [f"class_{i}" for i in range(vec.size)]
    if len(names) != vec.size:
        raise FrameError(f"model gave {vec.size} class probabilities for {len(names)} class names", MODEL_HINT)
    return {n: float(p) for n, p in zip(names, vec, strict=True)}


def _finite_scalar(value: np.ndarray, name: str) -> float:
    arr = np.asarray(value, np.float64).reshape(-1)
    if arr.size != 1:
        raise FrameError(f"output {name} has {arr.size} values per frame, expected 1", MODEL_HINT)
    if not np.isfinite(arr[0]):
        raise FrameError(f"output {name} is NaN or Inf for this frame ({arr[0]})", MODEL_HINT)
    return float(arr[0])


def heatmap_png(amap: np.ndarray, size: int = 64) -> str:
    """A small grey PNG (base64) of a normalised anomaly map: 0 -> 0, threshold (1.0) -> 128, >= 2 -> 255."""
    small = cv2.resize(np.asarray(amap, np.float32), (size, size), interpolation=cv2.INTER_AREA)
    grey = np.clip(np.nan_to_num(small, nan=0.0) * 127.5, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".png", grey, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise ValueError("OpenCV could not encode the heatmap")
    return base64.b64encode(buf.tobytes()).decode("ascii")
