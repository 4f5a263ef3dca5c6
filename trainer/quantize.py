"""INT8 static quantisation with ONNX Runtime, kept only when it is measured faster AND as accurate.

QDQ format, per-channel weights, U8S8 (uint8 activations, int8 weights: 3x faster than S8S8 on this
CPU, see FIELD-NOTES), calibrated on at least ``min_calibration_images`` TRAINING images. Only the
backbone's Conv nodes (optionally the classifier's Gemm/MatMul) are quantised: the anomaly scorer's
distance math and blurs stay fp32. ``quantize_and_gate`` then times fp32 and INT8 side by side
(same threads, batch 1, interleaved, median) and evaluates both on the held-out set; the INT8 file
is deleted unless it is faster by ``min_speedup`` and loses at most ``max_metric_loss``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from pydantic import BaseModel, ConfigDict, Field
from sklearn.metrics import roc_auc_score

from inspector.bench.timing import interleaved
from inspector.contracts.errors import InspectorError
from trainer.export import open_session, run_onnx
from trainer.network import OUTPUT_PROBS, OUTPUT_SCORE

log = logging.getLogger(__name__)

Metric = Literal["accuracy", "auroc"]


class QuantizationError(InspectorError):
    """INT8 quantisation could not run (too few calibration images, no quantisable nodes, ORT failure)."""


class QuantConfig(BaseModel):
    """INT8 quantisation and its keep-or-drop gate."""

    model_config = ConfigDict(extra="forbid")

    min_calibration_images: int = Field(100, ge=1, le=100_000, description="Fewer training images are refused.")
    allow_few_calibration: bool = Field(False, description="Tests only: accept fewer calibration images.")
    op_types: list[Literal["Conv", "Gemm", "MatMul"]] = Field(
        default_factory=lambda: ["Conv"], min_length=1, description="Node types to quantise (backbone scope)."
    )
    scopes: list[str] = Field(
        default_factory=lambda: ["/backbone/"],
        min_length=1,
        description="Node-name prefixes that may be quantised; add '/classifier/' to quantise the head too.",
    )
    keep_fp32: list[str] = Field(
        default_factory=list,
        description="Mixed precision: node-name prefixes left in fp32 although in scope, e.g. "
        "'/backbone/conv_stem/' (the stem cost 1.8 of 4.5 AUROC points on magnetic_tile).",
    )
    per_channel: bool = Field(True, description="Per-channel weight scales.")
    calibrate_method: Literal["minmax", "entropy", "percentile"] = Field("minmax", description="Activation ranges.")
    max_metric_loss: float = Field(0.01, ge=0, le=1, description="Allowed held-out metric loss (0.01 = 1 point).")
    min_speedup: float = Field(1.05, ge=1.0, le=100, description="fp32 ms / int8 ms needed to keep INT8.")
    threads: int = Field(2, ge=1, le=256, description="Intra-op threads for both timings.")
    bench_runs: int = Field(30, ge=3, le=10_000, description="Timed runs per model (median is reported).")
    bench_warmup: int = Field(5, ge=0, le=1000, description="Untimed runs first.")


@dataclass
class QuantReport:
    fp32_ms: float
    int8_ms: float
    speedup: float
    metric: str
    metric_fp32: float
    metric_int8: float
    kept: bool
    reason: str
    n_calibration: int
    quantized_nodes: int
    threads: int
    int8_path: str | None = None
    metrics_fp32: dict[str, float] = field(default_factory=dict)
    metrics_int8: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ImageReader(CalibrationDataReader):
    """Feeds normalised [3,H,W] float32 training images one at a time (batch 1)."""

    def __init__(self, images: Iterable[np.ndarray], input_name: str = "image") -> None:
        self._items = iter([{input_name: np.asarray(img, dtype=np.float32)[None]} for img in images])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


def select_nodes(model_path: str | Path, op_types: Sequence[str], scopes: Sequence[str]) -> list[str]:
    """Names of the nodes of ``op_types`` under any of ``scopes`` (exporter module scope, e.g. '/backbone/')."""
    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type in op_types and n.name.startswith(tuple(scopes))]


def _check_calibration(images: Sequence[np.ndarray], cfg: QuantConfig) -> None:
    if len(images) < cfg.min_calibration_images and not cfg.allow_few_calibration:
        raise QuantizationError(
            f"only {len(images)} calibration images; at least {cfg.min_calibration_images} are needed",
            "pass more TRAINING images (never held-out ones); allow_few_calibration is for tests only",
        )
    if len(images) == 0:
        raise QuantizationError("no calibration images", "pass TRAINING images")


class _DropPreprocessingAdvice(logging.Filter):
    """ORT's quantiser logs "Please consider (to run) pre-processing before quantization" on the root logger at
    every call; our graphs are exported with shapes inferred and optimised (``trainer.export``), so it is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextlib.contextmanager
