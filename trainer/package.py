"""Build a model package folder: export, parity, INT8 gate, canaries, drift reference, benchmark, checklist.

The folder is assembled in a staging folder beside ``out_dir``, verified with the station's own
``load_package`` and only then renamed into place, so a half-built package never exists at ``out_dir``.
Version: ``<name>-<YYYYmmdd-HHMMSS>-<first 8 hex of model.onnx sha256>``.
"""

from __future__ import annotations

import logging
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from inspector.contracts.errors import InspectorError
from inspector.contracts.manifest import AnomalySpec, Canary, Manifest, ModelFiles, Outputs, Preprocess
from inspector.drift.reference import histogram
from inspector.models.preprocess import Preprocessor
from inspector.runtime.package import hash_file, load_package, write_manifest
from trainer.checklist import hardware_description, run_checklist
from trainer.evaluate import GOOD, HeldOut, evaluate_package
from trainer.export import ParityBounds, compare_with_torch, export_onnx, open_session, run_onnx
from trainer.network import OUTPUT_MAP, OUTPUT_PROBS, OUTPUT_SCORE
from trainer.quantize import QuantConfig, QuantReport, quantize_and_gate

log = logging.getLogger(__name__)

FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
HIST_BINS = 20
CANARY_SURE_PASS = 0.5  # normalised anomaly score at most this: a sure PASS
CANARY_SURE_FAIL = 2.0  # at least this: a sure FAIL
CANARY_SURE_PROB = 0.97


class PackagingError(InspectorError):
    """The package could not be built (bad inputs, a folder in the way, a failed verification)."""


@dataclass
class PackageSpec:
    """What the manifest says about the model beyond the files (all figures are measured while building)."""

    name: str
    task: Literal["classification", "anomaly", "combined"]
    preprocess: Preprocess
    class_names: list[str] | None = None
    good_class: str | None = GOOD
    temperature: float | None = None
    anomaly: AnomalySpec | None = None
    data: dict[str, Any] = field(default_factory=dict)
    augmentation: dict[str, Any] = field(default_factory=dict)
    architecture: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    latency_target_ms: float | None = None
    memory_budget_mb: float | None = None
    target_hardware: str | None = None


@dataclass
class BuildResult:
    path: Path
    manifest: Manifest
    parity: dict[str, Any]
    quant: QuantReport | None
    checklist: dict[str, Any]


def _pre(spec: PackageSpec, images: list[np.ndarray]) -> np.ndarray:
    return Preprocessor(spec.preprocess).batch(images)


def _labels(spec: PackageSpec, held: HeldOut) -> np.ndarray | None:
    """Held-out class indices for the INT8 gate's accuracy (None when the labels are not the classes)."""
    if spec.class_names and all(n in spec.class_names for n in held.label_names):
        return np.array([spec.class_names.index(n) for n in held.label_names])
    return None if spec.class_names else held.is_defect


def torch_eager_ms(net: nn.Module, x: torch.Tensor, threads: int = 2, runs: int = 20) -> float:
    """Median ms of the PyTorch eager network at batch 1: the baseline before any optimisation."""
    torch.set_num_threads(threads)
    net = net.eval()
    times = []
    with torch.no_grad():
        for k in range(runs + 5):
            t0 = time.perf_counter()
            net(x)
            if k >= 5:
                times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def ort_ms(path: Path, x: np.ndarray, threads: int = 2, runs: int = 20) -> float:
    sess = open_session(path, threads)
    feed = {sess.get_inputs()[0].name: x}
    for _ in range(3):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _stat_rows(images: list[np.ndarray]) -> dict[str, list[float]]:
    from inspector.models.image_stats import image_stats  # the station's own code: reference == live

    rows: dict[str, list[float]] = {}
    for img in images:
        for k, v in image_stats(img).model_dump().items():
            rows.setdefault(k, []).append(float(v))
    return rows


