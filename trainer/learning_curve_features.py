"""The learning curve's features (``trainer.learning_curve``), once per image: the frozen backbone's pooled
stages 2-4 and ``wknn`` embedding (cached as .npy), and the anomaly features of each image from ``wknn`` scorers
that never saw it (cross-fitted over the good folds, with an inner cross-fit for the training goods).

``pool_stages`` and ``anomaly_features`` are also the station's fused score's feature path (``trainer.fusion_head``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich.console import Console
from rich.progress import Progress

from inspector.contracts.errors import DataError
from trainer.anomaly import AnomalyConfig
from trainer.learning_curve_folds import good_fold_ids

if TYPE_CHECKING:
    from trainer.learning_curve_config import CurveConfig

CACHE_VERSION = "lc1"


@dataclass
class ImageTable:
    """Every image of the data folder with its role and features (rows in the same order everywhere)."""

    paths: list[str]
    is_train_good: np.ndarray
    is_test_good: np.ndarray
    defect_class: list[str | None]
    pooled: np.ndarray  # [n, d_pool] pooled backbone stages
    embedding: np.ndarray  # [n, C, h, w] float16 wknn embedding
    test_good_sha256: list[str] | None = None  # file sha256 of each test/good image (row order); None: hash paths

    @property
    def is_defect(self) -> np.ndarray:
        return np.array([c is not None for c in self.defect_class])


def _cache_key(paths: Sequence[str], cfg: AnomalyConfig) -> str:
    h = hashlib.sha256(CACHE_VERSION.encode())
    h.update(json.dumps([cfg.backbone, list(cfg.out_indices), list(cfg.image_size), cfg.downsample, cfg.pool]).encode())
    for p in paths:
        h.update(p.encode())
        h.update(str(Path(p).stat().st_size).encode())
    return h.hexdigest()[:16]


def test_good_hashes(table: ImageTable) -> list[str]:
    """sha256 of each test/good image file, in row order (the table's, or computed from the files)."""
    if table.test_good_sha256 is not None:
        return table.test_good_sha256
    from trainer.heldout import file_sha256

    return [file_sha256(table.paths[i]) for i in np.flatnonzero(table.is_test_good)]


def list_images(data_dir: Path) -> tuple[list[str], np.ndarray, np.ndarray, list[str | None]]:
    from trainer.data import scan_anomaly

    data = scan_anomaly(data_dir)
    test_good = [s for s in data.test if s.label == 0]
    test_bad = [s for s in data.test if s.label == 1]
    if not data.train or not test_good or not test_bad:
        raise DataError(
            f"{data_dir} needs train/good, test/good and test/<defect> images", "use the anomaly layout (MVTec AD)"
        )
    samples = list(data.train) + test_good + test_bad
    n_tr, n_tg = len(data.train), len(test_good)
    is_train_good = np.arange(len(samples)) < n_tr
    is_test_good = (np.arange(len(samples)) >= n_tr) & (np.arange(len(samples)) < n_tr + n_tg)
    classes: list[str | None] = [None] * (n_tr + n_tg) + [s.defect or "defect" for s in test_bad]
    return [str(s.path) for s in samples], is_train_good, is_test_good, classes


def pool_stages(maps: Sequence[np.ndarray]) -> np.ndarray:
    """[B, c, h, w] maps -> [B, sum(3c)]: mean, max and std over positions of each map (numpy)."""
    out = []
    for m in maps:
        flat = m.reshape(m.shape[0], m.shape[1], -1)
        out += [flat.mean(-1), flat.max(-1), flat.std(-1)]
    return np.concatenate(out, 1).astype(np.float32)


def extract_table(data_dir: Path, cfg: AnomalyConfig, cache: Path | None, console: Console) -> ImageTable:
    """Backbone features of every image (one pass), loaded from ``cache`` when present."""
    paths, is_tr, is_tg, classes = list_images(data_dir)
    key = _cache_key(paths, cfg)
    if cache is not None and (cache / f"{key}.pooled.npy").is_file():
        pooled = np.load(cache / f"{key}.pooled.npy")
        emb = np.load(cache / f"{key}.embedding.npy")
        table = ImageTable(paths, is_tr, is_tg, classes, pooled, emb)
        table.test_good_sha256 = test_good_hashes(table)
        return table
    import torch

    from inspector.contracts.manifest import Preprocess
    from inspector.models.preprocess import Preprocessor
    from trainer.anomaly import FeatureEmbedding
    from trainer.backbone import build_backbone
    from trainer.data import load_rgb

    stages = tuple(sorted({*cfg.out_indices, 2, 3, 4}))
    backbone, spec = build_backbone(cfg.backbone, out_indices=stages)
    backbone.eval()
    take = [stages.index(i) for i in cfg.out_indices]
    pool_take = [stages.index(i) for i in (2, 3, 4)]
    down = cfg.downsample if cfg.method in ("gaussian", "wknn") else 1
    embed = FeatureEmbedding(take, cfg.pool, down)
    pre = Preprocessor(Preprocess(size=cfg.image_size, resize="stretch", mean=spec.mean, std=spec.std, color="gray"))
    pooled, embs = [], []
    bs = cfg.batch_size
    with Progress(console=console, transient=True) as prog, torch.inference_mode():
        task = prog.add_task(f"backbone features ({len(paths)} images)", total=len(paths))
        for i in range(0, len(paths), bs):
            imgs = [np.asarray(load_rgb(Path(p))) for p in paths[i : i + bs]]
            feats = backbone(torch.from_numpy(pre.batch(imgs)))
            embs.append(embed(feats).numpy().astype(np.float16))
            pooled.append(pool_stages([feats[j].numpy() for j in pool_take]))
            prog.advance(task, len(imgs))
    table = ImageTable(paths, is_tr, is_tg, classes, np.concatenate(pooled), np.concatenate(embs))
    table.test_good_sha256 = test_good_hashes(table)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.save(cache / f"{key}.pooled.npy", table.pooled)
        np.save(cache / f"{key}.embedding.npy", table.embedding)
    return table


# ----------------------------------------------------------------------------------------------- anomaly features
def _stage_blocks(cfg: AnomalyConfig) -> list[int] | None:
    if cfg.whiten_blocks != "stage":
        return None
    from trainer.backbone import build_backbone

    backbone, _ = build_backbone(cfg.backbone, out_indices=cfg.out_indices, allow_random=True, allow_download=False)
    return list(backbone.feature_info.channels())  # type: ignore[operator]


def fit_scorer(embeddings: np.ndarray, cfg: AnomalyConfig, blocks: list[int] | None):  # type: ignore[no-untyped-def]
    """The project's ``wknn`` scorer fitted on cached embeddings [n, C, h, w] (its input is the embedding)."""
    import torch

    from trainer.anomaly import FeatureEmbedding, fit_whitened_knn

    embs = [torch.from_numpy(embeddings[i : i + 64].astype(np.float32)) for i in range(0, len(embeddings), 64)]
    return fit_whitened_knn(FeatureEmbedding([0]), embs, cfg, blocks)


def anomaly_features(scorer, embeddings: np.ndarray, batch: int = 64) -> np.ndarray:  # type: ignore[no-untyped-def]
    """[n, 4 + 2C] per image: log image score (wknn), log top-4 / top-16 / mean of the anomaly map, the channel-wise
    max over positions of the whitened patch ``|z|``, and of the residual ``|z - nearest good patch|``."""
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(embeddings), batch):
            e = torch.from_numpy(embeddings[i : i + batch].astype(np.float32))
            z, d2, nearest = scorer.nearest_patches(e)  # the scorer's own search (radius correction included)
            dist = d2.clamp_min(0).sqrt()
            amap = scorer.blur(dist).flatten(1)
            top = amap.sort(1, descending=True).values
            stats = torch.stack([top[:, 0], top[:, :4].mean(1), top[:, :16].mean(1), amap.mean(1)], 1)
            zmax = z.abs().amax(0)
            rmax = (z - nearest).abs().amax(0)
            out.append(torch.cat([stats.clamp_min(1e-6).log(), zmax, rmax], 1).numpy())
    return np.concatenate(out).astype(np.float32)


