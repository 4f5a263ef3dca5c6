"""OpenVINO backend: parity with ONNX Runtime (tiny graph and a real packaged network), bf16, the station's
backend/precision choice from the package, and the refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from inspector.contracts.config import RuntimeSection
from inspector.contracts.errors import BackendUnavailable, ModelPackageError
from inspector.models.inference import InspectionModel, choose_model_file
from inspector.runtime.base import Runner, create_runner, resolve_backend
from inspector.runtime.package import load_package
from tests.runtime.tiny_models import SIZE, tiny_manifest, tiny_model, write_tiny_package

ov = pytest.importorskip("openvino", reason="pip install openvino (the 'openvino' extra)")

from inspector.runtime.openvino_runner import OpenVinoRunner, cpu_capabilities, cpu_description  # noqa: E402

HAS_BF16 = "BF16" in cpu_capabilities()


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    onnx.save(tiny_model(), str(path))
    return path


def _frames(n: int = 6) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, 3, *SIZE)).astype(np.float32)


@pytest.mark.parametrize("batch", [1, 4])
def test_openvino_fp32_matches_onnxruntime_on_the_tiny_graph(onnx_path: Path, batch: int) -> None:
    ref = create_runner(onnx_path, RuntimeSection(backend="onnxruntime", threads=1))
    runner = create_runner(onnx_path, RuntimeSection(backend="openvino", threads=1, precision="fp32"))
    assert isinstance(runner, OpenVinoRunner) and isinstance(runner, Runner)
    x = _frames(batch)
    a, b = ref.run(x), runner.run(x)
    assert set(b) == set(a) == set(runner.output_names)
    for name in a:
        assert b[name].shape == a[name].shape and b[name].dtype == np.float32
        np.testing.assert_allclose(b[name], a[name], rtol=1e-5, atol=1e-6)
    d = runner.describe()
    assert d["backend"] == "openvino" and d["precision"] == "fp32" and d["threads"] == 1
    assert runner.warmup(SIZE, (1, 2)) >= 0
    runner.close()


def test_batch_one_runs_a_static_copy_that_agrees_with_the_dynamic_graph(onnx_path: Path) -> None:
    """Batch 1 (the latency path) runs a static-shape compile; micro-batches the dynamic one: same answers."""
    runner = OpenVinoRunner(onnx_path, threads=1, precision="fp32")
    (stage,) = runner._stages
    assert stage.single is not None
    assert not stage.single.inputs[0].get_partial_shape().is_dynamic
    assert stage.compiled.inputs[0].get_partial_shape()[0].is_dynamic
    x = _frames(3)
    together = runner.run(x)
    for k in range(3):
        alone = runner.run(x[k : k + 1])
        for name in together:
            np.testing.assert_allclose(alone[name][0], together[name][k], rtol=1e-5, atol=1e-6)
    first = runner.run(x[:1])
    runner.run(x[1:2])  # the request's shared output tensors are overwritten: what run() returned is not
    for name in first:
        np.testing.assert_allclose(first[name][0], together[name][0], rtol=1e-5, atol=1e-6)
    runner.close()


@pytest.mark.skipif(not HAS_BF16, reason="this CPU has no bf16 in OpenVINO")
def test_openvino_bf16_is_close_to_fp32(onnx_path: Path) -> None:
    x = _frames()
    a = create_runner(onnx_path, RuntimeSection(backend="onnxruntime")).run(x)
    b = OpenVinoRunner(onnx_path, threads=2, precision="bf16").run(x)
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=2e-2, atol=2e-2)


def test_unsupported_precision_is_refused_with_what_to_do(onnx_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match="fp32, bf16 or int8, not 'fp16'") as err:
        OpenVinoRunner(onnx_path, precision="fp16")
    assert "runtime.precision" in err.value.hint


def test_cpu_description_names_the_model_and_the_flags() -> None:
    cpu = cpu_description()
    assert cpu["model"] != "unknown" and isinstance(cpu["flags"], list)
    assert "FP32" in cpu["openvino_capabilities"]


def test_station_runs_the_backend_and_precision_the_package_kept(tmp_path: Path) -> None:
    pkg = load_package(
        write_tiny_package(
            tmp_path / "p",
            model={
                "fp32": "model.onnx",
                "recommended": "bf16" if HAS_BF16 else "fp32",
                "backend": "openvino",
                "outputs": {
                    "class_probs": "class_probs",
                    "anomaly_score": "anomaly_score",
                    "anomaly_map": "anomaly_map",
                },
            },
        )
    )
    auto = InspectionModel(pkg, RuntimeSection())  # backend auto, precision auto
    assert auto.backend == "openvino" and isinstance(auto.runner, OpenVinoRunner)
    assert auto.precision == ("bf16" if HAS_BF16 else "fp32")
    ort = InspectionModel(pkg, RuntimeSection(backend="onnxruntime"))
    assert ort.backend == "onnxruntime" and ort.precision == "fp32"  # the gate kept bf16 on OpenVINO only
    frame = np.full((40, 50, 3), 90, np.uint8)
    a, b = ort.infer([frame])[0], auto.infer([frame])[0]
    assert abs(a.anomaly_raw - b.anomaly_raw) <= 2e-2 * max(1.0, abs(a.anomaly_raw))  # type: ignore[union-attr,operator]
    with pytest.raises(ModelPackageError, match="bf16 runs on the openvino backend only"):
        choose_model_file(pkg.manifest, "bf16", "onnxruntime")


def test_old_packages_keep_running_on_onnxruntime() -> None:
    m = tiny_manifest()
    assert m.model.backend == "onnxruntime"
    assert resolve_backend(RuntimeSection(), m.model.backend) == "onnxruntime"
    assert choose_model_file(m, "auto", "onnxruntime") == ("model.onnx", "fp32")


@pytest.fixture(scope="module")
def real_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real trained-network package (conv backbone, classifier head, anomaly scorer) built by the trainer,
    with its precision gate run over ONNX Runtime INT8, OpenVINO bf16 and OpenVINO INT8."""
    from inspector.models.preprocess import Preprocessor
    from tests.trainer.deploy_nets import rgb_images, tiny_net
    from tests.trainer.test_package import PRE, heldout, run_onnx_scores, spec
    from trainer.package import build_package
    from trainer.quantize import QuantConfig

    net = tiny_net(classes=2)
    held = heldout(16)
    raw = run_onnx_scores(net, Preprocessor(PRE).batch(held.images))
    out = tmp_path_factory.mktemp("ovpkg") / "pkg"
    build_package(
        out,
        net,
        spec(float(np.quantile(raw, 0.9))),
        held,
        calibration_images=rgb_images(8, seed=9),
        quant_config=QuantConfig(allow_few_calibration=True, bench_runs=5, bench_warmup=1),
        n_canaries=2,
    )
    return out