def _quiet_preprocessing_advice() -> Iterator[None]:
    root = logging.getLogger()
    drop = _DropPreprocessingAdvice()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def quantize_int8(
    fp32_path: str | Path,
    int8_path: str | Path,
    calibration_images: Sequence[np.ndarray],
    cfg: QuantConfig | None = None,
) -> int:
    """Write the INT8 QDQ model; return the number of quantised nodes."""
    cfg = cfg or QuantConfig()
    _check_calibration(calibration_images, cfg)
    nodes = [n for n in select_nodes(fp32_path, cfg.op_types, cfg.scopes) if not n.startswith(tuple(cfg.keep_fp32))]
    if not nodes:
        raise QuantizationError(
            f"{fp32_path} has no {cfg.op_types} nodes under {cfg.scopes}",
            "export with the legacy exporter so node names keep their module scope",
        )
    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[cfg.calibrate_method]
    input_name = open_session(fp32_path).get_inputs()[0].name
    try:
        with _quiet_preprocessing_advice():
            quantize_static(
                str(fp32_path),
                str(int8_path),
                ImageReader(calibration_images, input_name),
                quant_format=QuantFormat.QDQ,
                per_channel=cfg.per_channel,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=list(cfg.op_types),
                nodes_to_quantize=nodes,
                calibrate_method=method,
            )
    except Exception as err:  # noqa: BLE001 - ORT quantisation raises many types
        raise QuantizationError(
            f"INT8 quantisation of {fp32_path} failed: {err}", "quantise fewer node types (Conv only) or keep fp32"
        ) from None
    rewired = keep_fp32_inputs_outside(int8_path, cfg.scopes)
    log.info("INT8: %d nodes quantised, %d inputs outside the scope rewired to fp32", len(nodes), rewired)
    return len(nodes)


def keep_fp32_inputs_outside(model_path: str | Path, scopes: Sequence[str]) -> int:
    """Rewire nodes outside ``scopes`` that read a Q->DQ copy of a tensor to the fp32 tensor itself.

    ORT shares one Q/DQ pair among all consumers of a tensor, so a backbone feature that feeds both a
    quantised Conv and the anomaly scorer would reach the scorer rounded to 8 bits. The scorer must see
    exactly what the fp32 backbone computed.
    """
    model = onnx.load(str(model_path))
    q_in = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    dq_src = {
        n.output[0]: q_in[n.input[0]]
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in q_in
    }
    count = 0
    for node in model.graph.node:
        if node.name.startswith(tuple(scopes)) or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for k, name in enumerate(node.input):
            if name in dq_src:
                node.input[k] = dq_src[name]
                count += 1
    if count:
        onnx.save(model, str(model_path))
    return count


GATE_TURN_FRAMES = 5  # frames per backend per turn; the first refills its caches and is not timed
GATE_SETTLE_S = 0.03  # pause before each turn: a thread pool that spins after its last task goes idle first


