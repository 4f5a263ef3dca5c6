"""Build a model package folder: export, parity, INT8 gate, canaries, drift reference, benchmark, checklist.

Two phases, so that everything measured about a package lands in ONE write of ``manifest.json``:

1. :func:`prepare_package`: export (run at batch 1, 2 and 8 by ``export_onnx``: a graph with a baked-in
   batch size fails here), parity with PyTorch, the INT8 gate (``quantize_and_gate`` on TRAINING calibration
   frames, judged on held-out frames), benchmark, canaries, held-out drift reference -> a :class:`Draft`
   whose manifest lives in memory.
2. :func:`finish_package`: evaluation through the station runtime on an in-memory ``ModelPackage``
   (:func:`draft_package`), caller extras (line metrics per frame set, gate, drift reference, data
   snapshot: :class:`ManifestExtras`), the checklist, then the single ``write_manifest`` and the station's
   own ``load_package`` verification.

:func:`build_package` runs both in a staging folder beside ``out_dir`` that is renamed into place only
when verified, so a half-built package never exists at ``out_dir``. The retraining (``trainer.retrain``)
runs the phases as separate job steps. Version: ``<name>-<YYYYmmdd-HHMMSS>-<first 8 hex of model.onnx sha256>``.
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from inspector.contracts.config import PolicySection, RuntimeSection, StationConfig
from inspector.contracts.errors import InspectorError
from inspector.contracts.lifecycle import GateReport, LineMetrics
from inspector.contracts.manifest import AnomalySpec, Canary, Manifest, ModelFiles, Outputs, Preprocess
from inspector.drift.reference import histogram
from inspector.models.preprocess import Preprocessor
from inspector.runtime.package import ModelPackage, hash_file, hash_tree, load_package, write_manifest
from trainer.checklist import hardware_description, run_checklist
from trainer.evaluate import GOOD, EvalSet, evaluate_package
from trainer.export import CHECK_BATCHES, ParityBounds, compare_with_torch, export_onnx, open_session, run_onnx
from trainer.network import OUTPUT_MAP, OUTPUT_PROBS, OUTPUT_SCORE
from trainer.precision import RuntimeChoice, select_runtime
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


def _labels(spec: PackageSpec, held: EvalSet) -> np.ndarray | None:
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


def drift_reference(spec: PackageSpec, held: EvalSet, outs: dict[str, np.ndarray]) -> dict[str, Any]:
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


def write_canaries(folder: Path, spec: PackageSpec, held: EvalSet, outs: dict[str, np.ndarray],
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


#: ``refit(int8_graph, scratch) -> net | None``: the network whose scorer was fitted on that INT8 graph's features
#: (``trainer.int8_refit.make_refit``); quantised like the package's own and gated against its fp32 graph.
Int8Refit = Callable[[Path, Path], "nn.Module | None"]


def _quantise(stage: Path, spec: PackageSpec, calibration: list[np.ndarray] | None, x_held: np.ndarray,
              held: EvalSet, cfg: QuantConfig | None, bounds: ParityBounds | None = None,
              refit: Int8Refit | None = None, opset: int = 17,
              ) -> tuple[QuantReport | None, RuntimeChoice | None, dict[str, Any] | None]:
    """The INT8 graph (ONNX Runtime's own gate in ``QuantReport``), then every reduced-precision candidate
    (ONNX Runtime INT8, OpenVINO bf16, OpenVINO INT8) through ``select_runtime``; the INT8 file stays in the
    package only when an INT8 candidate won. With ``refit``, a second INT8 graph whose scorer was fitted on
    INT8 features is gated too, and the better of the two (kept first, then the smaller loss) is the INT8 graph."""
    if calibration is None:
        return None, None, None
    cfg = cfg or QuantConfig()
    labels = _labels(spec, held)
    reject_raw = spec.anomaly.reject_raw if spec.anomaly else None
    calib = list(_pre(spec, calibration))
    refit_info: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        tmp_int8 = Path(tmp) / INT8_FILE
        report = quantize_and_gate(stage / FP32_FILE, tmp_int8, calib, x_held,
                                   labels, cfg, defect_labels=held.is_defect, reject_raw=reject_raw,
                                   keep_declined=True)
        if refit is not None:
            refit_info, refitted = _refit_int8(stage, tmp_int8, Path(tmp), refit, calib, x_held, labels, held,
                                               reject_raw, cfg, opset)
            if refitted is not None and _better(refitted, report):
                shutil.copyfile(Path(tmp) / "refit.int8.onnx", tmp_int8)
                report = refitted
                refit_info["used"] = True
        choice = select_runtime(stage / FP32_FILE, tmp_int8, x_held, labels, held.is_defect, reject_raw, cfg, bounds,
                                ort_int8=report)
        if choice.precision == "int8":
            shutil.copyfile(tmp_int8, stage / INT8_FILE)
        report.int8_path = INT8_FILE if report.kept and choice.precision == "int8" else None
    return report, choice, refit_info


def _better(a: QuantReport, b: QuantReport) -> bool:
    return (a.kept, -(a.metric_fp32 - a.metric_int8)) > (b.kept, -(b.metric_fp32 - b.metric_int8))


def _refit_int8(stage: Path, int8: Path, tmp: Path, refit: Int8Refit, calib: list[np.ndarray], x_held: np.ndarray,
                labels: np.ndarray | None, held: EvalSet, reject_raw: float | None, cfg: QuantConfig,
                opset: int) -> tuple[dict[str, Any], QuantReport | None]:
    from trainer.quantize import gate_quantised, quantize_int8

    net_q = refit(int8, tmp)
    if net_q is None:
        return {"used": False, "reason": "refit not possible for this graph"}, None
    export_onnx(net_q.eval(), torch.from_numpy(x_held[:2]), tmp / "refit.onnx", opset)
    n = quantize_int8(tmp / "refit.onnx", tmp / "refit.int8.onnx", calib, cfg)
    rep = gate_quantised(stage / FP32_FILE, tmp / "refit.int8.onnx", len(calib), n, x_held, labels, cfg,
                         held.is_defect, reject_raw, keep_declined=True)
    return {"used": False, "report": rep.to_dict()}, rep


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


@dataclass
class ManifestExtras:
    """Manifest content the caller measured outside the build (the retraining: its gate, its data snapshot).

    Everything here goes into the ONE write of ``manifest.json``. ``line_metrics`` per frame set override
    the build's own; ``drift_reference`` replaces the build's held-out reference (a retraining builds it
    from good frames of the condition the package will run under); ``data`` and ``metrics`` are merged
    over the spec's; ``version`` replaces the generated one."""

    version: str | None = None
    line_metrics: dict[str, LineMetrics] = field(default_factory=dict)
    gate: GateReport | None = None
    drift_reference: dict[str, Any] | None = None
    data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class Draft:
    """An exported, quantised, benchmarked package folder whose manifest exists only in memory.

    ``stage`` holds the ONNX files and canaries; :func:`draft_package` serves it to the station's runtime
    (``InspectionModel`` needs only the files and the manifest object), so it can be evaluated, gated and
    checked before :func:`finish_package` writes ``manifest.json`` once. :meth:`save` / :meth:`load` keep a
    draft between the retraining job's steps as JSON beside (never inside) the package folder."""

    stage: Path
    manifest: Manifest
    parity: dict[str, Any]
    quant: QuantReport | None

    def save(self, path: str | Path) -> Path:
        body = {"stage": str(self.stage), "manifest": self.manifest.model_dump(mode="json"), "parity": self.parity,
                "quant": self.quant.to_dict() if self.quant else None}
        Path(path).write_text(json.dumps(body, indent=1))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> Draft:
        body = json.loads(Path(path).read_text())
        q = body["quant"]
        return cls(Path(body["stage"]), Manifest.model_validate(body["manifest"]), body["parity"],
                   QuantReport(**q) if q else None)


def draft_package(stage: str | Path, manifest: Manifest) -> ModelPackage:
    """The not-yet-written package as the runtime sees it: files hashed from the folder, no manifest file."""
    filled = manifest.model_copy(update={"files": hash_tree(stage)})
    return ModelPackage(path=Path(stage), manifest=filled, version=filled.version, package_sha256="")


def line_config(threads: int = 2, policy: PolicySection | None = None) -> StationConfig:
    """A station config for scoring a package offline: CPU runtime, ``threads``, the default decision policy."""
    return StationConfig(runtime=RuntimeSection(threads=threads), policy=policy or PolicySection())


def build_package(out_dir: str | Path, net: nn.Module, spec: PackageSpec, heldout: EvalSet,
                  calibration_images: list[np.ndarray] | None = None, quant_config: QuantConfig | None = None,
                  parity_bounds: ParityBounds | None = None, n_canaries: int = 4, threads: int = 2,
                  opset: int = 17, evaluate: bool = True, checklist: bool = True,
                  overwrite: bool = False, extras: ManifestExtras | None = None,
                  say: Callable[[str], None] | None = None, int8_refit: Int8Refit | None = None) -> BuildResult:
    """Write a verified package folder at ``out_dir`` and return what went into it.

    ``heldout``: uint8 RGB frames of the fixed held-out set (parity, INT8 gate, canaries, drift reference,
    metrics, ``line_metrics["heldout"]`` at the default decision policy); ``calibration_images``: uint8 RGB
    TRAINING frames for INT8 (None: INT8 not attempted, which the checklist reports as a FAIL);
    ``extras``: caller-measured manifest content (see :class:`ManifestExtras`). The manifest is written
    once, after evaluation and checklist ran on the in-memory package.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise PackagingError(f"{out} exists and is not empty", "choose a new folder or pass overwrite=True")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        draft = prepare_package(stage, net, spec, heldout, calibration_images, quant_config, parity_bounds,
                                n_canaries, threads, opset, say, int8_refit)
        manifest, report = finish_package(draft, heldout, extras, evaluate=evaluate, checklist=checklist,
                                          threads=threads, say=say)
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return BuildResult(out, manifest, draft.parity, draft.quant, report)


def _say(say: Callable[[str], None] | None) -> Callable[[str], None]:
    return say or (lambda msg: log.info("%s", msg))


def prepare_package(stage: str | Path, net: nn.Module, spec: PackageSpec, held: EvalSet,
                    calibration: list[np.ndarray] | None = None, qcfg: QuantConfig | None = None,
                    bounds: ParityBounds | None = None, n_canaries: int = 4, threads: int = 2, opset: int = 17,
                    say: Callable[[str], None] | None = None, int8_refit: Int8Refit | None = None) -> Draft:
    """Export (checked at several batch sizes by ``export_onnx``), parity, the INT8 gate, benchmark,
    canaries and the held-out drift reference into ``stage``; the manifest stays in memory."""
    say = _say(say)
    stage = Path(stage)
    stage.mkdir(parents=True, exist_ok=True)
    if len(held.images) < 2:
        raise PackagingError("the held-out set has fewer than 2 frames", "pass the fixed held-out set")
    net = net.eval()
    x_held = _pre(spec, held.images)
    say(f"export: ONNX opset {opset}, checked at batch sizes {list(CHECK_BATCHES)}")
    export_onnx(net, torch.from_numpy(x_held[:2]), stage / FP32_FILE, opset)
    parity = compare_with_torch(net, stage / FP32_FILE, torch.from_numpy(x_held[:64]), bounds).to_dict()
    say(f"parity: {'passed' if parity.get('passed') else 'FAILED'} on {min(64, len(x_held))} held-out frames")
    if calibration is not None:
        say(f"INT8: quantising with {len(calibration)} training images, gating on {len(held.images)} held-out frames")
    quant, choice, refit_info = _quantise(stage, spec, calibration, x_held, held, qcfg, bounds, int8_refit, opset)
    if refit_info is not None and "report" in refit_info:
        say(f"INT8 with the scorer refitted on INT8 features: {refit_info['report']['reason']}"
            f"{' (used)' if refit_info['used'] else ''}")
    if quant is not None:
        say(f"INT8 on ONNX Runtime {'passes' if quant.kept else 'fails'} its gate: {quant.reason}")
    if choice is not None:
        say(f"runtime kept: {choice.reason}")
    bench = _benchmark(net, stage, x_held, quant, threads, spec)
    if choice is not None:
        bench["runtime"] = choice.to_dict()
    if refit_info is not None:
        bench["int8_refit"] = refit_info
    say(f"benchmark: torch eager {bench['torch_eager_ms']:.2f} ms, ORT fp32 {bench['fp32_ms']:.2f} ms (batch 1)")
    outs = run_onnx(stage / FP32_FILE, x_held, threads=threads)
    canaries = write_canaries(stage, spec, held, outs, n_canaries)
    names = list(getattr(net, "output_names", []))
    short = hash_file(stage / FP32_FILE)[:8]
    manifest = Manifest(
        name=spec.name, version=f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}-{short}", created_at=time.time(),
        task=spec.task,
        model=ModelFiles(fp32=FP32_FILE, int8=INT8_FILE if choice and choice.precision == "int8" else None,
                         recommended=choice.precision if choice else "fp32",  # type: ignore[arg-type]
                         backend=choice.backend if choice else "onnxruntime",  # type: ignore[arg-type]
                         outputs=_outputs(names)),
        preprocess=spec.preprocess, class_names=spec.class_names, good_class=spec.good_class,
        temperature=spec.temperature, anomaly=spec.anomaly, canaries=canaries,
        drift_reference=drift_reference(spec, held, outs), data=spec.data, augmentation=spec.augmentation,
        architecture=spec.architecture, metrics=dict(spec.metrics), parity=parity, benchmark=bench,
        latency_target_ms=spec.latency_target_ms, memory_budget_mb=spec.memory_budget_mb,
        target_hardware=spec.target_hardware,
    )
    return Draft(stage, manifest, parity, quant)


def finish_package(draft: Draft, held: EvalSet | None, extras: ManifestExtras | None = None, evaluate: bool = True,
                   checklist: bool = True, threads: int = 2,
                   say: Callable[[str], None] | None = None) -> tuple[Manifest, dict[str, Any]]:
    """Evaluate the draft through the station runtime, run the checklist on it, write ``manifest.json``
    ONCE with everything and verify the folder with the station's ``load_package``.

    ``held``: the held-out frames for ``metrics["heldout"]`` (trainer figures: AUROC, ECE, ...) and, unless
    ``extras`` brings them, ``line_metrics["heldout"]`` (what the line does at the default policy)."""
    say = _say(say)
    extras = extras or ManifestExtras()
    m = draft.manifest
    update: dict[str, Any] = {"created_at": time.time()}
    if extras.version:
        update["version"] = extras.version
    if extras.drift_reference is not None:
        update["drift_reference"] = extras.drift_reference
    update["data"] = {**m.data, **extras.data}
    metrics = {**m.metrics, **extras.metrics}
    line = dict(extras.line_metrics)
    m = m.model_copy(update=update)
    if evaluate and held is not None:
        say(f"evaluate: {len(held.images)} held-out frames through the station runtime")
        pkg = draft_package(draft.stage, m)
        metrics["heldout"] = evaluate_package(pkg, held, threads=threads)
        if m.model.recommended != "fp32":
            metrics["heldout_fp32"] = evaluate_package(pkg, held, threads=threads, precision="fp32")
        if "heldout" not in line:
            from inspector.evaluation import line_metrics, score_frames

            scored = score_frames(pkg, held.images, line_config(threads))
            line["heldout"] = line_metrics(scored.decisions, held.label_names)
    m = m.model_copy(update={"metrics": metrics, "line_metrics": line, "gate": extras.gate})
    report: dict[str, Any] = {}
    if checklist:
        say("checklist: latency, memory, INT8, parity, benchmark")
        report = run_checklist(draft_package(draft.stage, m), threads=threads).to_dict()
        m = m.model_copy(update={"checklist": report})
    manifest = write_manifest(draft.stage, m)
    load_package(draft.stage)  # the station's own verification: every hash, every graph
    return manifest, report
