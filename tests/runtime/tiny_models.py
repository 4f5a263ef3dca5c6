"""Tiny real ONNX models and packages for runtime and model tests (built with onnx.helper: fast, no torch)."""

from __future__ import annotations

import time
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from inspector.contracts.manifest import Manifest
from inspector.runtime.package import write_manifest

SIZE = (16, 16)
CLASSES = ["good", "scratch", "dent"]
THRESHOLD = 0.5


def tiny_model(nan_for_dark: bool = False, hw: tuple[int, int] = SIZE) -> onnx.ModelProto:
    """image [B,3,H,W] -> class_probs [B,3], anomaly_map [B,1,H,W], anomaly_score [B] (dynamic batch).

    The map is |mean over channels|; with ``nan_for_dark`` it is sqrt(mean) instead, which is NaN for
    frames darker than mid-grey (normalised values below 0): a per-frame NaN on demand.
    """
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, *hw])
    probs = helper.make_tensor_value_info("class_probs", TensorProto.FLOAT, ["batch", 3])
    amap = helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["batch", 1, *hw])
    score = helper.make_tensor_value_info("anomaly_score", TensorProto.FLOAT, ["batch"])
    nodes = [
        helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["logits"], axis=1),
        helper.make_node("Softmax", ["logits"], ["class_probs"], axis=1),
        helper.make_node("ReduceMean", ["image"], ["chan_mean"], axes=[1], keepdims=1),
        helper.make_node("Sqrt" if nan_for_dark else "Abs", ["chan_mean"], ["anomaly_map"]),
        helper.make_node("ReduceMax", ["anomaly_map"], ["anomaly_score"], axes=[1, 2, 3], keepdims=0),
    ]
    graph = helper.make_graph(nodes, "tiny", [image], [probs, amap, score])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def tiny_manifest(**over: object) -> Manifest:
    data: dict[str, object] = {
        "name": "tiny",
        "version": "1.0.0",
        "created_at": time.time(),
        "task": "combined",
        "model": {
            "fp32": "model.onnx",
            "outputs": {"class_probs": "class_probs", "anomaly_score": "anomaly_score", "anomaly_map": "anomaly_map"},
        },
        "preprocess": {"size": list(SIZE)},
        "class_names": CLASSES,
        "anomaly": {"threshold": THRESHOLD},
    }
    data.update(over)
    return Manifest.model_validate(data)


def write_tiny_package(folder: Path, nan_for_dark: bool = False, **over: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(tiny_model(nan_for_dark), str(folder / "model.onnx"))
    write_manifest(folder, tiny_manifest(**over))
    return folder
