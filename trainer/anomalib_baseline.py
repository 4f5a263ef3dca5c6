"""anomalib PaDiM on magnetic_tile with the same local backbone and the same good-only split: the baseline.

- Training images: the same ``split_holdout`` fit part of train/good as ``trainer.anomaly`` (linked into a
  temporary folder, so anomalib's ``Folder`` datamodule sees exactly those files and no test data).
- Scores: anomalib's raw ``pred_score`` (before its own normalisation); threshold from the held-out good
  images with ``threshold_good_quantile``, as for our scorer.
- Timing: ``TorchInferencer`` at batch 1 on the exported ``.pt``. NOTE: anomalib's inferencer loads that
  file with ``torch.load(weights_only=False)`` (pickle). We only ever give it the file this module has just
  written itself into a private temporary folder; never point ``time_torch_inferencer`` at foreign files.

``anomalib_peers`` (``trainer.anomalib_peers``, re-exported here: the bench's entry point names this module)
gives ``inspector bench`` anomalib's own deployment paths on the same split.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from inspector.contracts.errors import DataError
from trainer.anomalib_peers import anomalib_peers as anomalib_peers  # the bench's entry point
from trainer.anomalib_peers import load_torch_inferencer
from trainer.anomaly import DEFECT_CLASSES, list_magnetic_tile, split_holdout, threshold_good_quantile
from trainer.backbone import NORMALISATION


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


def _fit_with_engine(model: nn.Module, fit_files: list[str], export_dir: Path | None) -> Path | None:
    """anomalib's own ``Engine.fit`` on exactly ``fit_files`` (linked into a temporary ``Folder`` datamodule, no
    test data); with ``export_dir``, anomalib's torch export of the fitted model, whose path is returned."""
    from anomalib.data import Folder
    from anomalib.engine import Engine

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
    return export_path


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
    from lightning.pytorch import seed_everything
    from sklearn.metrics import roc_auc_score

    seed_everything(0)
    layers = layers or ["blocks.2", "blocks.3"]
    files = list_magnetic_tile(root)
    fit_files, hold_files = split_holdout(files["train"], holdout_every)
    model = build_padim(backbone_name, layers, n_features, image_size)
    export_path = _fit_with_engine(model, fit_files, export_dir)
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
