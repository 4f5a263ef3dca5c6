"""INT8 static quantisation: calibration minimum, backbone-only nodes, and the keep-or-drop gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.trainer.deploy_nets import images, tiny_net
from trainer.export import export_onnx, run_onnx
from trainer.quantize import QuantConfig, QuantizationError, gate, quantize_and_gate, quantize_int8, select_nodes

FAST = {"allow_few_calibration": True, "bench_runs": 5, "bench_warmup": 1}


@pytest.fixture
def fp32(tmp_path: Path) -> Path:
    return export_onnx(tiny_net(), images(2), tmp_path / "model.onnx")


def test_fewer_than_100_calibration_images_are_refused(fp32: Path, tmp_path: Path) -> None:
    assert QuantConfig().min_calibration_images == 100
    with pytest.raises(QuantizationError, match="at least 100"):
        quantize_int8(fp32, tmp_path / "q.onnx", list(images(20).numpy()))
    n = quantize_int8(fp32, tmp_path / "q.onnx", list(images(20).numpy()), QuantConfig(allow_few_calibration=True))
    assert n == 3


def test_only_backbone_convs_are_quantised_u8s8(fp32: Path, tmp_path: Path) -> None:
    assert all(n.startswith("/backbone/") for n in select_nodes(fp32, ["Conv"], ["/backbone/"]))
    out = tmp_path / "q.onnx"
    quantize_int8(fp32, out, list(images(10).numpy()), QuantConfig(**FAST))
    graph = onnx.load(str(out)).graph
    dq_outputs = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    for node in graph.node:
        quantised_input = any(i in dq_outputs for i in node.input)
        if not node.name.startswith(("/backbone/", "/classifier/")) and node.op_type not in (
            "QuantizeLinear",
            "DequantizeLinear",
        ):
            assert not quantised_input, f"{node.name} ({node.op_type}) outside the backbone was quantised"
    inits = {i.name: i for i in graph.initializer}
    zero_points = [inits[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear" and n.input[2] in inits]
    act = [z for z in zero_points if z.data_type == onnx.TensorProto.UINT8]
    assert act, "activations must be uint8 (U8S8)"


def test_gate_refuses_int8_that_loses_accuracy(fp32: Path, tmp_path: Path) -> None:
    heldout = images(48, seed=1).numpy()
    labels = run_onnx(fp32, heldout)["class_probs"].argmax(1)  # fp32 accuracy is 1.0 by construction
    # calibration on near-black images: activation ranges far too narrow, held-out activations saturate
    calib = list(images(10, seed=2).numpy() * 0.001)
    out = tmp_path / "model.int8.onnx"
    report = quantize_and_gate(fp32, out, calib, heldout, labels, QuantConfig(**FAST))
    assert report.metric == "accuracy" and report.metric_fp32 == 1.0
    assert report.metric_int8 < 0.99
    assert not report.kept and "loses" in report.reason
    assert not out.exists() and report.int8_path is None
    assert report.fp32_ms > 0 and report.int8_ms > 0


def test_gate_rules() -> None:
    cfg = QuantConfig()
    assert gate(10.0, 5.0, 0.95, 0.945, "accuracy", cfg)[0]
    kept, reason = gate(10.0, 11.0, 0.95, 0.95, "accuracy", cfg)
    assert not kept and "not faster" in reason
    kept, reason = gate(10.0, 3.0, 0.95, 0.93, "auroc", cfg)
    assert not kept and "auroc" in reason
    assert not gate(10.0, 3.0, 0.95, float("nan"), "auroc", cfg)[0]


def test_kept_int8_reports_figures(fp32: Path, tmp_path: Path) -> None:
    heldout = images(16, seed=1).numpy()
    labels = run_onnx(fp32, heldout)["class_probs"].argmax(1)
    cfg = QuantConfig(**FAST, min_speedup=1.0, max_metric_loss=1.0)
    report = quantize_and_gate(fp32, tmp_path / "i8.onnx", list(images(10).numpy()), heldout, labels, cfg)
    assert report.quantized_nodes == 3 and report.n_calibration == 10
    assert report.kept == (report.speedup >= 1.0)
    assert np.isfinite(report.speedup)


def test_combined_gate_checks_every_metric() -> None:
    """A combined model keeps INT8 only if BOTH accuracy and AUROC stay within budget."""
    from trainer.quantize import QuantConfig, gate

    cfg = QuantConfig(max_metric_loss=0.01, min_speedup=1.0)
    m32 = {"accuracy": 1.0, "auroc": 1.0}
    m8 = {"accuracy": 1.0, "auroc": 0.9}
    worst = max(m32, key=lambda k: m32[k] - m8[k])
    kept, reason = gate(10.0, 5.0, m32[worst], m8[worst], worst, cfg)
    assert worst == "auroc" and not kept and "auroc" in reason


def test_keep_fp32_leaves_the_named_layers_unquantised(fp32: Path, tmp_path: Path) -> None:
    n = quantize_int8(
        fp32, tmp_path / "q.onnx", list(images(10).numpy()), QuantConfig(**FAST, keep_fp32=["/backbone/s1/"])
    )
    assert n == 2
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    dq_outputs = {o for node in graph.node if node.op_type == "DequantizeLinear" for o in node.output}
    stem = [node for node in graph.node if node.name.startswith("/backbone/s1/") and node.op_type == "Conv"]
    assert stem and not any(i in dq_outputs for i in stem[0].input)
