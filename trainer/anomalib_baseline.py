"""anomalib PaDiM on magnetic_tile with the same local backbone and the same good-only split: the baseline.

- Training images: the same ``split_holdout`` fit part of train/good as ``trainer.anomaly`` (linked into a
  temporary folder, so anomalib's ``Folder`` datamodule sees exactly those files and no test data).
- Scores: anomalib's raw ``pred_score`` (before its own normalisation); threshold from the held-out good
  images with ``threshold_good_quantile``, as for our scorer.
- Timing: ``TorchInferencer`` at batch 1 on the exported ``.pt``. NOTE: anomalib's inferencer loads that
  file with ``torch.load(weights_only=False)`` (pickle). We only ever give it the file this module has just
  written itself into a private temporary folder; never point ``time_torch_inferencer`` at foreign files.

``anomalib_peers`` gives ``inspector bench`` anomalib's own deployment paths (TorchInferencer, OpenVINOInferencer
on anomalib's OpenVINO export) on the same split. anomalib's PatchCore coreset sampler takes hours on this CPU at
its default ratio: models are fitted with ``trainer.anomalib_package.fit_anomalib`` (fast greedy k-center).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from inspector.contracts.errors import DataError
from trainer.anomaly import DEFECT_CLASSES, list_magnetic_tile, split_holdout, threshold_good_quantile
from trainer.backbone import NORMALISATION

if TYPE_CHECKING:
    from trainer.evaluate import EvalSet


@dataclass
class BaselineResult:
    image_auroc: float
    recall_at_frr: float
    test_false_reject: float
    threshold: float
    per_class_recall: dict[str, float]
    export_path: Path | None


def full_timm_model(name: str = "tf_efficientnet_lite0") -> nn.Module:
    """The whole timm network (anomalib picks nodes by name, e.g. ``blocks.2``) with the local weights."""
    from trainer.anomalib_package import full_timm_model as with_source

    return with_source(name)[0]


def _link_folder(files: list[str], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        os.symlink(f, folder / Path(f).name)
    return folder


def build_padim(backbone_name: str, layers: list[str], n_features: int, image_size: tuple[int, int]) -> nn.Module:
    from anomalib.models import Padim
    from anomalib.pre_processing import PreProcessor
    from torchvision.transforms import v2

    from trainer.anomalib_package import conv2d_same_as_leaf

    mean, std = NORMALISATION[backbone_name]
    pre = PreProcessor(transform=v2.Compose([v2.Resize(image_size), v2.Normalize(mean=mean, std=std)]))
    with conv2d_same_as_leaf():  # anomalib's TimmFeatureExtractor accepts the nn.Module backbone
        model = Padim(
            backbone=full_timm_model(backbone_name),
            layers=layers,
            pre_trained=False,  # type: ignore[arg-type]
            n_features=n_features,
            pre_processor=pre,
            evaluator=False,
            visualizer=False,
        )
    return model


@torch.inference_mode()
def raw_scores(model: nn.Module, files: list[str], batch_size: int = 16) -> np.ndarray:
    """anomalib's raw image scores (pre-processor + torch model, no post-processing)."""
    from PIL import Image
    from torchvision.transforms.v2.functional import pil_to_tensor

    model.eval()
    out = []
    for i in range(0, len(files), batch_size):
        imgs = [pil_to_tensor(Image.open(f).convert("RGB")).float() / 255 for f in files[i : i + batch_size]]
        x = torch.stack([model.pre_processor.transform(im) for im in imgs])
        out.append(model.model(x).pred_score.flatten())
    return torch.cat(out).numpy()


