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
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from inspector.contracts.config import PolicySection, RuntimeSection, StationConfig
from inspector.contracts.lifecycle import GateReport, LineMetrics
from inspector.contracts.manifest import Canary, Manifest, ModelFiles, Outputs
from inspector.runtime.package import ModelPackage, hash_file, hash_tree, load_package, write_manifest
from trainer.checklist import run_checklist
from trainer.evaluate import EvalSet, evaluate_package
from trainer.export import CHECK_BATCHES, ParityBounds, compare_with_torch, export_onnx, run_onnx
from trainer.network import OUTPUT_MAP, OUTPUT_PROBS, OUTPUT_SCORE
from trainer.package_benchmark import benchmark, ort_ms, torch_eager_ms
from trainer.package_canaries import CANARY_SURE_FAIL, CANARY_SURE_PASS, CANARY_SURE_PROB, write_canaries
from trainer.package_drift import HIST_BINS, drift_reference
from trainer.package_int8 import RefitHook, quantise
from trainer.package_spec import (
    BF16_FILE,
    FP32_FILE,
    INT8_FILE,
    PackageSpec,
    PackagingError,
    heldout_class_labels,
    preprocess_frames,
)
from trainer.precision import RuntimeChoice
from trainer.quantize import QuantConfig, QuantReport

__all__ = [
    "CANARY_SURE_FAIL",
    "CANARY_SURE_PASS",
    "CANARY_SURE_PROB",
    "FP32_FILE",
    "HIST_BINS",
    "INT8_FILE",
    "BuildResult",
    "Draft",
    "RefitHook",
    "ManifestExtras",
    "PackageSpec",
    "PackagingError",
    "build_package",
    "draft_package",
    "drift_reference",
    "finish_package",
    "heldout_class_labels",
    "line_config",
    "ort_ms",
    "prepare_package",
    "preprocess_frames",
    "torch_eager_ms",
    "write_canaries",
]

log = logging.getLogger(__name__)


@dataclass
class BuildResult:
    """What ``build_package`` wrote: the folder, its manifest, and the parity, INT8 and checklist reports."""

    path: Path
    manifest: Manifest
    parity: dict[str, Any]
    quant: QuantReport | None
    checklist: dict[str, Any]


def _outputs(names: list[str]) -> Outputs:
    """Which output names of the graph carry class probabilities, the anomaly score and the map."""
    return Outputs(
        class_probs=OUTPUT_PROBS if OUTPUT_PROBS in names else None,
        anomaly_score=OUTPUT_SCORE if OUTPUT_SCORE in names else None,
        anomaly_map=OUTPUT_MAP if OUTPUT_MAP in names else None,
    )


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
        body = {
            "stage": str(self.stage),
            "manifest": self.manifest.model_dump(mode="json"),
            "parity": self.parity,
            "quant": self.quant.to_dict() if self.quant else None,
        }
        Path(path).write_text(json.dumps(body, indent=1))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> Draft:
        body = json.loads(Path(path).read_text())
        q = body["quant"]
        return cls(
            Path(body["stage"]),
            Manifest.model_validate(body["manifest"]),
            body["parity"],
            QuantReport(**q) if q else None,
        )


def draft_package(stage: str | Path, manifest: Manifest) -> ModelPackage:
    """The not-yet-written package as the runtime sees it: files hashed from the folder, no manifest file."""
    filled = manifest.model_copy(update={"files": hash_tree(stage)})
    return ModelPackage(path=Path(stage), manifest=filled, version=filled.version, package_sha256="")


def line_config(threads: int = 2, policy: PolicySection | None = None) -> StationConfig:
    """A station config for scoring a package offline: CPU runtime, ``threads``, the default decision policy."""
    return StationConfig(runtime=RuntimeSection(threads=threads), policy=policy or PolicySection())


def build_package(
    out_dir: str | Path,
    net: nn.Module,
    spec: PackageSpec,
    heldout: EvalSet,
    calibration_images: list[np.ndarray] | None = None,
    quant_config: QuantConfig | None = None,
    parity_bounds: ParityBounds | None = None,
    n_canaries: int = 4,
    threads: int = 2,
    opset: int = 17,
    evaluate: bool = True,
    checklist: bool = True,
    overwrite: bool = False,
    extras: ManifestExtras | None = None,
    say: Callable[[str], None] | None = None,
    int8_refit: RefitHook | None = None,
    bf16_refit: RefitHook | None = None,
) -> BuildResult:
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
        draft = prepare_package(
            stage,
            net,
            spec,
            heldout,
            calibration_images,
            quant_config,
            parity_bounds,
            n_canaries,
            threads,
            opset,
            say,
            int8_refit,
            bf16_refit,
        )
        manifest, report = finish_package(
            draft, heldout, extras, evaluate=evaluate, checklist=checklist, threads=threads, say=say
        )
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return BuildResult(out, manifest, draft.parity, draft.quant, report)


def _say(say: Callable[[str], None] | None) -> Callable[[str], None]:
    return say or (lambda msg: log.info("%s", msg))


