"""The same model through every backend in one run, timed interleaved: PyTorch eager, ONNX Runtime FP32 and
INT8, CUDA / TensorRT (when a GPU exists); and, for an anomaly package, ours against anomalib's own
deployment paths (TorchInferencer, OpenVINOInferencer) fitted on the same split (``ours_vs_anomalib``).

The torch model is rebuilt from the package's recorded ``architecture``: the tiny numpy-built package maps to
an equivalent torch module with the package's own weights; a timm ``backbone`` is built with the same shape
(timing only: weights are not needed to time it). A reference CNN (timm resnet18, 224 px) can be added so
the ratios are also shown on a network where INT8 matters.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from inspector.bench.timing import PACED_GAP_S, interleaved
from inspector.plugins import PluginMissing, provider
from inspector.runtime.package import ModelPackage

log = logging.getLogger(__name__)

BATCHES = (1, 8)


def _ort_session(
    path: Path,
    threads: int,
    providers: list[str] | None = None,  # type: ignore[no-untyped-def]
    spinning: bool = False,
):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # Spinning (ONNX Runtime's default, and the station's) keeps pool threads busy for a moment after a run.
    # "cold" turns alternate backends frame by frame, so it is off there: the spin would starve the next
    # backend's timed run. "warm" turns keep it on: the spin tail falls on the next backend's untimed refill run.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])


def _ort_fn(
    path: Path, x: np.ndarray, threads: int, providers: list[str] | None = None, spinning: bool = False
) -> Callable[[], object]:
    sess = _ort_session(path, threads, providers, spinning)
    feed = {sess.get_inputs()[0].name: x}
    return lambda: sess.run(None, feed)


def _torch_fn(net: Any, x: np.ndarray, threads: int) -> Callable[[], object]:
    import torch

    torch.set_num_threads(threads)
    t = torch.from_numpy(x)
    net = net.eval()

    def run() -> object:
        with torch.inference_mode():
            return net(t)

    return run


def tiny_torch_module(package: ModelPackage) -> Any:
    """The tiny package's graph as a torch module with the package's own initialisers."""
    import onnx
    import torch
    from onnx import numpy_helper

    graph = onnx.load(str(package.file(package.manifest.model.fp32))).graph
    w = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in graph.initializer}
    k = int(package.manifest.preprocess.size[0]) // int(package.manifest.architecture.get("cells", 16))

    class Tiny(torch.nn.Module):
        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            cells = torch.nn.functional.avg_pool2d(image.mean(1, keepdim=True), k)
            amap = (cells - w["ref_mean"]).abs() / w["ref_std"]
            score = amap.amax(dim=(1, 2, 3))
            feat = torch.stack([score, amap.mean(dim=(1, 2, 3))], 1)
            return torch.softmax(feat @ w["w"] + w["b"], 1), score, amap

    return Tiny()


def torch_model_for(package: ModelPackage) -> tuple[Any | None, str]:
    """(torch module, note) from the package's recorded architecture; (None, reason) when it cannot be built."""
    arch = package.manifest.architecture or {}
    try:
        import torch  # noqa: F401
    except ImportError:
        return None, "torch not installed (pip install '.[train]')"
    if arch.get("kind") == "tiny-cell-deviation":
        return tiny_torch_module(package), "tiny graph rebuilt in torch with the package's weights"
    backbone = arch.get("backbone")
    if backbone:
        try:
            import timm

            n = len(package.manifest.class_names or []) or 2
            return timm.create_model(
                str(backbone), pretrained=False, num_classes=n
            ), f"timm {backbone} with the package's shape (random weights: timing only)"
        except Exception as err:  # noqa: BLE001 - timm raises several types for unknown names
            return None, f"could not build {backbone} with timm: {err}"
    return None, f"package architecture {arch or '{}'} names no buildable torch model"


def _data_source(package: ModelPackage) -> Path | None:
    """The anomaly-layout folder (train/good, test/<class>) the package was built and evaluated on, if any."""
    src = (package.manifest.data or {}).get("source")
    if not src or package.manifest.anomaly is None:
        return None
    root = Path(str(src))
    return root if (root / "train" / "good").is_dir() and (root / "test").is_dir() else None


def bench_frame(root: Path, size: tuple[int, int]) -> np.ndarray:
    """One real test frame (the first defect image), resized to the anomalib export's fixed input, RGB uint8."""
    from PIL import Image

    files = sorted(
        p
        for p in (root / "test").glob("*/*")
        if p.parent.name != "good" and p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp")
    )
    with Image.open(files[0]) as im:
        return np.asarray(im.convert("RGB").resize((size[1], size[0]), Image.BILINEAR))


def _ours_fn(package: ModelPackage, frame: np.ndarray, runtime: Any) -> tuple[Callable[[], object], Any]:
    from inspector.models.inference import InspectionModel

    model = InspectionModel(package, runtime, max_batch=1)
    model.warmup()
    return (lambda: model.infer([frame])), model