def run_padim_baseline(
    root: Path,
    backbone_name: str = "tf_efficientnet_lite0",
    layers: list[str] | None = None,
    n_features: int = 100,
    image_size: tuple[int, int] = (256, 256),
    holdout_every: int = 5,
    target_false_reject: float = 0.02,
    export_dir: Path | None = None,
) -> BaselineResult:
    """Fits anomalib PaDiM on the fit part of train/good, thresholds on the held-out goods, scores the test set."""
    from anomalib.data import Folder
    from anomalib.engine import Engine
    from lightning.pytorch import seed_everything
    from sklearn.metrics import roc_auc_score

    seed_everything(0)
    layers = layers or ["blocks.2", "blocks.3"]
    files = list_magnetic_tile(root)
    fit_files, hold_files = split_holdout(files["train"], holdout_every)
    model = build_padim(backbone_name, layers, n_features, image_size)
    with tempfile.TemporaryDirectory(prefix="padim_") as tmp:
        normal = _link_folder(fit_files, Path(tmp) / "fit" / "good")
        dm = Folder(
            name="magnetic_tile_fit",
            root=Path(tmp) / "fit",
            normal_dir=normal,
            extensions=(".jpg", ".png"),
            train_batch_size=32,
            eval_batch_size=32,
            num_workers=0,
            test_split_mode="none",
            val_split_mode="none",
        )
        engine = Engine(
            default_root_dir=Path(tmp) / "results",
            logger=False,
            accelerator="cpu",
            devices=1,
            max_epochs=1,
            enable_progress_bar=False,
            limit_val_batches=0,
            num_sanity_val_steps=0,
        )
        engine.fit(model=model, datamodule=dm)
        export_path = None
        if export_dir is not None:
            limit = sys.getrecursionlimit()
            sys.setrecursionlimit(max(limit, 20000))  # pickling the fx-traced backbone nests deeply
            try:
                export_path = engine.export(model=model, export_type="torch", export_root=export_dir)
            finally:
                sys.setrecursionlimit(limit)
    hold = raw_scores(model, hold_files)
    test = [(f, ci) for ci, c in enumerate(("good", *DEFECT_CLASSES)) for f in files[c]]
    scores = raw_scores(model, [f for f, _ in test])
    cls = np.array([c for _, c in test])
    thr = threshold_good_quantile(hold, target_false_reject)
    return BaselineResult(
        image_auroc=float(roc_auc_score(cls > 0, scores)),
        recall_at_frr=float((scores[cls > 0] >= thr).mean()),
        test_false_reject=float((scores[cls == 0] >= thr).mean()),
        threshold=thr,
        per_class_recall={c: float((scores[cls == i + 1] >= thr).mean()) for i, c in enumerate(DEFECT_CLASSES)},
        export_path=export_path,
    )


