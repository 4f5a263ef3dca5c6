"""anomalib's own deployment paths as ``inspector bench`` peers: ``anomalib_peers``.

TorchInferencer and OpenVINOInferencer on anomalib's own exports (pre- and post-processing inside), fitted on the
same split as our package. anomalib's PatchCore coreset sampler takes hours on this CPU at its default ratio:
models are fitted with ``trainer.anomalib_package.fit_anomalib`` (fast greedy k-center).

NOTE: anomalib's ``TorchInferencer`` loads its ``.pt`` with ``torch.load(weights_only=False)`` (pickle):
:func:`load_torch_inferencer` only accepts a file this process has just exported into its own temporary folder.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from inspector.contracts.errors import DataError
from trainer.anomaly import threshold_good_quantile

if TYPE_CHECKING:
    from anomalib.deploy import TorchInferencer

    from trainer.anomalib_package import AnomalibConfig
    from trainer.evaluate import EvalSet


def load_torch_inferencer(model_path: Path, trust_own_export: bool = False) -> TorchInferencer:
    """anomalib's ``TorchInferencer`` on an export of its own.

    anomalib loads the ``.pt`` with pickle; it refuses unless ``TRUST_REMOTE_CODE=1``. Pass
    ``trust_own_export=True`` only for a file this process has just exported into its own temporary folder:
    the station itself never unpickles anything.
    """
    from anomalib.deploy import TorchInferencer

    if not trust_own_export:
        raise DataError(f"refusing to unpickle {model_path}", "only time a model this process exported itself")
    previous = os.environ.get("TRUST_REMOTE_CODE")
    os.environ["TRUST_REMOTE_CODE"] = "1"
    try:
        return TorchInferencer(path=model_path, device="cpu")
    finally:
        if previous is None:
            os.environ.pop("TRUST_REMOTE_CODE", None)
        else:
            os.environ["TRUST_REMOTE_CODE"] = previous


@dataclass
class BenchPeer:
    """One anomalib inferencer for ``inspector bench``: one ``predict`` call on the bench frame, and its AUROC."""

    name: str
    fn: Callable[[], object]
    image_auroc: float | None
    note: str


def _float_image(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).float() / 255  # a writable copy


def set_post_processor_from_goods(module: nn.Module, hold_scores: np.ndarray, threshold: float) -> None:
    """anomalib's post-processor normalises with min/max/threshold from a validation set (its default: the
    test set). Here: the threshold from held-out GOOD parts, and a range so wide that no score is clipped at
    0 or 1, so the normalised score keeps anomalib's raw ranking (its AUROC)."""
    post = module.post_processor
    spread = 50.0 * max(float(threshold - hold_scores.min()), float(hold_scores.max() - threshold), 1e-6)
    for prefix in ("image", "pixel"):
        getattr(post, f"_{prefix}_threshold").fill_(threshold)
        getattr(post, f"{prefix}_min").fill_(threshold - spread)
        getattr(post, f"{prefix}_max").fill_(threshold + spread)


def anomalib_peers(
    data_dir: Path,
    frame: np.ndarray,
    threads: int,
    workdir: Path,
    models: tuple[str, ...] = ("padim",),
    say: Callable[[str], None] = print,
    image_size: tuple[int, int] = (256, 256),
) -> tuple[list[BenchPeer], list[str]]:
    """anomalib's own deployment paths for ``inspector bench``, on the split our package used.

    For each model: fitted through anomalib's pre-processor (Resize + Normalize) on the fit part of
    ``data_dir``'s train/good (the same ``split_holdout`` rule as ours), threshold from the held-out goods,
    exported by anomalib itself (``to_torch``, ``to_openvino``: pre- and post-processing inside) into
    ``workdir``, then run by anomalib's ``TorchInferencer`` and ``OpenVINOInferencer`` (f32, and bf16 where the
    CPU has it). AUROC on the whole test split, frames resized to the model's input first (the OpenVINO export
    has a fixed 256x256 input): through each OpenVINO inferencer frame by frame; for TorchInferencer through
    the same Lightning module's forward (what its ``predict`` runs) in batches of 16."""
    from trainer.data import load_rgb, scan_anomaly
    from trainer.evaluate import load_test_split

    torch.set_num_threads(threads)
    data = scan_anomaly(Path(data_dir))
    good = [np.asarray(load_rgb(s.path)) for s in data.train]
    held = load_test_split(data_dir)
    peers: list[BenchPeer] = []
    notes: list[str] = []
    for kind in models:
        model_peers, note = _model_peers(kind, data_dir, good, held, frame, threads, workdir, say, image_size)
        peers += model_peers
        notes.append(note)
    return peers, notes


