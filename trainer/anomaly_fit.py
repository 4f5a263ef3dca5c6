"""Fitting the good-only anomaly scorers on good images only (``trainer.anomaly``): embeddings streamed from the
backbone, per-position Gaussians, greedy k-center banks, and ``fit_anomaly_scorer`` for the configured method.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from rich.progress import track
from torch import Tensor, nn

from inspector.contracts.errors import DataError
from trainer.anomaly_config import ANOMALY_METHODS, AnomalyConfig, AnomalyModelError
from trainer.anomaly_scorers import (
    FeatureEmbedding,
    PatchKnnScorer,
    PositionalGaussianScorer,
    WhitenedKnnScorer,
    whiten,
    whitening_factor,
)


def greedy_coreset(
    features: Tensor, n: int, seed: int = 0, proj_dim: int | None = 64, start: int | None = None
) -> Tensor:
    """Indices of ``n`` rows chosen by greedy k-center (each next row is the farthest from those chosen).

    Distances are computed on a random projection to ``proj_dim`` dims (None: the raw features), one
    vectorised mat-vec per pick, so 600k x 152 rows -> 4k rows takes seconds rather than hours.
    """
    if features.ndim != 2 or len(features) == 0:
        raise AnomalyModelError(
            f"greedy_coreset needs a non-empty [N,D] tensor, got {tuple(features.shape)}",
            "flatten the feature maps to rows first",
        )
    x = features.float()
    n = min(int(n), len(x))
    g = torch.Generator().manual_seed(seed)
    if proj_dim and x.shape[1] > proj_dim:
        x = x @ (torch.randn(x.shape[1], proj_dim, generator=g) / math.sqrt(proj_dim))
    sq = (x * x).sum(1)
    idx = torch.empty(n, dtype=torch.long)
    idx[0] = int(torch.randint(len(x), (1,), generator=g)) if start is None else int(start)
    mind = torch.full((len(x),), float("inf"))
    for i in range(1, n):
        c = x[idx[i - 1]]
        torch.minimum(mind, sq - 2 * (x @ c) + (c * c).sum(), out=mind)
        idx[i] = int(torch.argmax(mind))
    return idx


def feature_positions(backbone: nn.Module, out_indices: Sequence[int]) -> list[int]:
    """Positions in the backbone's output list of the wanted timm stages."""
    info = getattr(backbone, "feature_info", None)
    have = list(info.out_indices) if info is not None else list(range(max(out_indices) + 1))
    missing = [i for i in out_indices if i not in have]
    if missing:
        raise AnomalyModelError(
            f"backbone does not output stages {missing} (it outputs {have})",
            "build the backbone with out_indices including the scorer's stages",
        )
    return [have.index(i) for i in out_indices]


def _batches(images: Tensor | Iterable[Tensor], batch_size: int) -> Iterable[Tensor]:
    if isinstance(images, Tensor):
        yield from images.split(batch_size)
    else:
        yield from images


@torch.inference_mode()
def extract_embeddings(
    backbone: nn.Module,
    embed: FeatureEmbedding,
    images: Tensor | Iterable[Tensor],
    batch_size: int = 16,
    label: str = "features",
) -> Iterable[Tensor]:
    """Yields the [b,C,h,w] embeddings of each batch of normalised images, with a progress bar."""
    backbone.eval()
    total = math.ceil(len(images) / batch_size) if isinstance(images, Tensor) else None
    for batch in track(_batches(images, batch_size), description=label, total=total, transient=True):
        yield embed(backbone(batch))


def fit_gaussian(embeddings: Iterable[Tensor], eps: float) -> tuple[Tensor, Tensor, tuple[int, int]]:
    """Per-position mean [P,C] and precision [P,C,C] from streamed embeddings.

    Sums are taken around the first batch's mean (float32 GEMMs, float64 accumulators) for stability.
    """
    n, shift, s1, s2, grid = 0, None, None, None, (0, 0)
    for e in embeddings:
        x = e.float().flatten(2).permute(2, 0, 1).contiguous()  # [P,b,C]
        shift = x.mean(1, keepdim=True) if shift is None else shift
        x = x - shift
        b1, b2 = x.sum(1).double(), (x.transpose(1, 2) @ x).double()
        s1, s2 = (b1, b2) if s1 is None or s2 is None else (s1 + b1, s2 + b2)
        n, grid = n + x.shape[1], (e.shape[-2], e.shape[-1])
    if shift is None or s1 is None or s2 is None or n < 2:
        raise DataError("at least two good images are needed to fit the anomaly model", "pass more good images")
    centred = s1 / n
    cov = (s2 - n * centred.unsqueeze(2) * centred.unsqueeze(1)) / (n - 1)
    cov = cov + eps * torch.eye(cov.shape[-1], dtype=cov.dtype)
    # Cholesky, not LU: batched LU inverse trips an MKL pivot error on this CPU
    precision = torch.cholesky_inverse(torch.linalg.cholesky(cov))
    return (centred.float() + shift[:, 0]), precision.float(), grid