def test_real_package_parity_and_runtime_record(real_package: Path) -> None:
    from tests.trainer.deploy_nets import rgb_images

    pkg = load_package(real_package)
    rt = pkg.manifest.benchmark["runtime"]
    assert rt["cpu"]["model"] and "flags" in rt["cpu"]
    assert {"backend", "precision", "speedup_vs_fp32", "metric_loss_points"} <= set(rt)
    names = {(c["backend"], c["precision"]) for c in rt["candidates"]}
    assert ("onnxruntime", "int8") in names and ("openvino", "int8") in names
    assert ("openvino", "bf16") in names or not HAS_BF16
    assert pkg.manifest.model.backend == rt["backend"] and pkg.manifest.model.recommended == rt["precision"]
    frames = rgb_images(6, seed=3)
    ort = InspectionModel(pkg, RuntimeSection(backend="onnxruntime", precision="fp32"))
    vino = InspectionModel(pkg, RuntimeSection(backend="openvino", precision="fp32"))
    for a, b in zip(ort.infer(frames), vino.infer(frames), strict=True):
        assert abs(a.anomaly_raw - b.anomaly_raw) <= 1e-4 * max(1.0, abs(a.anomaly_raw))  # type: ignore[union-attr,operator]
        for k, p in a.class_probs.items():  # type: ignore[union-attr]
            assert abs(p - b.class_probs[k]) <= 1e-4  # type: ignore[index]