def _model_peers(
    kind: str,
    data_dir: Path,
    good: list[np.ndarray],
    held: EvalSet,
    frame: np.ndarray,
    threads: int,
    workdir: Path,
    say: Callable[[str], None],
    image_size: tuple[int, int],
) -> tuple[list[BenchPeer], str]:
    """One anomalib model: fitted, thresholded, exported by anomalib, and its inferencers as bench peers."""
    from PIL import Image
    from sklearn.metrics import roc_auc_score

    from trainer.anomalib_package import AnomalibConfig, build_anomalib_module, export_anomalib_native

    peers: list[BenchPeer] = []
    cfg = AnomalibConfig(model=kind, image_size=image_size)  # type: ignore[arg-type]  # kind: 'padim' | 'patchcore'
    h, w = cfg.image_size
    module, weights = build_anomalib_module(cfg, pre_processor=True)
    info, held_out_goods = _fit_with_good_threshold(
        module,
        cfg,
        good,
        lambda n: say(f"anomalib {kind}: fitting on {n} good images of {data_dir} (same split as ours)"),
    )
    paths = export_anomalib_native(module, workdir / kind, cfg.image_size)
    inferencers: dict[str, object] = {"torchinferencer": load_torch_inferencer(paths["torch"], trust_own_export=True)}
    openvino_inferencers, caps, openvino_version = _openvino_inferencers(paths["openvino"], workdir, threads)
    inferencers.update(openvino_inferencers)
    test = [np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR)) for img in held.images]
    torch_scores = _module_scores(module, test)
    for name, inf in inferencers.items():
        scores = (
            torch_scores
            if name == "torchinferencer"
            else np.array([float(np.asarray(inf.predict(img).pred_score).reshape(-1)[0]) for img in test])
        )  # type: ignore[attr-defined]  # inferencers are objects with anomalib's predict
        auroc = float(roc_auc_score(held.is_defect, scores))
        say(f"anomalib {kind} {name}: image AUROC {auroc:.4f} on {len(test)} test frames")
        peers.append(
            BenchPeer(
                f"anomalib_{kind}_{name}",
                (lambda inf=inf: inf.predict(frame)),
                auroc,  # type: ignore[attr-defined,misc]  # the lambda calls anomalib's predict on an object
                f"anomalib {kind} ({cfg.backbone} {list(cfg.layers)}, {h}x{w}) {name}",
            )
        )
    note = (
        f"anomalib {kind}: {cfg.backbone} {list(cfg.layers)} {h}x{w}, weights {weights}, fitted on "
        f"{info['fit_images']} train/good ({info['fit_s']} s), threshold from {held_out_goods} held-out goods; "
        f"exports by anomalib's to_torch / to_openvino (pre- and post-processing inside); OpenVINO "
        f"{openvino_version} CPU capabilities {caps}"
    )
    return peers, note


def _fit_with_good_threshold(
    module: Any, cfg: AnomalibConfig, good: list[np.ndarray], announce: Callable[[int], None]
) -> tuple[dict[str, Any], int]:
    """Fit anomalib's model on the fit part of ``good`` (through its own pre-processor; ``announce`` gets the
    number of fit images first), threshold its post-processor on the held-out part; (fit info, held-out count)."""
    from trainer.anomalib_package import fit_anomalib
    from trainer.pipelines import split_holdout as split_indices

    transform = module.pre_processor.transform
    fit_idx, hold_idx = split_indices(len(good), cfg.holdout_every)

    def batches(
        idx: list[int], transform: Callable[[torch.Tensor], torch.Tensor] = transform, bs: int = cfg.batch_size
    ) -> Iterator[torch.Tensor]:
        for i in range(0, len(idx), bs):
            yield torch.stack([transform(_float_image(good[j])) for j in idx[i : i + bs]])

    announce(len(fit_idx))
    info = fit_anomalib(module.model, batches(fit_idx), cfg)
    with torch.no_grad():
        hold = torch.cat([module.model(x).pred_score.reshape(-1) for x in batches(hold_idx)]).numpy()
    thr = threshold_good_quantile(hold, cfg.target_false_reject)
    set_post_processor_from_goods(module, hold, thr)
    return info, len(hold_idx)


def _openvino_inferencers(xml: Path, workdir: Path, threads: int) -> tuple[dict[str, object], Any, str]:
    """anomalib's ``OpenVINOInferencer`` on its own export: f32, and bf16 where the CPU has it;
    (inferencers by name, the CPU's optimisation capabilities, OpenVINO's version)."""
    import openvino as ov
    from anomalib.deploy import OpenVINOInferencer

    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    hints = ["f32"] + (["bf16"] if "BF16" in caps else [])
    inferencers: dict[str, object] = {}
    for hint in hints:
        with contextlib.chdir(workdir):  # OpenVINOInferencer writes ./openvino_cache
            inferencers[f"openvino_{hint}"] = OpenVINOInferencer(
                xml,
                device="CPU",
                config={
                    "INFERENCE_NUM_THREADS": str(threads),
                    "INFERENCE_PRECISION_HINT": hint,
                    "PERFORMANCE_HINT": "LATENCY",
                },
            )
    return inferencers, caps, ov.__version__


def _module_scores(module: Any, test: list[np.ndarray]) -> np.ndarray:
    """Image scores of the Lightning module's forward: what ``TorchInferencer.predict`` runs one frame at a
    time, batched by 16."""
    module.eval()
    with torch.no_grad():
        return np.concatenate(
            [
                module(torch.stack([_float_image(t) for t in test[i : i + 16]])).pred_score.reshape(-1).numpy()
                for i in range(0, len(test), 16)
            ]
        )
