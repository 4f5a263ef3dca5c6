"""A tiny model package built with numpy and onnx alone (no torch): the spine's test model and the
fallback of a station installed without the training extra.

Anomaly model: the frame is shrunk to 16x16 grey cells; each cell's deviation from the mean good image,
in units of the good cells' spread, is the anomaly map; the image score is its maximum. Classifier:
logistic on (max, mean) of that map, classes ``good`` / ``defect``. The threshold is a quantile of the
good training scores. It separates the synthetic demo parts; real products need the trainer.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from inspector.contracts.manifest import AnomalySpec, Canary, Manifest, ModelFiles, Outputs, Preprocess
from inspector.models.preprocess import Preprocessor
from inspector.runtime.package import write_manifest

SIZE = 64
CELLS = 16
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


def _cells(batch: np.ndarray) -> np.ndarray:
    """[B,3,64,64] normalised -> [B,1,16,16] grey cell means (the same math as the graph)."""
    grey = batch.mean(axis=1, keepdims=True)
    b = grey.shape[0]
    k = SIZE // CELLS
    return grey.reshape(b, 1, CELLS, k, CELLS, k).mean(axis=(3, 5))


def _graph(ref_mean: np.ndarray, ref_std: np.ndarray, w: np.ndarray, bias: np.ndarray) -> onnx.ModelProto:
    k = SIZE // CELLS
    nodes = [
        helper.make_node("ReduceMean", ["image", "axes_c"], ["grey"], keepdims=1),
        helper.make_node("AveragePool", ["grey"], ["cells"], kernel_shape=[k, k], strides=[k, k]),
        helper.make_node("Sub", ["cells", "ref_mean"], ["diff"]),
        helper.make_node("Abs", ["diff"], ["adiff"]),
        helper.make_node("Div", ["adiff", "ref_std"], ["anomaly_map"]),
        helper.make_node("ReduceMax", ["anomaly_map", "axes_chw"], ["anomaly_score"], keepdims=0),
        helper.make_node("ReduceMean", ["anomaly_map", "axes_chw"], ["amean"], keepdims=0),
        helper.make_node("Unsqueeze", ["anomaly_score", "axes_1"], ["s1"]),
        helper.make_node("Unsqueeze", ["amean", "axes_1"], ["m1"]),
        helper.make_node("Concat", ["s1", "m1"], ["feat"], axis=1),
        helper.make_node("Gemm", ["feat", "w", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["class_probs"], axis=1),
    ]
    inits = [
        numpy_helper.from_array(np.array([1], np.int64), "axes_c"),
        numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes_chw"),
        numpy_helper.from_array(np.array([1], np.int64), "axes_1"),
        numpy_helper.from_array(ref_mean.astype(np.float32), "ref_mean"),
        numpy_helper.from_array(ref_std.astype(np.float32), "ref_std"),
        numpy_helper.from_array(w.astype(np.float32), "w"),
        numpy_helper.from_array(bias.astype(np.float32), "b"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_inspection",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [
            helper.make_tensor_value_info("class_probs", TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info("anomaly_score", TensorProto.FLOAT, ["batch"]),
            helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["batch", 1, CELLS, CELLS]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _features(cells: np.ndarray, ref_mean: np.ndarray, ref_std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    amap = np.abs(cells - ref_mean) / ref_std
    return amap.reshape(len(amap), -1).max(axis=1), amap.reshape(len(amap), -1).mean(axis=1)


def _fit_logistic(x: np.ndarray, y: np.ndarray, steps: int = 3000, lr: float = 0.5) -> tuple[np.ndarray, float]:
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    w, b = np.zeros(x.shape[1]), 0.0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(z @ w + b)))
        w -= lr * z.T @ (p - y) / len(y)
        b -= lr * float((p - y).mean())
    return w / sd, b - float((w / sd) @ mu)


def build_tiny_package(
    out_dir: str | Path,
    good: Sequence[np.ndarray],
    defects: Sequence[np.ndarray],
    name: str = "tiny-demo",
    target_false_reject: float = 0.01,
) -> Path:
    """Fit the tiny models on RGB images and write a verified package folder; returns its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pre = Preprocessor(Preprocess(size=(SIZE, SIZE), mean=MEAN, std=STD))
    good_cells = _cells(pre.batch(list(good)))
    ref_mean = good_cells.mean(axis=0, keepdims=True)[0]
    ref_std = good_cells.std(axis=0, keepdims=True)[0] + 0.02
    g_max, g_mean = _features(good_cells, ref_mean, ref_std)
    d_max, d_mean = _features(_cells(pre.batch(list(defects))), ref_mean, ref_std)
    threshold = float(np.quantile(g_max, 1 - target_false_reject)) * 1.05
    x = np.column_stack([np.r_[g_max, d_max], np.r_[g_mean, d_mean]])
    y = np.r_[np.zeros(len(g_max)), np.ones(len(d_max))]
    w1, b1 = _fit_logistic(x, y)
    w = np.column_stack([-w1 / 2, w1 / 2])  # two-class softmax equivalent to the logistic fit
    bias = np.array([-b1 / 2, b1 / 2])
    onnx.save(_graph(ref_mean, ref_std, w, bias), out / "model.onnx")
    canary_dir = out / "canary"
    canary_dir.mkdir(exist_ok=True)
    from inspector.models.decode import encode_image

    (canary_dir / "good.png").write_bytes(encode_image(good[0], "png"))
    (canary_dir / "defect.png").write_bytes(encode_image(defects[0], "png"))
    version = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    manifest = Manifest(
        name=name,
        version=version,
        created_at=time.time(),
        task="combined",
        model=ModelFiles(
            outputs=Outputs(class_probs="class_probs", anomaly_score="anomaly_score", anomaly_map="anomaly_map")
        ),
        preprocess=Preprocess(size=(SIZE, SIZE), mean=MEAN, std=STD),
        class_names=["good", "defect"],
        good_class="good",
        temperature=1.0,
        anomaly=AnomalySpec(
            threshold=threshold, threshold_method="good_quantile", target_false_reject=target_false_reject
        ),
        canaries=[Canary(file="canary/good.png", expected="ANY"), Canary(file="canary/defect.png", expected="ANY")],
        architecture={"kind": "tiny-cell-deviation", "cells": CELLS, "input": SIZE},
        target_hardware="any CPU",
        latency_target_ms=10.0,
    )
    write_manifest(out, manifest)
    return out