def _package_frames(package: Path, n: int) -> np.ndarray:
    h, w = load_package(package).manifest.preprocess.size
    return np.random.default_rng(1).standard_normal((n, 3, h, w)).astype(np.float32)


def test_the_first_block_cut_splits_the_graph_in_two(real_package: Path, tmp_path: Path) -> None:
    """Mixed bf16 cuts the graph after the backbone's first block; the two parts chained give the whole graph."""
    from inspector.runtime.graph_split import first_block_output, split_at

    path = real_package / "model.onnx"
    assert first_block_output(path) is None  # no timm-style /backbone/blocks.0/: the mixed candidate is not offered
    cut = first_block_output(path, scope="/backbone/s1/")
    assert cut is not None
    head, tail = split_at(path, cut, tmp_path)
    x = _package_frames(real_package, 2)
    import onnxruntime as ort

    mid = ort.InferenceSession(str(head), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    tail_s = ort.InferenceSession(str(tail), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in tail_s.get_outputs()], tail_s.run(None, {cut: mid}), strict=True))
    ref = create_runner(path, RuntimeSection(backend="onnxruntime")).run(x)
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-5, atol=1e-5)


def test_a_cut_that_does_not_separate_the_graph_is_refused(tmp_path: Path) -> None:
    """x -> Relu -> a; out = a + x: the part after a still reads x."""
    from onnx import TensorProto, helper

    from inspector.runtime.graph_split import split_at

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["a"], name="relu"), helper.make_node("Add", ["a", "x"], ["y"], name="add")],
        "skip",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        value_info=[helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 4])],
    )
    path = tmp_path / "skip.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ValueError, match="does not separate"):
        split_at(path, "a", tmp_path / "parts")


@pytest.mark.skipif(not HAS_BF16, reason="this CPU has no bf16 in OpenVINO")
def test_mixed_bf16_runs_the_head_in_f32_and_is_closer_to_fp32(real_package: Path) -> None:
    from inspector.runtime.graph_split import first_block_output

    path = real_package / "model.onnx"
    cut = first_block_output(path, scope="/backbone/s1/")
    x = _package_frames(real_package, 4)
    ref = create_runner(path, RuntimeSection(backend="onnxruntime")).run(x)
    mixed = OpenVinoRunner(path, threads=2, precision="bf16", f32_until=cut)
    assert len(mixed._stages) == 2 and mixed.describe()["f32_until"] == cut
    assert OpenVinoRunner(path, precision="fp32", f32_until=cut).f32_until is None  # a cut only means something in bf16
    for batch in (x, x[:1]):
        got = mixed.run(batch)
        for name in ref:
            np.testing.assert_allclose(got[name], ref[name][: len(batch)], rtol=2e-2, atol=2e-2)


def test_stage_cuts_offer_only_stage_ends_that_separate_the_graph(tmp_path: Path) -> None:
    """blocks.0's output also feeds the scorer directly (like Lite0's stage 2): the graph cannot be cut after
    blocks.1, whose output alone misses it; after bn1 and blocks.0 it can."""
    from onnx import TensorProto, helper

    from inspector.runtime.graph_split import stage_cuts

    def node(op: str, ins: list[str], out: str, name: str) -> onnx.NodeProto:
        return helper.make_node(op, ins, [out], name=name)

    nodes = [
        node("Relu", ["x"], "s", "/backbone/bn1/act/Relu"),
        node("Relu", ["s"], "b0", "/backbone/blocks.0/blocks.0.0/Relu"),
        node("Relu", ["b0"], "b1", "/backbone/blocks.1/blocks.1.0/Relu"),
        node("Add", ["b0", "b1"], "y", "/scorer/Add"),
    ]
    info = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("x", "y")]
    graph = helper.make_graph(nodes, "stages", info[:1], info[1:])
    path = tmp_path / "stages.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert stage_cuts(path) == {"bn1": "s", "blocks.0": "b0"}
