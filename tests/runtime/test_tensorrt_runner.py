from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from inspector.contracts.errors import BackendUnavailable
from inspector.runtime.tensorrt_runner import engine_cache_key, engine_cache_path
from tests.runtime.tiny_models import SIZE, tiny_model


def test_cache_key_depends_on_every_field() -> None:
    base = dict(onnx_sha256="ab" * 32, trt_version="10.3.0", gpu_name="NVIDIA H100", precision="fp16")
    key = engine_cache_key(**base)
    assert key == engine_cache_key(**base) and len(key) == 64
    for field, other in [
        ("onnx_sha256", "cd" * 32),
        ("trt_version", "10.4.0"),
        ("gpu_name", "NVIDIA L4"),
        ("precision", "int8"),
    ]:
        assert engine_cache_key(**{**base, field: other}) != key
    assert engine_cache_key(**base, profile=[(1, 3, 16, 16), (8, 3, 16, 16)]) != key
    assert engine_cache_path(Path("/c"), key) == Path(f"/c/{key}.engine")


def test_missing_tensorrt_says_how_to_install(tmp_path: Path) -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tensorrt is installed here")
    from inspector.contracts.config import RuntimeSection
    from inspector.runtime.base import create_runner

    with pytest.raises(BackendUnavailable, match="TensorRT is not installed") as info:
        create_runner(tmp_path / "model.onnx", RuntimeSection(backend="tensorrt"))
    assert "inspection-station[tensorrt]" in info.value.hint


def _require_gpu() -> None:
    pytest.importorskip("tensorrt", reason="TensorRT is not installed")
    from inspector.runtime.tensorrt_runner import gpu_name, import_cudart

    try:
        gpu_name(import_cudart())
    except BackendUnavailable as err:
        pytest.skip(str(err.message))


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_build_cache_and_run(tmp_path: Path, precision: str) -> None:
    _require_gpu()
    from inspector.runtime.tensorrt_runner import TensorRTRunner

    path = tmp_path / "model.onnx"
    onnx.save(tiny_model(), str(path))
    batch = np.random.default_rng(0).uniform(-1, 1, (4, 3, *SIZE)).astype(np.float32)
    runner = TensorRTRunner(path, precision=precision, cache_dir=tmp_path / "engines", max_batch=4)
    out = runner.run(batch)
    assert out["class_probs"].shape == (4, 3) and out["anomaly_map"].shape == (4, 1, *SIZE)
    assert runner.run(batch[:1])["anomaly_score"].shape == (1,)
    runner.close()
    engines = list((tmp_path / "engines").glob("*.engine"))
    assert len(engines) == 1
    mtime = engines[0].stat().st_mtime_ns
    again = TensorRTRunner(path, precision=precision, cache_dir=tmp_path / "engines", max_batch=4)
    assert engines[0].stat().st_mtime_ns == mtime  # loaded from the cache, not rebuilt
    tol = 1e-4 if precision == "fp32" else 2e-2
    np.testing.assert_allclose(again.run(batch)["anomaly_score"], np.abs(batch.mean(1)).max((1, 2)), atol=tol)
    again.close()


@pytest.mark.gpu
def test_int8_with_calibration_arrays(tmp_path: Path) -> None:
    _require_gpu()
    from inspector.runtime.tensorrt_runner import TensorRTRunner

    path = tmp_path / "model.onnx"
    onnx.save(tiny_model(), str(path))
    calib = np.random.default_rng(1).uniform(-1, 1, (8, 3, *SIZE)).astype(np.float32)
    runner = TensorRTRunner(path, precision="int8", cache_dir=tmp_path / "engines", max_batch=4, calibration=calib)
    assert runner.run(calib[:2])["class_probs"].shape == (2, 3)
    runner.close()