def fit_whitened_knn(
    embed: FeatureEmbedding, embeddings: list[Tensor], cfg: AnomalyConfig, blocks: Sequence[int] | None = None
) -> WhitenedKnnScorer:
    """Per-position Gaussians (one per channel block), then the bank of every good patch whitened at its own
    position ([P,N,C]). ``blocks``: channels per block (default: all channels in one)."""
    channels = embeddings[0].shape[1]
    sizes = list(blocks) if blocks else [channels]
    if sum(sizes) != channels:
        raise AnomalyModelError(
            f"channel blocks {sizes} do not add up to the embedding's {channels} channels",
            "pass the channel count of each backbone stage the embedding concatenates",
        )
    means, factors, start, grid = [], [], 0, (0, 0)
    for c in sizes:
        mean, precision, grid = fit_gaussian((e[:, start : start + c] for e in embeddings), cfg.eps)
        means.append(mean)
        factors.append(whitening_factor(precision))
        start += c
    mean = torch.cat(means, -1)
    with torch.inference_mode():
        patches = torch.cat([whiten(e.float().flatten(2).permute(2, 0, 1), mean, factors) for e in embeddings], dim=1)
    bank = patches
    if cfg.position_bank and patches.shape[1] > cfg.position_bank:
        bank = torch.stack(
            [
                row[greedy_coreset(row, cfg.position_bank, proj_dim=None, start=int((row * row).sum(1).argmax()))]
                for row in track(patches, description="position banks", transient=True)
            ]
        )
    k = min(cfg.lof_k, patches.shape[1] - 1)  # a handful of good images: the nearest ones there are
    radius = bank_radius(bank, patches, k, cfg.lof_alpha) if k > 0 else None
    return WhitenedKnnScorer(embed, mean, factors, bank, grid, cfg.neighbours, cfg.blur_sigma, radius).eval()


@torch.inference_mode()
def bank_radius(bank: Tensor, patches: Tensor, k: int, alpha: float, chunk: int = 32) -> Tensor:
    """[P,N] radius of each bank patch for the local-density correction: ``alpha`` times (its distance to its
    k-th nearest other good patch at its position, less the median of those distances). ``bank`` [P,N,C] is
    drawn from ``patches`` [P,M,C] (whitened), so a patch's nearest is itself, at 0: the k-th other is k+1-th."""
    if not 0 < k < patches.shape[1]:
        raise AnomalyModelError(
            f"lof_k {k} needs more than {k} good images to fit on (got {patches.shape[1]})",
            "lower lof_k, or fit on more good images (0 turns the correction off)",
        )
    out = []
    for i in range(0, bank.shape[0], chunk):
        b, x = bank[i : i + chunk].float(), patches[i : i + chunk].float()
        d2 = (b * b).sum(-1, keepdim=True) - 2 * b @ x.transpose(1, 2) + (x * x).sum(-1).unsqueeze(1)  # [p,N,M]
        out.append(torch.topk(d2, k + 1, -1, largest=False).values[..., k].clamp_min(0).sqrt())
    radius = torch.cat(out)
    return alpha * (radius - radius.median())


def fit_anomaly_scorer(
    backbone: nn.Module, good_images: Tensor | Iterable[Tensor], config: AnomalyConfig | None = None
) -> nn.Module:
    """Fits the configured scorer on good images only (normalised [B,3,H,W] tensor or iterable of batches)."""
    cfg = config or AnomalyConfig()
    embed = _embedding(backbone, cfg)
    return _fit_scorer(
        backbone, embed, extract_embeddings(backbone, embed, good_images, cfg.batch_size, f"fit {cfg.method}"), cfg
    )


def fit_scorer_on_features(
    backbone: nn.Module, feature_batches: Iterable[list[Tensor]], config: AnomalyConfig | None = None
) -> nn.Module:
    """``fit_anomaly_scorer`` on backbone outputs already computed (one list of feature maps per batch): the
    cross-fit of the threshold (``trainer.anomaly_crossfit``) fits several scorers on one backbone pass."""
    cfg = config or AnomalyConfig()
    embed = _embedding(backbone, cfg)
    return _fit_scorer(backbone, embed, (embed(f) for f in feature_batches), cfg)


def _embedding(backbone: nn.Module, cfg: AnomalyConfig) -> FeatureEmbedding:
    if cfg.method not in ANOMALY_METHODS:
        raise AnomalyModelError(f"unknown anomaly method {cfg.method!r}", f"use one of {', '.join(ANOMALY_METHODS)}")
    if cfg.downsample < 1:
        raise AnomalyModelError(f"downsample must be >= 1 (got {cfg.downsample})", "use 1 (stride 8) or 2 (stride 16)")
    down = cfg.downsample if cfg.method in ("gaussian", "wknn") else 1  # knn keeps stride 8 (its bank is tuned there)
    return FeatureEmbedding(feature_positions(backbone, cfg.out_indices), cfg.pool, down)


def _fit_scorer(
    backbone: nn.Module, embed: FeatureEmbedding, stream: Iterable[Tensor], cfg: AnomalyConfig
) -> nn.Module:
    if cfg.method == "wknn":
        blocks = None
        if cfg.whiten_blocks == "stage":
            channels = list(backbone.feature_info.channels())  # type: ignore[union-attr, operator]  # timm features_only models carry feature_info
            blocks = [channels[i] for i in embed.take]
        return fit_whitened_knn(embed, list(stream), cfg, blocks)
    if cfg.method == "gaussian":
        mean, precision, grid = fit_gaussian(stream, cfg.eps)
        return PositionalGaussianScorer(embed, mean, precision, grid, cfg.blur_sigma).eval()
    rows = torch.cat([e.flatten(2).transpose(1, 2).reshape(-1, e.shape[1]) for e in stream])
    if len(rows) == 0:
        raise DataError("no good images were given to fit the anomaly model", "pass at least one good image")
    keep = greedy_coreset(rows, cfg.bank_size, cfg.seed, cfg.coreset_proj_dim)
    return PatchKnnScorer(embed, rows[keep], cfg.k, cfg.blur_sigma).eval()