def drift_reference(spec: PackageSpec, held: HeldOut, outs: dict[str, np.ndarray]) -> dict[str, Any]:
    """Reference statistics of held-out good frames (all frames when no class is 'good')."""
    good = np.array([n == (spec.good_class or GOOD) for n in held.label_names])
    if not good.any():
        good = np.ones(len(held.images), bool)
    ref: dict[str, Any] = {"n_frames": int(good.sum()), "frames": "held-out good" if not good.all() else "held-out"}
    ref["image_stats"] = {k: histogram(v, HIST_BINS) for k, v in _stat_rows([held.images[i] for i in np.flatnonzero(good)]).items()}
    if OUTPUT_PROBS in outs:
        probs = outs[OUTPUT_PROBS]
        ref["classifier_confidence"] = histogram(probs.max(1), HIST_BINS, 0.0, 1.0)
        names = spec.class_names or [f"class_{i}" for i in range(probs.shape[1])]
        pred = probs.argmax(1)
        ref["class_mix"] = {n: float((pred == i).mean()) for i, n in enumerate(names)}
        ref["class_mix_labels"] = {n: float(np.mean([x == n for x in held.label_names])) for n in names}
    if OUTPUT_SCORE in outs and spec.anomaly is not None:
        norm = np.array([spec.anomaly.normalise(float(v)) for v in outs[OUTPUT_SCORE][good]])
        ref["anomaly_score_good"] = histogram(norm, HIST_BINS, min(-1.0, float(norm.min())), max(2.0, float(norm.max())))
    return ref


def _expected(spec: PackageSpec, outs: dict[str, np.ndarray], i: int, label: str) -> str | None:
    """PASS / FAIL when the fp32 model is right with a wide margin on frame ``i``, else None."""
    good_label = label == (spec.good_class or GOOD)
    verdicts = []
    if OUTPUT_SCORE in outs and spec.anomaly is not None:
        s = spec.anomaly.normalise(float(outs[OUTPUT_SCORE][i]))
        verdicts.append("PASS" if s <= CANARY_SURE_PASS else "FAIL" if s >= CANARY_SURE_FAIL else None)
    if OUTPUT_PROBS in outs and spec.class_names:
        p = outs[OUTPUT_PROBS][i]
        k = int(p.argmax())
        sure = p[k] >= CANARY_SURE_PROB and spec.class_names[k] == label
        is_good_cls = spec.class_names[k] == spec.good_class
        verdicts.append(None if not sure else "PASS" if is_good_cls else "FAIL")
    want = "PASS" if good_label else "FAIL"
    return want if verdicts and all(v == want for v in verdicts) else None


def write_canaries(folder: Path, spec: PackageSpec, held: HeldOut, outs: dict[str, np.ndarray],
                   n: int = 4) -> list[Canary]:
    """Up to ``n`` held-out frames the model decides with a wide margin, half good, half defective."""
    from inspector.models.decode import encode_image

    sure = [(i, _expected(spec, outs, i, name)) for i, name in enumerate(held.label_names)]
    passes = [(i, e) for i, e in sure if e == "PASS"]
    fails = [(i, e) for i, e in sure if e == "FAIL"]
    half = n // 2
    picked = passes[:half] + fails[:n - half]
    picked += (passes[half:] + fails[n - half:])[:n - len(picked)]
    if not picked:  # nothing decided with margin: keep frames as smoke tests only
        picked = [(i, "ANY") for i in range(min(n, len(held.images)))]
    (folder / "canary").mkdir(exist_ok=True)
    canaries = []
    for k, (i, expected) in enumerate(picked):
        rel = f"canary/{k:02d}_{held.label_names[i]}.png"
        (folder / rel).write_bytes(encode_image(held.images[i], "png"))
        canaries.append(Canary(file=rel, expected=expected))  # type: ignore[arg-type]
    return canaries


def _outputs(names: list[str]) -> Outputs:
    return Outputs(class_probs=OUTPUT_PROBS if OUTPUT_PROBS in names else None,
                   anomaly_score=OUTPUT_SCORE if OUTPUT_SCORE in names else None,
                   anomaly_map=OUTPUT_MAP if OUTPUT_MAP in names else None)


def _quantise(stage: Path, spec: PackageSpec, calibration: list[np.ndarray] | None, x_held: np.ndarray,
              held: HeldOut, cfg: QuantConfig | None) -> QuantReport | None:
    if calibration is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        tmp_int8 = Path(tmp) / INT8_FILE
        report = quantize_and_gate(stage / FP32_FILE, tmp_int8, list(_pre(spec, calibration)), x_held,
                                   _labels(spec, held), cfg, defect_labels=held.is_defect)
        if report.kept:
            shutil.copyfile(tmp_int8, stage / INT8_FILE)
            report.int8_path = INT8_FILE
    return report