def load_torch_inferencer(model_path: Path, trust_own_export: bool = False):  # type: ignore[no-untyped-def]
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
    from anomalib.deploy import OpenVINOInferencer
    from PIL import Image
    from sklearn.metrics import roc_auc_score

    from trainer.anomalib_package import AnomalibConfig, build_anomalib_module, export_anomalib_native, fit_anomalib
    from trainer.pipelines import split_holdout as split_indices

    peers: list[BenchPeer] = []
    cfg = AnomalibConfig(model=kind, image_size=image_size)  # type: ignore[arg-type]
    h, w = cfg.image_size
    module, weights = build_anomalib_module(cfg, pre_processor=True)
    transform = module.pre_processor.transform
    fit_idx, hold_idx = split_indices(len(good), cfg.holdout_every)

    def batches(idx: list[int], transform=transform, bs: int = cfg.batch_size):  # type: ignore[no-untyped-def]
        for i in range(0, len(idx), bs):
            yield torch.stack([transform(_float_image(good[j])) for j in idx[i : i + bs]])

    say(f"anomalib {kind}: fitting on {len(fit_idx)} good images of {data_dir} (same split as ours)")
    info = fit_anomalib(module.model, batches(fit_idx), cfg)
    with torch.no_grad():
        hold = torch.cat([module.model(x).pred_score.reshape(-1) for x in batches(hold_idx)]).numpy()
    thr = threshold_good_quantile(hold, cfg.target_false_reject)
    set_post_processor_from_goods(module, hold, thr)
    paths = export_anomalib_native(module, workdir / kind, cfg.image_size)
    inferencers: dict[str, object] = {"torchinferencer": load_torch_inferencer(paths["torch"], trust_own_export=True)}
    import openvino as ov

    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    hints = ["f32"] + (["bf16"] if "BF16" in caps else [])
    for hint in hints:
        with contextlib.chdir(workdir):  # OpenVINOInferencer writes ./openvino_cache
            inferencers[f"openvino_{hint}"] = OpenVINOInferencer(
                paths["openvino"],
                device="CPU",
                config={
                    "INFERENCE_NUM_THREADS": str(threads),
                    "INFERENCE_PRECISION_HINT": hint,
                    "PERFORMANCE_HINT": "LATENCY",
                },
            )
    test = [np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR)) for img in held.images]
    module.eval()
    with torch.no_grad():  # TorchInferencer.predict is this module's forward, one frame at a time: batch it
        torch_scores = np.concatenate(
            [
                module(torch.stack([_float_image(t) for t in test[i : i + 16]])).pred_score.reshape(-1).numpy()
                for i in range(0, len(test), 16)
            ]
        )
    for name, inf in inferencers.items():
        scores = (
            torch_scores
            if name == "torchinferencer"
            else np.array([float(np.asarray(inf.predict(img).pred_score).reshape(-1)[0]) for img in test])
        )  # type: ignore[attr-defined]
        auroc = float(roc_auc_score(held.is_defect, scores))
        say(f"anomalib {kind} {name}: image AUROC {auroc:.4f} on {len(test)} test frames")
        peers.append(
            BenchPeer(
                f"anomalib_{kind}_{name}",
                (lambda inf=inf: inf.predict(frame)),
                auroc,  # type: ignore[attr-defined,misc]
                f"anomalib {kind} ({cfg.backbone} {list(cfg.layers)}, {h}x{w}) {name}",
            )
        )
    note = (
        f"anomalib {kind}: {cfg.backbone} {list(cfg.layers)} {h}x{w}, weights {weights}, fitted on "
        f"{info['fit_images']} train/good ({info['fit_s']} s), threshold from {len(hold_idx)} held-out goods; "
        f"exports by anomalib's to_torch / to_openvino (pre- and post-processing inside); OpenVINO "
        f"{ov.__version__} CPU capabilities {caps}"
    )
    return peers, note


def time_torch_inferencer(
    model_path: Path, image: str | Path, runs: int = 50, threads: int = 2, trust_own_export: bool = False
) -> dict[str, float]:
    """p50/p90 ms of anomalib ``TorchInferencer.predict`` at batch 1 (CPU)."""
    from PIL import Image

    torch.set_num_threads(threads)
    inferencer = load_torch_inferencer(model_path, trust_own_export)
    arr = np.asarray(Image.open(image).convert("RGB"))
    for _ in range(5):
        inferencer.predict(arr)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        inferencer.predict(arr)
        times.append((time.perf_counter() - t) * 1e3)
    return {"p50": float(np.percentile(times, 50)), "p90": float(np.percentile(times, 90))}


def main() -> None:  # pragma: no cover - a manual benchmark
    from inspector.contracts.paths import dataset_dir

    root = dataset_dir("magnetic_tile")
    if root is None:
        raise DataError("magnetic_tile not found", "set INSPECTOR_SHARED_DATA")
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory(prefix="padim_export_") as tmp:
        res = run_padim_baseline(root, export_dir=Path(tmp))
        print(res)
        if res.export_path is not None:
            print(
                "TorchInferencer",
                time_torch_inferencer(
                    res.export_path, sorted((root / "test" / "crack").glob("*.jpg"))[0], trust_own_export=True
                ),
            )


if __name__ == "__main__":  # pragma: no cover
    main()