def ours_vs_anomalib(
    package: ModelPackage,
    threads: int,
    runs: int,
    models: tuple[str, ...] = ("padim",),
    say: Callable[[str], None] = print,
    image_size: tuple[int, int] = (256, 256),
    peers: tuple[list[Any], list[str]] | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Ours (fp32 and the kept precision) against anomalib's TorchInferencer and OpenVINOInferencer on
    anomalib's own exports, fitted on the same split; full inspection of one real frame at batch 1
    (pre-processing, model, post-processing), in ONE interleaved run; AUROC beside each.

    Ours: ``InspectionModel.infer`` (what the worker calls), its AUROC from the package's held-out evaluation
    through the station runtime. anomalib: ``predict`` of each inferencer, its AUROC measured through that
    inferencer on the same test split (``trainer.anomalib_baseline.anomalib_peers``, the ``anomalib_peers``
    provider; ``peers``: its result,
    already made for this package's data source on ``bench_frame(root, image_size)``)."""
    root = _data_source(package)
    if root is None:
        return [], [
            "ours vs anomalib: the package records no anomaly-layout data source (manifest data.source "
            "with train/good and test/): anomalib peers skipped"
        ]
    try:  # trainer.anomalib_baseline.anomalib_peers, registered by the trainer (the bench never imports it)
        anomalib_peers = provider("anomalib_peers", "pip install -e '.[train]'")
    except PluginMissing as err:
        return [], [f"ours vs anomalib: trainer / anomalib not importable ({err.message}): {err.hint}"]
    frame = bench_frame(root, image_size)
    fns, meta, kept, ours_models = _ours_entries(package, frame, threads)
    notes = [
        f"ours vs anomalib: frame {frame.shape[1]}x{frame.shape[0]} from {root}/test (a defect), batch 1, "
        f"{threads} threads; ours' kept runtime: {kept}"
    ]
    try:
        with tempfile.TemporaryDirectory(prefix="anomalib_peers_") as tmp:
            found, peer_notes = peers or anomalib_peers(
                root, frame, threads, Path(tmp), models, say=say, image_size=image_size
            )
            for peer in found:
                fns[peer.name], meta[peer.name] = peer.fn, (peer.image_auroc, peer.note)
            rows = _ours_vs_peers_rows(fns, meta, runs)
    finally:
        for model in ours_models:
            model.close()
    return rows, notes + peer_notes


def _ours_entries(
    package: ModelPackage, frame: np.ndarray, threads: int
) -> tuple[dict[str, Callable[[], object]], dict[str, tuple[float | None, str]], str, tuple[Any, Any]]:
    """Ours, warmed up on ``frame``: the fp32 ONNX Runtime model and, when the package keeps another runtime or
    precision, that one too. Returns the timed functions and (AUROC, description) by name, the kept runtime,
    and the two models (the caller closes them)."""
    from inspector.contracts.config import RuntimeSection

    metrics = package.manifest.metrics or {}
    auroc_kept = (metrics.get("heldout") or {}).get("anomaly", {}).get("image_auroc")
    auroc_fp32 = (metrics.get("heldout_fp32") or metrics.get("heldout") or {}).get("anomaly", {}).get("image_auroc")
    fp32_fn, fp32_model = _ours_fn(
        package, frame, RuntimeSection(threads=threads, precision="fp32", backend="onnxruntime")
    )
    kept_fn, kept_model = _ours_fn(package, frame, RuntimeSection(threads=threads))
    kept = f"{getattr(kept_model, 'backend', 'onnxruntime')} {kept_model.precision}"
    fns: dict[str, Callable[[], object]] = {"ours_onnxruntime_fp32": fp32_fn}
    meta: dict[str, tuple[float | None, str]] = {"ours_onnxruntime_fp32": (auroc_fp32, "ours, ONNX Runtime fp32")}
    if kept != "onnxruntime fp32":
        name = "ours_" + kept.replace(" ", "_")
        fns[name], meta[name] = kept_fn, (auroc_kept, f"ours, kept by the package's gate: {kept}")
    return fns, meta, kept, (fp32_model, kept_model)


def _ours_vs_peers_rows(
    fns: dict[str, Callable[[], object]], meta: dict[str, tuple[float | None, str]], runs: int
) -> list[dict[str, Any]]:
    """Time every entry in one interleaved run, warm (5 frames a turn, back to back), cold (1) and paced (5 frames a
    turn, each after a camera-rate idle gap, ``PACED_GAP_S``): a row per entry and regime, its p50 beside the best
    of ours."""
    rows = []
    for cache, block, gap in (("warm", 5, 0.0), ("cold", 1, 0.0), ("paced", 5, PACED_GAP_S)):
        res = interleaved(fns, runs, block=block, settle_s=0.3 if block > 1 else 0.0, gap_s=gap)
        best_ours = min(v["p50_ms"] for k, v in res.items() if k.startswith("ours_"))
        for name, r in res.items():
            auroc, what = meta[name]
            rows.append(
                {
                    "backend": name,
                    "what": what,
                    "cache": cache,
                    "p50_ms": r["p50_ms"],
                    "p90_ms": r["p90_ms"],
                    "image_auroc": round(auroc, 4) if auroc is not None else None,
                    "vs_best_ours": round(r["p50_ms"] / best_ours, 2),
                }
            )
    return rows


def gpu_note() -> tuple[list[str], str]:
    import onnxruntime as ort

    avail = ort.get_available_providers()
    gpu = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in avail]
    if not gpu:
        return [], "no CUDA/TensorRT execution provider on this machine: GPU columns skipped"
    return gpu, "GPU providers: " + ", ".join(gpu)


def compare(
    label: str, fns_for_batch: Callable[[int, bool], dict[str, Callable[[], object]]], runs: int
) -> list[dict[str, Any]]:
    """Rows {model, backend, batch, cache, p50_ms, per_frame_ms, fps, ratio_vs_torch} for every batch size.

    Each batch size is timed twice, in turns: "warm" (each backend runs 5 frames per turn, the first
    untimed, after 300 ms for the previous backend's threads to go idle: what a worker running one model
    sees; every backend in its default threading, ONNX Runtime spinning as in the station) and "cold" (one
    frame per turn, after the others have evicted its weights from the caches; no spinning)."""
    rows: list[dict[str, Any]] = []
    for b in BATCHES:
        for cache, block in (("warm", 5), ("cold", 1)):
            res = interleaved(fns_for_batch(b, cache == "warm"), runs, block=block, settle_s=0.3 if block > 1 else 0.0)
            base = res.get("pytorch_eager", {}).get("p50_ms")
            for name, r in res.items():
                rows.append(
                    {
                        "model": label,
                        "backend": name,
                        "batch": b,
                        "cache": cache,
                        **r,
                        "per_frame_ms": round(r["p50_ms"] / b, 3),
                        "fps": round(1000 * b / r["p50_ms"], 1),
                        "speedup_vs_torch": round(base / r["p50_ms"], 2) if base else None,
                    }
                )
    return rows


def package_backends(package: ModelPackage, threads: int, runs: int) -> tuple[list[dict[str, Any]], list[str]]:
    notes: list[str] = []
    net, note = torch_model_for(package)
    notes.append(f"pytorch_eager: {note}")
    h, w = package.manifest.preprocess.size
    int8 = package.manifest.model.int8
    if not int8:
        notes.append("onnxruntime_int8: the package has no INT8 file (not made, or it failed its gate)")
    gpu, gnote = gpu_note()
    notes.append(gnote)

    def fns(b: int, warm: bool) -> dict[str, Callable[[], object]]:
        x = np.random.default_rng(0).standard_normal((b, 3, h, w)).astype(np.float32)
        out: dict[str, Callable[[], object]] = {}
        if net is not None:
            out["pytorch_eager"] = _torch_fn(net, x, threads)
        out["onnxruntime_fp32"] = _ort_fn(package.file(package.manifest.model.fp32), x, threads, spinning=warm)
        if int8:
            out["onnxruntime_int8"] = _ort_fn(package.file(int8), x, threads, spinning=warm)
        for p in gpu:
            out[p.replace("ExecutionProvider", "").lower()] = _ort_fn(
                package.file(package.manifest.model.fp32), x, threads, [p]
            )
        return out

    return compare(package.manifest.name, fns, runs), notes


def reference_backends(arch: str, threads: int, runs: int) -> tuple[list[dict[str, Any]], list[str]]:
    """A pretrained-shape CNN exported and quantised here (static QDQ, U8S8, per-channel, Conv only)."""
    try:
        import timm
        import torch
    except ImportError as err:
        return [], [f"reference {arch}: torch/timm not installed ({err})"]
    net = timm.create_model(arch, pretrained=False, num_classes=2).eval()
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "ref.onnx", Path(tmp) / "ref.int8.onnx"
        torch.onnx.export(
            net,
            (torch.zeros(1, 3, 224, 224),),
            str(fp32),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
        note = _quantise(fp32, int8)

        def fns(b: int, warm: bool) -> dict[str, Callable[[], object]]:
            x = np.random.default_rng(0).standard_normal((b, 3, 224, 224)).astype(np.float32)
            out = {
                "pytorch_eager": _torch_fn(net, x, threads),
                "onnxruntime_fp32": _ort_fn(fp32, x, threads, spinning=warm),
            }
            if int8.is_file():
                out["onnxruntime_int8"] = _ort_fn(int8, x, threads, spinning=warm)
            return out

        rows = compare(f"reference {arch} 224px", fns, runs)
    return rows, [f"reference {arch}: random weights (timing only); INT8: {note}"]


def _quantise(fp32: Path, int8: Path) -> str:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(1)
            self.items = iter([{"image": rng.standard_normal((1, 3, 224, 224)).astype(np.float32)} for _ in range(8)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    try:
        quantize_static(
            str(fp32),
            str(int8),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["Conv"],
        )
    except Exception as err:  # noqa: BLE001
        return f"quantisation failed: {err}"
    return "static QDQ U8S8 per-channel, Conv only, 8 random calibration inputs"