def _benchmark(net: nn.Module, stage: Path, x_held: np.ndarray, quant: QuantReport | None,
               threads: int, spec: PackageSpec) -> dict[str, Any]:
    x1 = x_held[:1]
    bench: dict[str, Any] = {
        "hardware": hardware_description(), "target_hardware": spec.target_hardware, "threads": threads,
        "batch": 1, "input": list(x1.shape), "torch_eager_ms": torch_eager_ms(net, torch.from_numpy(x1), threads),
        "fp32_ms": ort_ms(stage / FP32_FILE, x1, threads),
    }
    import onnxruntime

    bench["onnxruntime"] = onnxruntime.__version__
    bench["torch"] = torch.__version__
    if quant is not None:
        bench["int8"] = quant.to_dict()
        bench["int8_ms"] = quant.int8_ms
    return bench


def build_package(out_dir: str | Path, net: nn.Module, spec: PackageSpec, heldout: HeldOut,
                  calibration_images: list[np.ndarray] | None = None, quant_config: QuantConfig | None = None,
                  parity_bounds: ParityBounds | None = None, n_canaries: int = 4, threads: int = 2,
                  opset: int = 17, evaluate: bool = True, checklist: bool = True,
                  overwrite: bool = False) -> BuildResult:
    """Write a verified package folder at ``out_dir`` and return what went into it.

    ``heldout``: uint8 RGB frames of the fixed held-out set (parity, INT8 gate, canaries, drift reference,
    metrics); ``calibration_images``: uint8 RGB TRAINING frames for INT8 (None: INT8 not attempted, which
    the checklist reports as a FAIL).
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise PackagingError(f"{out} exists and is not empty", "choose a new folder or pass overwrite=True")
    if len(heldout.images) < 2:
        raise PackagingError("the held-out set has fewer than 2 frames", "pass the fixed held-out set")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        result = _build(stage, net, spec, heldout, calibration_images, quant_config, parity_bounds, n_canaries,
                        threads, opset, evaluate, checklist)
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    result.path = out
    return result


def _build(stage: Path, net: nn.Module, spec: PackageSpec, held: HeldOut, calibration: list[np.ndarray] | None,
           qcfg: QuantConfig | None, bounds: ParityBounds | None, n_canaries: int, threads: int, opset: int,
           evaluate: bool, checklist: bool) -> BuildResult:
    net = net.eval()
    x_held = _pre(spec, held.images)
    export_onnx(net, torch.from_numpy(x_held[:2]), stage / FP32_FILE, opset)
    parity = compare_with_torch(net, stage / FP32_FILE, torch.from_numpy(x_held[:64]), bounds).to_dict()
    quant = _quantise(stage, spec, calibration, x_held, held, qcfg)
    bench = _benchmark(net, stage, x_held, quant, threads, spec)
    outs = run_onnx(stage / FP32_FILE, x_held, threads=threads)
    canaries = write_canaries(stage, spec, held, outs, n_canaries)
    names = list(getattr(net, "output_names", []))
    short = hash_file(stage / FP32_FILE)[:8]
    manifest = Manifest(
        name=spec.name, version=f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}-{short}", created_at=time.time(),
        task=spec.task,
        model=ModelFiles(fp32=FP32_FILE, int8=INT8_FILE if quant and quant.kept else None,
                         recommended="int8" if quant and quant.kept else "fp32", outputs=_outputs(names)),
        preprocess=spec.preprocess, class_names=spec.class_names, good_class=spec.good_class,
        temperature=spec.temperature, anomaly=spec.anomaly, canaries=canaries,
        drift_reference=drift_reference(spec, held, outs), data=spec.data, augmentation=spec.augmentation,
        architecture=spec.architecture, metrics=dict(spec.metrics), parity=parity, benchmark=bench,
        latency_target_ms=spec.latency_target_ms, memory_budget_mb=spec.memory_budget_mb,
        target_hardware=spec.target_hardware,
    )
    manifest = write_manifest(stage, manifest)
    if evaluate:
        metrics = {**manifest.metrics, "heldout": evaluate_package(stage, held, threads=threads)}
        if quant is not None and quant.kept:
            metrics["heldout_fp32"] = evaluate_package(stage, held, threads=threads, precision="fp32")
        manifest = write_manifest(stage, manifest.model_copy(update={"metrics": metrics}))
    report: dict[str, Any] = {}
    if checklist:
        report = run_checklist(stage, threads=threads).to_dict()
        manifest = write_manifest(stage, manifest.model_copy(update={"checklist": report}))
    load_package(stage)  # the station's own verification: every hash, every graph
    return BuildResult(stage, manifest, parity, quant, report)