@dataclass
class AnomalyCrossFit:
    """Anomaly features from scorers that never saw the image.

    ``outer[k]``: [n, d] from the scorer fitted on train/good outside good fold k (rows of that scorer's fit
    images are NaN). ``inner[k]``: [n, d] for the train/good images outside fold k, each from an inner scorer
    fitted without it and without fold k (other rows NaN).
    """

    outer: np.ndarray
    inner: np.ndarray
    good_fold: np.ndarray  # fold id per train/good image (index into np.flatnonzero(is_train_good))


def crossfit_anomaly(table: ImageTable, cfg: CurveConfig, cache: Path | None, console: Console) -> AnomalyCrossFit:
    """Fits good_folds x (1 + inner_good_folds) ``wknn`` scorers on train/good subsets (cached)."""
    key = (
        _cache_key(table.paths, cfg.anomaly)
        + hashlib.sha256(
            json.dumps([cfg.good_folds, cfg.inner_good_folds, cfg.seed, asdict(cfg.anomaly)], default=str).encode()
        ).hexdigest()[:8]
    )
    train_good = np.flatnonzero(table.is_train_good)
    gfold = good_fold_ids(len(train_good), cfg.good_folds, cfg.seed)
    blocks = _stage_blocks(cfg.anomaly)
    n = len(table.paths)
    others = np.flatnonzero(~table.is_train_good)
    outer_parts, inner_parts = [], []
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small GEMMs in Python loops: extra threads only spin on a shared 2-core machine
    try:
        with Progress(console=console, transient=True) as prog:
            task = prog.add_task(
                "cross-fitting wknn anomaly scorers on good images", total=cfg.good_folds * (1 + cfg.inner_good_folds)
            )
            for k in range(cfg.good_folds):
                part = None if cache is None else cache / f"{key}.fold{k}.npz"
                if part is not None and part.is_file():
                    with np.load(part) as z:
                        outer_parts.append(z["outer"])
                        inner_parts.append(z["inner"])
                    prog.advance(task, 1 + cfg.inner_good_folds)
                    continue
                fit = train_good[gfold != k]
                rows = np.concatenate([train_good[gfold == k], others])
                feats = anomaly_features(fit_scorer(table.embedding[fit], cfg.anomaly, blocks), table.embedding[rows])
                outer_k = np.full((n, feats.shape[1]), np.nan, np.float32)
                inner_k = np.full_like(outer_k, np.nan)
                outer_k[rows] = feats
                prog.advance(task)
                inner_fold = np.arange(len(fit)) % cfg.inner_good_folds
                for j in range(cfg.inner_good_folds):
                    s = fit_scorer(table.embedding[fit[inner_fold != j]], cfg.anomaly, blocks)
                    inner_k[fit[inner_fold == j]] = anomaly_features(s, table.embedding[fit[inner_fold == j]])
                    prog.advance(task)
                if part is not None:
                    part.parent.mkdir(parents=True, exist_ok=True)
                    np.savez(part, outer=outer_k, inner=inner_k)
                outer_parts.append(outer_k)
                inner_parts.append(inner_k)
    finally:
        torch.set_num_threads(threads)
    outer, inner = np.stack(outer_parts), np.stack(inner_parts)
    return AnomalyCrossFit(outer, inner, gfold)