def prepare_package(
    stage: str | Path,
    net: nn.Module,
    spec: PackageSpec,
    held: EvalSet,
    calibration: list[np.ndarray] | None = None,
    qcfg: QuantConfig | None = None,
    bounds: ParityBounds | None = None,
    n_canaries: int = 4,
    threads: int = 2,
    opset: int = 17,
    say: Callable[[str], None] | None = None,
    int8_refit: RefitHook | None = None,
    bf16_refit: RefitHook | None = None,
) -> Draft:
    """Export (checked at several batch sizes by ``export_onnx``), parity, the INT8 gate, benchmark,
    canaries and the held-out drift reference into ``stage``; the manifest stays in memory."""
    say = _say(say)
    stage = Path(stage)
    stage.mkdir(parents=True, exist_ok=True)
    if len(held.images) < 2:
        raise PackagingError("the held-out set has fewer than 2 frames", "pass the fixed held-out set")
    net = net.eval()
    x_held = preprocess_frames(spec, held.images)
    say(f"export: ONNX opset {opset}, checked at batch sizes {list(CHECK_BATCHES)}")
    export_onnx(net, torch.from_numpy(x_held[:2]), stage / FP32_FILE, opset)
    parity = compare_with_torch(net, stage / FP32_FILE, torch.from_numpy(x_held[:64]), bounds).to_dict()
    say(f"parity: {'passed' if parity.get('passed') else 'FAILED'} on {min(64, len(x_held))} held-out frames")
    if calibration is not None:
        say(f"INT8: quantising with {len(calibration)} training images, gating on {len(held.images)} held-out frames")
    quant, choice, refit_info = quantise(
        stage, spec, calibration, x_held, held, qcfg, bounds, int8_refit, opset, bf16_refit
    )
    _say_int8_outcome(say, quant, choice, refit_info)
    bench = benchmark(net, stage, x_held, quant, threads, spec)
    if choice is not None:
        bench["runtime"] = choice.to_dict()
    if refit_info is not None:
        bench["int8_refit"] = refit_info
    say(f"benchmark: torch eager {bench['torch_eager_ms']:.2f} ms, ORT fp32 {bench['fp32_ms']:.2f} ms (batch 1)")
    outs = run_onnx(stage / FP32_FILE, x_held, threads=threads)
    canaries = write_canaries(stage, spec, held, outs, n_canaries)
    drift = drift_reference(spec, held, outs)
    manifest = _draft_manifest(
        stage, spec, list(getattr(net, "output_names", [])), choice, canaries, drift, parity, bench
    )
    return Draft(stage, manifest, parity, quant)


def _say_int8_outcome(
    say: Callable[[str], None],
    quant: QuantReport | None,
    choice: RuntimeChoice | None,
    refit_info: dict[str, Any] | None,
) -> None:
    """What the INT8 step decided: the scorer refit on INT8 features, the INT8 gate, the runtime kept."""
    if refit_info is not None and "report" in refit_info:
        say(
            f"INT8 with the scorer refitted on INT8 features: {refit_info['report']['reason']}"
            f"{' (used)' if refit_info['used'] else ''}"
        )
    if quant is not None:
        say(f"INT8 on ONNX Runtime {'passes' if quant.kept else 'fails'} its gate: {quant.reason}")
    if choice is not None:
        say(f"runtime kept: {choice.reason}")


def _draft_manifest(
    stage: Path,
    spec: PackageSpec,
    names: list[str],
    choice: RuntimeChoice | None,
    canaries: list[Canary],
    drift: dict[str, Any],
    parity: dict[str, Any],
    bench: dict[str, Any],
) -> Manifest:
    """The draft's manifest: the spec, the FP32 file's hash in the version, the runtime kept and the checks' results."""
    short = hash_file(stage / FP32_FILE)[:8]
    return Manifest(
        name=spec.name,
        version=f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}-{short}",
        created_at=time.time(),
        task=spec.task,
        model=ModelFiles(
            fp32=FP32_FILE,
            int8=INT8_FILE if choice and choice.precision == "int8" else None,
            bf16=BF16_FILE if choice and choice.file == "bf16" else None,
            recommended=choice.precision if choice else "fp32",  # type: ignore[arg-type]
            backend=choice.backend if choice else "onnxruntime",  # type: ignore[arg-type]
            f32_until=choice.f32_until if choice else None,
            outputs=_outputs(names),
        ),
        preprocess=spec.preprocess,
        class_names=spec.class_names,
        good_class=spec.good_class,
        temperature=spec.temperature,
        anomaly=spec.anomaly,
        canaries=canaries,
        drift_reference=drift,
        data=spec.data,
        augmentation=spec.augmentation,
        architecture=spec.architecture,
        metrics=dict(spec.metrics),
        parity=parity,
        benchmark=bench,
        latency_target_ms=spec.latency_target_ms,
        memory_budget_mb=spec.memory_budget_mb,
        target_hardware=spec.target_hardware,
    )


def finish_package(
    draft: Draft,
    held: EvalSet | None,
    extras: ManifestExtras | None = None,
    evaluate: bool = True,
    checklist: bool = True,
    threads: int = 2,
    say: Callable[[str], None] | None = None,
) -> tuple[Manifest, dict[str, Any]]:
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
