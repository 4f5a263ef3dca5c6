"""The reduced-precision step of a package build (``trainer.package``): the INT8 graph and its gate, the optional
INT8 graph whose scorer was refitted on INT8 features, the optional network whose scorer was fitted on OpenVINO's
bf16 features (``trainer.bf16_refit``), and the runtime choice over every candidate.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trainer.evaluate import EvalSet
from trainer.export import ParityBounds, export_onnx
from trainer.package_spec import (
    BF16_FILE,
    FP32_FILE,
    INT8_FILE,
    PackageSpec,
    heldout_class_labels,
    preprocess_frames,
)
from trainer.precision import RuntimeChoice, select_runtime
from trainer.quantize import QuantConfig, QuantReport, quantize_and_gate

#: ``refit(graph, scratch) -> net | None``: the network whose scorer was fitted on the features that graph computes
#: (``trainer.int8_refit.make_refit``): the INT8 graph (quantised like the package's own, gated against its fp32
#: graph) or the fp32 graph run by OpenVINO in bf16 (``trainer.bf16_refit``, exported and gated as a bf16 candidate).
RefitHook = Callable[[Path, Path], "nn.Module | None"]


def quantise(
    stage: Path,
    spec: PackageSpec,
    calibration: list[np.ndarray] | None,
    x_held: np.ndarray,
    held: EvalSet,
    cfg: QuantConfig | None,
    bounds: ParityBounds | None = None,
    refit: RefitHook | None = None,
    opset: int = 17,
    bf16_refit: RefitHook | None = None,
) -> tuple[QuantReport | None, RuntimeChoice | None, dict[str, Any] | None]:
    """The INT8 graph (ONNX Runtime's own gate in ``QuantReport``), then every reduced-precision candidate
    (ONNX Runtime INT8, OpenVINO bf16, OpenVINO INT8) through ``select_runtime``; the INT8 file stays in the
    package only when an INT8 candidate won. With ``refit``, a second INT8 graph whose scorer was fitted on
    INT8 features is gated too, and the better of the two (kept first, then the smaller loss) is the INT8 graph;
    with ``bf16_refit`` (called with the fp32 graph) the net whose scorer was fitted on bf16 features is a bf16
    candidate of its own, in the package (``BF16_FILE``) if it wins."""
    if calibration is None:
        return None, None, None
    cfg = cfg or QuantConfig()
    labels = heldout_class_labels(spec, held)
    reject_raw = spec.anomaly.reject_raw if spec.anomaly else None
    calib, refit_info = list(preprocess_frames(spec, calibration)), None
    with tempfile.TemporaryDirectory() as tmp:
        tmp_int8 = Path(tmp) / INT8_FILE
        report = quantize_and_gate(
            stage / FP32_FILE,
            tmp_int8,
            calib,
            x_held,
            labels,
            cfg,
            defect_labels=held.is_defect,
            reject_raw=reject_raw,
            keep_declined=True,
        )
        if refit is not None:
            refit_info, refitted = _refit_int8(
                stage, tmp_int8, Path(tmp), refit, calib, x_held, labels, held, reject_raw, cfg, opset
            )
            report = _use_better(report, refitted, refit_info, Path(tmp) / "refit.int8.onnx", tmp_int8)
        bf16 = _refit_bf16(stage, Path(tmp), bf16_refit, x_held, opset) if bf16_refit is not None else None
        choice = select_runtime(
            stage / FP32_FILE,
            tmp_int8,
            x_held,
            labels,
            held.is_defect,
            reject_raw,
            cfg,
            bounds,
            ort_int8=report,
            bf16_path=bf16,
        )
        for which, src, name in (("int8", tmp_int8, INT8_FILE), ("bf16", bf16, BF16_FILE)):
            if choice.file == which and src is not None:
                shutil.copyfile(src, stage / name)
        report.int8_path = INT8_FILE if report.kept and choice.file == "int8" else None
    return report, choice, refit_info


def _better(a: QuantReport, b: QuantReport) -> bool:
    return (a.kept, -(a.metric_fp32 - a.metric_int8)) > (b.kept, -(b.metric_fp32 - b.metric_int8))


def _use_better(
    report: QuantReport, refitted: QuantReport | None, refit_info: dict[str, Any], src: Path, int8: Path
) -> QuantReport:
    """The refitted INT8 graph replaces the plain one (file and report) when it is better."""
    if refitted is None or not _better(refitted, report):
        return report
    shutil.copyfile(src, int8)
    refit_info["used"] = True
    return refitted


def _refit_int8(
    stage: Path,
    int8: Path,
    tmp: Path,
    refit: RefitHook,
    calib: list[np.ndarray],
    x_held: np.ndarray,
    labels: np.ndarray | None,
    held: EvalSet,
    reject_raw: float | None,
    cfg: QuantConfig,
    opset: int,
) -> tuple[dict[str, Any], QuantReport | None]:
    from trainer.quantize import gate_quantised, quantize_int8

    net_q = refit(int8, tmp)
    if net_q is None:
        return {"used": False, "reason": "refit not possible for this graph"}, None
    export_onnx(net_q.eval(), torch.from_numpy(x_held[:2]), tmp / "refit.onnx", opset)
    n = quantize_int8(tmp / "refit.onnx", tmp / "refit.int8.onnx", calib, cfg)
    rep = gate_quantised(
        stage / FP32_FILE,
        tmp / "refit.int8.onnx",
        len(calib),
        n,
        x_held,
        labels,
        cfg,
        held.is_defect,
        reject_raw,
        keep_declined=True,
    )
    return {"used": False, "report": rep.to_dict()}, rep


def _refit_bf16(stage: Path, tmp: Path, bf16_refit: RefitHook, x_held: np.ndarray, opset: int) -> Path | None:
    """The network whose scorer was fitted on the fp32 graph's bf16 features, exported (an fp32 ONNX graph that
    OpenVINO compiles in bf16); None when the refit is not possible for this graph."""
    net = bf16_refit(stage / FP32_FILE, tmp)
    if net is None:
        return None
    return export_onnx(net.eval(), torch.from_numpy(x_held[:2]), tmp / "refit.bf16.onnx", opset)