def time_in_turns(fns: Sequence[Callable[[], object]], runs: int, warmup: int) -> list[float]:
    """Median ms of each function at batch 1, timed in warm turns (``GATE_TURN_FRAMES`` frames each, as a
    station runs one model frame after frame), the functions taking turns so load hits all alike.

    Frame-by-frame alternation is unfair on 2 cores: ONNX Runtime's intra-op threads spin after each run and
    steal the cores from whatever runs next (measured on magnetic_tile: OpenVINO bf16 took 10.1 ms right after
    an ONNX Runtime run, 5.0 ms alone; in warm turns after a 10-300 ms pause it took 5.3-5.7 ms, steadily)."""
    res = interleaved(
        {str(k): fn for k, fn in enumerate(fns)}, runs, warmup, block=GATE_TURN_FRAMES, settle_s=GATE_SETTLE_S
    )
    return [res[str(k)]["p50_ms"] for k in range(len(fns))]


def benchmark_pair(
    fp32_path: str | Path,
    int8_path: str | Path,
    input_shape: Sequence[int],
    threads: int = 2,
    runs: int = 30,
    warmup: int = 5,
) -> tuple[float, float]:
    """Median ms of each model at batch 1 with the same threads, timed in turns (``time_in_turns``)."""
    sessions = [open_session(fp32_path, threads), open_session(int8_path, threads)]
    x = np.random.default_rng(0).standard_normal((1, *input_shape[-3:])).astype(np.float32)
    feeds = [{s.get_inputs()[0].name: x} for s in sessions]
    fp32_ms, int8_ms = time_in_turns(
        [partial(s.run, None, f) for s, f in zip(sessions, feeds, strict=True)], runs, warmup
    )
    return fp32_ms, int8_ms


def heldout_metrics(
    model_path: str | Path,
    images: np.ndarray,
    labels: np.ndarray | None,
    threads: int = 2,
    defect_labels: np.ndarray | None = None,
) -> dict[str, float]:
    """Every held-out metric the model's outputs allow: accuracy (``labels`` = class indices) when it has
    class_probs; auroc (1 = defect: ``defect_labels``, or ``labels`` for a score-only model) when it has a score."""
    return metrics_from_outputs(run_onnx(model_path, images, threads=threads), labels, defect_labels)


def metrics_from_outputs(
    out: dict[str, np.ndarray], labels: np.ndarray | None, defect_labels: np.ndarray | None = None
) -> dict[str, float]:
    """``heldout_metrics`` of outputs already computed (by any backend)."""
    metrics: dict[str, float] = {}
    if OUTPUT_PROBS in out and labels is not None:
        metrics["accuracy"] = float(np.mean(out[OUTPUT_PROBS].argmax(1) == labels))
    if OUTPUT_SCORE in out and (defect_labels is not None or labels is not None):
        y = np.asarray(defect_labels if defect_labels is not None else labels).astype(int)
        metrics["auroc"] = float(roc_auc_score(y, out[OUTPUT_SCORE])) if len(set(y.tolist())) == 2 else float("nan")
    return metrics


def gate(
    fp32_ms: float, int8_ms: float, metric_fp32: float, metric_int8: float, metric: str, cfg: QuantConfig
) -> tuple[bool, str]:
    """Keep INT8 only if faster by ``min_speedup`` and losing at most ``max_metric_loss``; say why."""
    speedup = fp32_ms / int8_ms if int8_ms > 0 else 0.0
    loss = metric_fp32 - metric_int8
    if not np.isfinite(loss):
        return False, f"held-out {metric} could not be measured"
    if loss > cfg.max_metric_loss + 1e-12:
        return False, (
            f"INT8 loses {loss * 100:.2f} points of held-out {metric} "
            f"({metric_fp32:.4f} -> {metric_int8:.4f}), budget {cfg.max_metric_loss * 100:.2f}"
        )
    if speedup < cfg.min_speedup:
        return False, (
            f"INT8 not faster on this target: {int8_ms:.2f} ms vs fp32 {fp32_ms:.2f} ms "
            f"(x{speedup:.2f} < x{cfg.min_speedup:.2f})"
        )
    return True, (
        f"INT8 x{speedup:.2f} faster ({int8_ms:.2f} vs {fp32_ms:.2f} ms), {metric} "
        f"{metric_fp32:.4f} -> {metric_int8:.4f} within {cfg.max_metric_loss * 100:.2f} points"
    )


