"""Where bf16 loses accuracy in a package's graph: the graph cut after each backbone stage, the head in f32.

``python -m trainer.bf16_diagnose PACKAGE [DATA]`` (README, issue 14). For an anomaly package (DATA: its
anomaly-layout folder, default the manifest's ``data.source``) it runs the whole test split through ONNX Runtime
fp32 and through OpenVINO bf16 with the graph in f32 up to the end of each backbone stage (none, stem, block 0,
block 1, ...: ``inspector.runtime.graph_split``), the same runners the station uses, and prints per variant:
the relative error of the raw anomaly score against fp32 (mean and standard deviation), image AUROC, line
agreement at the package's reject score, and the p50 of batch-1 inference timed in warm turns with ONNX Runtime
fp32 (``trainer.quantize.time_in_turns``, as the precision gate times). Needs OpenVINO and a CPU with bf16.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.metrics import roc_auc_score

from inspector.models.preprocess import Preprocessor
from inspector.runtime.graph_split import stage_cuts
from inspector.runtime.package import load_package
from trainer.evaluate import load_test_split
from trainer.network import OUTPUT_SCORE
from trainer.precision import open_runner, run_all
from trainer.quantize import time_in_turns


def cuts(onnx_path: Path) -> dict[str, str | None]:
    """Variant name -> the f32 head's last tensor (None: the whole graph in bf16); only cuts that separate."""
    out: dict[str, str | None] = {"all bf16": None}
    out.update({f"f32 to {stage}": cut for stage, cut in stage_cuts(onnx_path).items()})
    return out


def diagnose(package: Path, data: Path | None = None, threads: int = 2, runs: int = 40) -> list[dict[str, Any]]:
    pkg = load_package(package)
    m = pkg.manifest
    if m.anomaly is None:
        raise SystemExit(f"{package} is not an anomaly package: bf16_diagnose compares anomaly scores")
    root = data or Path(str(m.data.get("source", "")))
    held = load_test_split(root)
    x = Preprocessor(m.preprocess).batch(held.images)
    fp32_path = pkg.file(m.model.fp32)
    base = open_runner(fp32_path, "onnxruntime", "fp32", threads)
    ref = run_all(base, x)[OUTPUT_SCORE].astype(np.float64)
    y, reject = held.is_defect.astype(bool), m.anomaly.reject_raw
    rows: list[dict[str, Any]] = [_row("ONNX Runtime fp32", None, ref, ref, y, reject)]
    runners = [base]
    for name, cut in cuts(fp32_path).items():
        runner = open_runner(fp32_path, "openvino", "bf16", threads, cut)
        rows.append(_row(name, cut, run_all(runner, x)[OUTPUT_SCORE].astype(np.float64), ref, y, reject))
        runners.append(runner)
    one = np.ascontiguousarray(x[:1])
    times = time_in_turns([partial(r.run, one) for r in runners], runs, 3)
    for row, ms in zip(rows, times, strict=True):
        row["p50_ms"], row["x_vs_fp32"] = round(ms, 3), round(times[0] / ms, 2)
    return rows


def _row(name: str, cut: str | None, got: np.ndarray, ref: np.ndarray, y: np.ndarray, reject: float) -> dict[str, Any]:
    rel = (got - ref) / np.maximum(np.abs(ref), 1e-9)
    return {
        "variant": name,
        "f32_until": cut,
        "score_error_mean_pct": round(float(rel.mean()) * 100, 3),
        "score_error_std_pct": round(float(rel.std()) * 100, 3),
        "image_auroc": round(float(roc_auc_score(y, got)), 4) if y.any() and (~y).any() else None,
        "line_agreement": round(float(np.mean((got > reject) == (ref > reject))), 4),
    }


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit("usage: python -m trainer.bf16_diagnose PACKAGE [DATA]")
    rows = diagnose(Path(argv[0]), Path(argv[1]) if len(argv) > 1 else None)
    table = Table(title=f"bf16 by where the f32 head ends: {argv[0]}")
    for col in ("variant", "score err. mean %", "score err. std %", "AUROC", "line agreement", "p50 ms", "x vs fp32"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for r in rows:
        table.add_row(*(str(r[c]) for c in list(r) if c != "f32_until"))
    Console().print(table)


if __name__ == "__main__":
    main(sys.argv[1:])
