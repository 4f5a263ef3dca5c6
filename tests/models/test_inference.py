from __future__ import annotations

import base64
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.contracts.config import RuntimeSection
from inspector.contracts.errors import FrameError, ModelPackageError
from inspector.models.inference import InspectionModel, ModelOutput, choose_model_file, heatmap_png
from inspector.runtime.package import load_package
from tests.runtime.tiny_models import CLASSES, SIZE, THRESHOLD, tiny_manifest, write_tiny_package

CPU = RuntimeSection(providers=["cpu"], threads=1)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> InspectionModel:
    pkg = write_tiny_package(tmp_path_factory.mktemp("pkg") / "tiny")
    m = InspectionModel(load_package(pkg), CPU, max_batch=4)
    assert m.warmup() >= 0
    return m


def _frame(value: int, hw: tuple[int, int] = SIZE) -> np.ndarray:
    return np.full((*hw, 3), value, np.uint8)


@pytest.mark.parametrize("n", [1, 4, 6])
def test_batches(model: InspectionModel, n: int) -> None:
    outs = model.infer([_frame(255)] * n)
    assert len(outs) == n and all(isinstance(o, ModelOutput) for o in outs)
    out = outs[0]
    assert isinstance(out, ModelOutput)
    assert set(out.class_probs or {}) == set(CLASSES)
    assert abs(sum((out.class_probs or {}).values()) - 1) < 1e-5
    assert out.anomaly_raw == pytest.approx(1.0, abs=1e-5)  # |normalised white| = 1
    assert out.anomaly_score == pytest.approx(1.0 / THRESHOLD, abs=1e-5)
    assert out.anomaly_map is not None and out.anomaly_map.shape == SIZE
    assert np.allclose(out.anomaly_map, 1.0 / THRESHOLD, atol=1e-5)
    assert {"preprocess", "infer", "postprocess"} <= set(out.stage_ms)
    assert model.version == "1.0.0" and model.manifest.name == "tiny"


def test_other_input_sizes_are_resized(model: InspectionModel) -> None:
    outs = model.infer([_frame(255, (40, 30)), np.full((9, 90), 255, np.uint8)])
    assert all(isinstance(o, ModelOutput) for o in outs)


def test_bad_frame_is_isolated(model: InspectionModel) -> None:
    outs = model.infer([_frame(255), np.zeros((4, 4, 3), np.float64), _frame(0)])  # type: ignore[list-item]
    assert isinstance(outs[0], ModelOutput) and isinstance(outs[2], ModelOutput)
    assert isinstance(outs[1], FrameError) and "uint8" in outs[1].message


def test_nan_output_fails_only_that_frame(tmp_path: Path) -> None:
    pkg = write_tiny_package(tmp_path / "nan", nan_for_dark=True)
    m = InspectionModel(load_package(pkg), CPU)
    outs = m.infer([_frame(255), _frame(0), _frame(200)])
    assert isinstance(outs[0], ModelOutput) and isinstance(outs[2], ModelOutput)
    assert isinstance(outs[1], FrameError) and "NaN" in outs[1].message


def test_precision_choice() -> None:
    manifest = tiny_manifest()
    assert choose_model_file(manifest, "auto") == ("model.onnx", "fp32")
    assert choose_model_file(manifest, "fp16") == ("model.onnx", "fp16")
    with pytest.raises(ModelPackageError, match="no INT8 model"):
        choose_model_file(manifest, "int8")
    q = tiny_manifest(model={"fp32": "model.onnx", "int8": "model.int8.onnx", "recommended": "int8"})
    assert choose_model_file(q, "auto") == ("model.int8.onnx", "int8")
    assert choose_model_file(q, "fp32") == ("model.onnx", "fp32")


def test_anomaly_outputs_need_threshold(tmp_path: Path) -> None:
    pkg = write_tiny_package(tmp_path / "p", anomaly=None)
    with pytest.raises(ModelPackageError, match="anomaly.threshold"):
        InspectionModel(load_package(pkg), CPU)


def test_heatmap_png_is_small_grey_png() -> None:
    amap = np.linspace(0, 2, 256 * 256, dtype=np.float32).reshape(256, 256)
    b64 = heatmap_png(amap, 64)
    img = cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_UNCHANGED)
    assert img.shape == (64, 64) and img.dtype == np.uint8
    assert img[0, 0] < 5 and img[-1, -1] > 250
    assert len(b64) < 8000
