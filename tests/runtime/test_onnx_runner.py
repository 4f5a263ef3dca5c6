from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest

from inspector.contracts.config import RuntimeSection
from inspector.contracts.errors import BackendUnavailable
from inspector.runtime.base import Runner, create_runner
from inspector.runtime.onnx_runner import provider_options, select_providers
from tests.runtime.tiny_models import SIZE, tiny_model

CPU_ONLY = ["CPUExecutionProvider"]


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    onnx.save(tiny_model(), str(path))
    return path


@pytest.mark.parametrize("batch", [1, 4])
def test_cpu_runner_runs_batches(onnx_path: Path, batch: int) -> None:
    runner = create_runner(onnx_path, RuntimeSection(providers=["cpu"], threads=1))
    assert isinstance(runner, Runner)
    out = runner.run(np.zeros((batch, 3, *SIZE), np.float32))
    assert out["class_probs"].shape == (batch, 3)
    assert out["anomaly_map"].shape == (batch, 1, *SIZE)
    assert out["anomaly_score"].shape == (batch,)
    assert runner.input_name == "image"
    assert set(runner.output_names) == {"class_probs", "anomaly_map", "anomaly_score"}
    assert runner.describe()["providers"] == CPU_ONLY
    assert runner.warmup(SIZE, (1, 2)) >= 0
    runner.close()


def test_missing_provider_without_fallback_is_refused(onnx_path: Path) -> None:
    with pytest.raises(BackendUnavailable) as info:
        create_runner(onnx_path, RuntimeSection(providers=["cuda"]))
    assert "onnxruntime-gpu" in info.value.hint


def test_tensorrt_provider_hint() -> None:
    with pytest.raises(BackendUnavailable) as info:
        select_providers(["tensorrt"], CPU_ONLY)
    assert "TensorRT" in info.value.hint


def test_fallback_in_config_order_is_logged(onnx_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="inspector.runtime.onnx_runner"):
        runner = create_runner(onnx_path, RuntimeSection(providers=["tensorrt", "cuda", "cpu"]))
    assert runner.describe()["providers"] == CPU_ONLY
    assert "falling back to 'cpu'" in caplog.text
    assert "on CPUExecutionProvider" in caplog.text


def test_select_providers_keeps_order_from_first_available() -> None:
    avail = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert select_providers(["cuda", "cpu"], avail) == ["cuda", "cpu"]
    assert select_providers(["tensorrt", "cuda"], avail[1:]) == ["cuda"]


def test_tensorrt_provider_options(tmp_path: Path) -> None:
    opts = provider_options("tensorrt", "int8", tmp_path)
    assert opts["trt_fp16_enable"] and opts["trt_int8_enable"]
    assert opts["trt_engine_cache_enable"] and Path(opts["trt_engine_cache_path"]).is_dir()
    assert not provider_options("tensorrt", "fp32", None)["trt_fp16_enable"]
