"""Which backend and precision a package runs at: every reduced-precision candidate through the same gate.

Candidates, each measured against the package's own ONNX Runtime fp32 run on this machine:

- ``onnxruntime int8``: the static QDQ INT8 graph (``trainer.quantize``);
- ``openvino bf16``: the fp32 graph compiled by OpenVINO with a bf16 inference precision (AVX512-BF16/AMX CPUs),
  whole, or in f32 up to the end of one backbone stage (mixed), or (anomaly packages) the network whose scorer
  was fitted on OpenVINO's bf16 features (``trainer.bf16_refit``, file ``bf16``);
- ``openvino int8``: the QDQ INT8 graph compiled by OpenVINO (INT8 kernels, VNNI/AMX-INT8).

OpenVINO candidates first pass the parity gate (``ParityBounds``) of OpenVINO f32 against ONNX Runtime fp32
on the held-out frames, so a graph OpenVINO computes differently never gets as far as the precision gate.
Every candidate is timed interleaved with the fp32 baseline (batch 1, same threads, median of the turns)
and evaluated on the held-out frames with ``trainer.quantize.gate``: kept only if it is ``min_speedup``
faster and loses at most ``max_metric_loss`` of every held-out metric (line agreement at the reject score
included). The fastest kept candidate wins; none kept: ONNX Runtime fp32. The choice, all candidates'
figures and the CPU (model name, the flags that matter) go into the manifest (``benchmark.runtime``).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from inspector.contracts.config import RuntimeSection
from inspector.runtime.base import Runner, create_runner
from trainer.export import ParityBounds, ParityReport, _check_bounds
from trainer.network import OUTPUT_SCORE
from trainer.quantize import QuantConfig, QuantReport, gate, metrics_from_outputs, time_in_turns

log = logging.getLogger(__name__)


@dataclass
class CandidateReport:
    backend: str
    precision: str
    file: str
    ms: float
    speedup: float
    metrics: dict[str, float]
    metric: str
    metric_loss_points: float
    kept: bool
    reason: str
    f32_until: str | None = None  # mixed bf16: the graph up to this tensor ran in f32


@dataclass
class RuntimeChoice:
    """What the package runs at, and why (``to_dict`` is ``benchmark.runtime`` of the manifest)."""

    backend: str = "onnxruntime"
    precision: str = "fp32"
    file: str = "fp32"
    f32_until: str | None = None
    speedup_vs_fp32: float = 1.0
    metric_loss_points: float = 0.0
    fp32_ms: float = 0.0
    reason: str = "no reduced precision kept: ONNX Runtime fp32"
    metrics_fp32: dict[str, float] = field(default_factory=dict)
    candidates: list[CandidateReport] = field(default_factory=list)
    cpu: dict[str, Any] = field(default_factory=dict)
    threads: int = 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def open_runner(path: Path, backend: str, precision: str, threads: int, f32_until: str | None = None) -> Runner:
    """A station runner (the same classes the worker uses) for one candidate."""
    section = RuntimeSection(threads=threads, precision=precision)  # type: ignore[arg-type]
    return create_runner(path, section, backend=backend, f32_until=f32_until)


def run_all(runner: Runner, images: np.ndarray, batch: int = 8) -> dict[str, np.ndarray]:
    chunks = [runner.run(np.ascontiguousarray(images[i : i + batch], np.float32)) for i in range(0, len(images), batch)]
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def time_interleaved(runners: list[Runner], x1: np.ndarray, runs: int, warmup: int) -> list[float]:
    """Median ms per runner at batch 1, in warm turns (``trainer.quantize.time_in_turns``)."""
    return time_in_turns([partial(r.run, x1) for r in runners], runs, warmup)


def _agreement(ref: dict[str, np.ndarray], got: dict[str, np.ndarray], reject_raw: float) -> float:
    return float(np.mean((ref[OUTPUT_SCORE] > reject_raw) == (got[OUTPUT_SCORE] > reject_raw)))


_Candidate = tuple[str, str, str, str | None]  # backend, precision, file (fp32 | int8 | bf16), f32_until
_REFIT = {"bf16": " (scorer fitted on bf16 features)"}


def _candidates(
    fp32_path: Path, int8_path: Path | None, backends: tuple[str, ...], bf16_path: Path | None = None
) -> list[_Candidate]:
    out: list[_Candidate] = []
    if int8_path is not None and "onnxruntime" in backends:
        out.append(("onnxruntime", "int8", "int8", None))
    if "openvino" in backends:
        from inspector.runtime.graph_split import stage_cuts
        from inspector.runtime.openvino_runner import cpu_capabilities, openvino_available

        if openvino_available():
            if "BF16" in cpu_capabilities():
                out.append(("openvino", "bf16", "fp32", None))
                # mixed: the backbone up to the end of one stage in f32 (bf16's error starts in the first stages)
                out.extend(("openvino", "bf16", "fp32", cut) for cut in stage_cuts(fp32_path).values())
                if bf16_path is not None:
                    out.append(("openvino", "bf16", "bf16", None))
            if int8_path is not None:
                out.append(("openvino", "int8", "int8", None))
    return out


def select_runtime(
    fp32_path: str | Path,
    int8_path: str | Path | None,
    heldout: np.ndarray,
    labels: np.ndarray | None,
    defect_labels: np.ndarray | None = None,
    reject_raw: float | None = None,
    cfg: QuantConfig | None = None,
    bounds: ParityBounds | None = None,
    backends: tuple[str, ...] = ("onnxruntime", "openvino"),
    ort_int8: QuantReport | None = None,
    bf16_path: str | Path | None = None,
) -> RuntimeChoice:
    """Gate every reduced-precision candidate against ONNX Runtime fp32; return the fastest one kept.

    ``ort_int8``: ONNX Runtime INT8 already gated by ``quantize_and_gate`` (its own interleaved timing): taken
    as it is, so the package never holds two verdicts on the same candidate. ``bf16_path``: the network whose
    scorer was fitted on bf16 features (``trainer.bf16_refit``), a candidate of its own (file ``bf16``)."""
    from inspector.runtime.openvino_runner import cpu_description

    cfg = cfg or QuantConfig()
    fp32_path = Path(fp32_path)
    int8 = Path(int8_path) if int8_path is not None and Path(int8_path).is_file() else None
    base = open_runner(fp32_path, "onnxruntime", "fp32", cfg.threads)
    ref = run_all(base, heldout)
    m32 = metrics_from_outputs(ref, labels, defect_labels)
    if reject_raw is not None and OUTPUT_SCORE in ref:
        m32["line_agreement"] = 1.0
    choice = RuntimeChoice(metrics_fp32=m32, cpu=cpu_description(), threads=cfg.threads)
    if ort_int8 is not None and int8 is not None and "onnxruntime" in backends:
        q = ort_int8
        choice.candidates.append(
            CandidateReport(
                "onnxruntime",
                "int8",
                "int8",
                q.int8_ms,
                q.speedup,
                q.metrics_int8,
                q.metric,
                (q.metric_fp32 - q.metric_int8) * 100,
                q.kept,
                "onnxruntime int8: " + q.reason,
            )
        )
    evidence = _HeldoutEvidence(heldout, labels, defect_labels, reject_raw, ref, m32)
    files = {"fp32": fp32_path, "int8": int8, "bf16": Path(bf16_path) if bf16_path is not None else None}
    runners = _open_candidates(choice, files, backends, ort_int8 is not None, evidence, cfg, bounds or ParityBounds())
    if not runners and ort_int8 is not None:
        choice.fp32_ms = ort_int8.fp32_ms
    elif runners:
        _time_and_gate(choice, base, runners, heldout, m32, cfg)
    else:
        choice.fp32_ms = time_interleaved([base], heldout[:1].astype(np.float32), cfg.bench_runs, cfg.bench_warmup)[0]
    base.close()
    _pick_fastest_kept(choice)
    log.info("runtime: %s", choice.reason)
    return choice


@dataclass
class _HeldoutEvidence:
    """The held-out frames, their labels and the fp32 reference every candidate is compared with."""

    images: np.ndarray
    labels: np.ndarray | None
    defect_labels: np.ndarray | None
    reject_raw: float | None
    ref: dict[str, np.ndarray]
    metrics_fp32: dict[str, float]


_OpenedCandidate = tuple[_Candidate, Runner, dict[str, float]]


def _open_candidates(
    choice: RuntimeChoice,
    files: dict[str, Path | None],
    backends: tuple[str, ...],
    ort_int8_gated: bool,
    evidence: _HeldoutEvidence,
    cfg: QuantConfig,
    bounds: ParityBounds,
) -> list[_OpenedCandidate]:
    """Open and evaluate each candidate; a declined one (parity, could not open) goes straight to ``choice``."""
    fp32_path = files["fp32"]
    assert fp32_path is not None
    runners: list[_OpenedCandidate] = []
    ov_parity: str | None = None
    for cand in _candidates(fp32_path, files["int8"], backends, files["bf16"]):
        if ort_int8_gated and cand[0] == "onnxruntime":
            continue
        backend, precision, which, f32_until = cand
        if backend == "openvino" and ov_parity is None:
            ov_parity = _openvino_parity(fp32_path, evidence.images, evidence.ref, cfg.threads, bounds)
        if backend == "openvino" and ov_parity:
            choice.candidates.append(
                _declined(cand, "parity", f"OpenVINO f32 fails parity with ONNX Runtime fp32: {ov_parity}")
            )
            continue
        try:
            runner = open_runner(files[which], backend, precision, cfg.threads, f32_until)  # type: ignore[arg-type]
        except Exception as err:  # noqa: BLE001 - a backend that cannot open this graph is a declined candidate
            choice.candidates.append(_declined(cand, "open", f"could not open: {str(err).splitlines()[0][:200]}"))
            continue
        got = run_all(runner, evidence.images)
        mc = metrics_from_outputs(got, evidence.labels, evidence.defect_labels)
        if "line_agreement" in evidence.metrics_fp32 and evidence.reject_raw is not None:
            mc["line_agreement"] = _agreement(evidence.ref, got, evidence.reject_raw)
        runners.append((cand, runner, mc))
    return runners


def _declined(cand: _Candidate, metric: str, reason: str) -> CandidateReport:
    backend, precision, which, f32_until = cand
    return CandidateReport(backend, precision, which, 0.0, 0.0, {}, metric, 0.0, False, reason, f32_until)


def _time_and_gate(
    choice: RuntimeChoice,
    base: Runner,
    runners: list[_OpenedCandidate],
    heldout: np.ndarray,
    m32: dict[str, float],
    cfg: QuantConfig,
) -> None:
    """Time the opened candidates interleaved with fp32, gate each and close it."""
    times = time_interleaved(
        [base] + [r for _, r, _ in runners], heldout[:1].astype(np.float32), max(cfg.bench_runs, 40), cfg.bench_warmup
    )
    choice.fp32_ms = times[0]
    for ((backend, precision, which, f32_until), runner, mc), ms in zip(runners, times[1:], strict=True):
        loss = {k: m32[k] - mc[k] for k in m32 if k in mc}
        metric = max(loss, key=lambda k: loss[k] if np.isfinite(loss[k]) else np.inf)
        kept, reason = gate(times[0], ms, m32[metric], mc[metric], metric, cfg)
        label = f"{backend} {precision}" + (f" (f32 up to {f32_until})" if f32_until else "") + _REFIT.get(which, "")
        reason = f"{label}: " + reason.replace("INT8", precision.upper())
        choice.candidates.append(
            CandidateReport(
                backend,
                precision,
                which,
                ms,
                times[0] / ms if ms > 0 else 0.0,
                mc,
                metric,
                loss[metric] * 100,
                kept,
                reason,
                f32_until,
            )
        )
        runner.close()


def _pick_fastest_kept(choice: RuntimeChoice) -> None:
    kept = [c for c in choice.candidates if c.kept]
    if kept:
        best = max(kept, key=lambda c: c.speedup)
        choice.backend, choice.precision, choice.file = best.backend, best.precision, best.file
        choice.f32_until = best.f32_until
        choice.speedup_vs_fp32, choice.metric_loss_points, choice.reason = (
            best.speedup,
            best.metric_loss_points,
            best.reason,
        )
    elif choice.candidates:
        choice.reason = "no reduced precision kept (" + "; ".join(c.reason for c in choice.candidates) + ")"


def _openvino_parity(
    fp32_path: Path, heldout: np.ndarray, ref: dict[str, np.ndarray], threads: int, bounds: ParityBounds
) -> str:
    """'' when OpenVINO f32 reproduces ONNX Runtime fp32 within the parity bounds, else the failures."""
    try:
        got = run_all(open_runner(fp32_path, "openvino", "fp32", threads), heldout[:64])
    except Exception as err:  # noqa: BLE001
        return f"could not open: {str(err).splitlines()[0][:200]}"
    report = ParityReport(n_images=min(64, len(heldout)), bounds=bounds.model_dump())
    sub = {k: v[:64].astype(np.float64) for k, v in ref.items()}
    for name, r in sub.items():
        diff = float(np.max(np.abs(got[name].astype(np.float64) - r))) if r.size else 0.0
        report.max_abs_diff[name] = diff
        report.max_rel_diff[name] = diff / max(1.0, float(np.max(np.abs(r))) if r.size else 1.0)
    _check_bounds(report, sub, got, bounds)
    return "; ".join(report.failures)
