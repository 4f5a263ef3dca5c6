"""Why INT8 loses AUROC on magnetic_tile: variants of the quantisation of the default package graph.

``python -m trainer.int8_diagnose [backbone] [side] [data]`` (README, issue 14): fits the default scorer on every
2nd train/good image (a short run on a shared CPU), then prints image AUROC of fp32, plain INT8 (scorer fitted on
fp32 features), INT8 with the scorer refitted on the INT8 graph's features (``trainer.int8_refit``; line agreement,
recall and false-reject at the reject score beside), and plain INT8 without the depthwise convolutions, without
the stem, with percentile calibration and with per-tensor weights. Results: ``runs/int8_diagnose/res_*.json``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from rich.console import Console
from sklearn.metrics import roc_auc_score

from inspector.contracts.manifest import Preprocess
from inspector.models.preprocess import Preprocessor
from trainer.anomaly import AnomalyConfig
from trainer.backbone import build_backbone
from trainer.data import load_rgb, scan_anomaly
from trainer.evaluate import load_test_split
from trainer.export import export_onnx, run_onnx
from trainer.int8_refit import RefitInputs
from trainer.network import InspectionNet
from trainer.pipelines import _calibration, fit_anomaly, int8_scorer_refit
from trainer.quantize import ImageReader, QuantConfig, keep_fp32_inputs_outside, quantize_int8


def main(
    name: str = "tf_efficientnet_lite0",
    size: int = 256,
    data: Path = Path("../shared/data/magnetic_tile"),
    out: Path = Path("runs/int8_diagnose"),
) -> dict[str, float]:
    torch.set_num_threads(2)
    out.mkdir(parents=True, exist_ok=True)
    cfg = replace(AnomalyConfig(), backbone=name, image_size=(size, size))
    good = [np.asarray(load_rgb(s.path)) for s in scan_anomaly(data).train][::2]
    held = load_test_split(data)
    backbone, spec = build_backbone(name, out_indices=cfg.out_indices)
    pre = Preprocessor(Preprocess(size=(size, size), resize="stretch", mean=spec.mean, std=spec.std, color="gray"))
    t0 = time.time()
    scorer, anomaly, info = fit_anomaly(backbone, pre, good, cfg, Console(stderr=True))
    fp32 = export_onnx(
        InspectionNet(backbone, scorer=scorer).eval(), torch.from_numpy(pre.batch(held.images[:2])), out / "fp32.onnx"
    )
    print("fit+export", round(time.time() - t0), "s", flush=True)
    xh, y = pre.batch(held.images), held.is_defect.astype(bool)
    calib = list(pre.batch(_calibration(good)))

    def scores(path: Path) -> np.ndarray:
        return run_onnx(path, xh)["anomaly_score"]

    res = {"fp32": float(roc_auc_score(y, scores(fp32)))}
    convs = [n for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv" and n.name.startswith("/backbone/")]
    depthwise = {n.name for n in convs if next((a.i for a in n.attribute if a.name == "group"), 1) > 1}
    every = [n.name for n in convs]

    def quant(
        tag: str, nodes: list[str], method: CalibrationMethod = CalibrationMethod.MinMax, per_channel: bool = True
    ) -> Path:
        path = quantize_backbone_convs(fp32, out / f"{tag}.onnx", calib, nodes, method, per_channel)
        res[tag] = float(roc_auc_score(y, scores(path)))
        print(tag, len(nodes), res[tag], flush=True)
        return path

    plain = quant("int8_default", every)
    net_q = int8_scorer_refit(RefitInputs.of_fit(backbone, pre, good, cfg, info, held.images[:1]))(plain, out)
    export_onnx(net_q, torch.from_numpy(xh[:2]), out / "refit.onnx")
    quantize_int8(out / "refit.onnx", out / "refit.int8.onnx", calib, QuantConfig())
    res.update(refit_comparison(scores(fp32), scores(plain), scores(out / "refit.int8.onnx"), y, anomaly.reject_raw))
    print(res, flush=True)
    quant("no_depthwise", [n for n in every if n not in depthwise])
    quant("no_stem", every[1:])
    quant("percentile", every, CalibrationMethod.Percentile)
    quant("per_tensor", every, per_channel=False)
    (out / f"res_{name}_{size}.json").write_text(json.dumps(res, indent=1))
    return res


def quantize_backbone_convs(
    fp32: Path, path: Path, calib: list[np.ndarray], nodes: list[str], method: CalibrationMethod, per_channel: bool
) -> Path:
    """Plain static INT8 (QDQ) of the backbone convolutions ``nodes`` of ``fp32``, written to ``path``."""
    quantize_static(
        str(fp32),
        str(path),
        ImageReader(calib),
        quant_format=QuantFormat.QDQ,
        per_channel=per_channel,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["Conv"],
        nodes_to_quantize=nodes,
        calibrate_method=method,
    )
    keep_fp32_inputs_outside(path, ["/backbone/"])
    return path


def refit_comparison(s32: np.ndarray, s8d: np.ndarray, s8: np.ndarray, y: np.ndarray, thr: float) -> dict[str, float]:
    """The refitted INT8 scores ``s8`` against fp32 ``s32`` and plain INT8 ``s8d`` at the reject score ``thr``:
    AUROC, line agreement, recall and false-reject rate (``y``: is defect)."""
    return {
        "refit_int8": float(roc_auc_score(y, s8)),
        "agree_default": float(np.mean((s32 > thr) == (s8d > thr))),
        "agree_refit": float(np.mean((s32 > thr) == (s8 > thr))),
        "recall_fp32": float((s32[y] > thr).mean()),
        "recall_refit": float((s8[y] > thr).mean()),
        "frr_fp32": float((s32[~y] > thr).mean()),
        "frr_refit": float((s8[~y] > thr).mean()),
    }


if __name__ == "__main__":
    args = sys.argv[1:]
    main(
        *(args[:1] or ["tf_efficientnet_lite0"]),
        *([int(args[1])] if len(args) > 1 else []),  # type: ignore[misc]
        *([Path(args[2])] if len(args) > 2 else []),
    )