def line_agreement(
    fp32_path: str | Path, int8_path: str | Path, images: np.ndarray, reject_raw: float, threads: int = 2
) -> float:
    """Share of held-out frames the line would judge alike (raw score above ``reject_raw`` or not) with both models.

    AUROC and accuracy are blind to a shift of every score: a quantised graph can rank frames exactly as the fp32
    one and still move them all across the threshold the package was calibrated for."""
    s32 = run_onnx(fp32_path, images, threads=threads)[OUTPUT_SCORE]
    s8 = run_onnx(int8_path, images, threads=threads)[OUTPUT_SCORE]
    return float(np.mean((s32 > reject_raw) == (s8 > reject_raw)))


def quantize_and_gate(
    fp32_path: str | Path,
    int8_path: str | Path,
    calibration_images: Sequence[np.ndarray],
    heldout_images: np.ndarray,
    heldout_labels: np.ndarray | None,
    cfg: QuantConfig | None = None,
    defect_labels: np.ndarray | None = None,
    reject_raw: float | None = None,
    keep_declined: bool = False,
) -> QuantReport:
    """Quantise, benchmark both, evaluate both on the held-out set, keep or delete ``int8_path``.

    ``reject_raw``: the raw score the line rejects from; INT8 must then also judge the held-out frames as fp32
    does (``line_agreement``, within the same loss budget).

    Every metric the outputs allow is gated (a combined model must keep both accuracy and AUROC); the
    report names the metric that lost most."""
    cfg = cfg or QuantConfig()
    n_nodes = quantize_int8(fp32_path, int8_path, calibration_images, cfg)
    return gate_quantised(
        fp32_path,
        int8_path,
        len(calibration_images),
        n_nodes,
        heldout_images,
        heldout_labels,
        cfg,
        defect_labels,
        reject_raw,
        keep_declined,
    )


def gate_quantised(
    fp32_path: str | Path,
    int8_path: str | Path,
    n_calibration: int,
    n_nodes: int,
    heldout_images: np.ndarray,
    heldout_labels: np.ndarray | None,
    cfg: QuantConfig,
    defect_labels: np.ndarray | None = None,
    reject_raw: float | None = None,
    keep_declined: bool = False,
) -> QuantReport:
    """The gate of ``quantize_and_gate`` on an INT8 graph already written (e.g. one whose scorer was refitted
    on INT8 features: ``trainer.int8_refit``), judged against ``fp32_path``."""
    fp32_ms, int8_ms = benchmark_pair(
        fp32_path, int8_path, heldout_images.shape, cfg.threads, cfg.bench_runs, cfg.bench_warmup
    )
    m32 = heldout_metrics(fp32_path, heldout_images, heldout_labels, cfg.threads, defect_labels)
    m8 = heldout_metrics(int8_path, heldout_images, heldout_labels, cfg.threads, defect_labels)
    if reject_raw is not None and "auroc" in m32:  # the operating point too, not only the ranking
        m32["line_agreement"] = 1.0
        m8["line_agreement"] = line_agreement(fp32_path, int8_path, heldout_images, reject_raw, cfg.threads)
    metric = max(m32, key=lambda k: (m32[k] - m8[k]) if np.isfinite(m32[k] - m8[k]) else np.inf)
    kept, reason = gate(fp32_ms, int8_ms, m32[metric], m8[metric], metric, cfg)
    if not kept and not keep_declined:  # keep_declined: other backends still try the graph (trainer.precision)
        Path(int8_path).unlink(missing_ok=True)
    log.info("INT8 gate: %s", reason)
    return QuantReport(
        fp32_ms=fp32_ms,
        int8_ms=int8_ms,
        speedup=fp32_ms / int8_ms if int8_ms > 0 else 0.0,
        metric=metric,
        metric_fp32=m32[metric],
        metric_int8=m8[metric],
        kept=kept,
        reason=reason,
        n_calibration=n_calibration,
        quantized_nodes=n_nodes,
        threads=cfg.threads,
        int8_path=str(int8_path) if kept else None,
        metrics_fp32=m32,
        metrics_int8=m8,
    )
