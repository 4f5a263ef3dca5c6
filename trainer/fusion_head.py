"""The fused defect score inside the exported graph: ``FusionHead`` and the retraining's fit of it.

The learning curve (README, ``trainer.learning_curve``) measured the model a combined package should decide
with: ``score = a * log(wknn score) + w . x`` (``trainer.fusion``), x = pooled stages 2-4 of the backbone
(mean, max, std over positions), the channel-wise max over positions of the ``wknn`` whitened patches ``|z|``
and of their residual to the nearest good patch, and log top-k statistics of the anomaly map. ``FusionHead``
computes x from the backbone feature list in torch (so ONE backbone pass feeds the classifier head, the
``wknn`` map and the fused score) and applies the fitted linear model; it is the ``scorer`` of an
``InspectionNet`` and returns ``(fused score [B], map [B,1,h,w])``; the score is ``FusionModel.score`` plus a
constant that puts the median held-out good at 1 (the runtime refuses a threshold <= 0). The fit itself uses the numpy/torch
feature path of the learning curve (``trainer.learning_curve.pool_stages`` and ``anomaly_features``); the
parity test (``tests/trainer/test_fusion_head.py``) holds the graph to it.

:func:`fit_fused_scorer` (the retraining of a ``combined`` station package):

1. one backbone pass over the good frames and the labelled defects (station preprocessing);
2. the good frames split as ``split_holdout`` does (every ``holdout_every``-th from index 2 held out): the
   ``wknn`` bank is fitted on the rest (the "bank goods");
3. the bank goods get anomaly features from ``inner_folds`` inner scorers that never saw them (as the
   curve's inner cross-fit), the defects and the held-out goods from the bank scorer;
4. ``fit_fusion`` on the bank goods and every labelled defect (any class: the fused score is good vs defect);
   with fewer than ``FusionConfig.min_defects`` the fusion falls back to the good-only score (monotone in the
   ``wknn`` score; the inner fits are then skipped, they would only move the normalisation);
5. threshold goods cross-fitted as in the curve (``threshold_folds``, default 5 = ``holdout_every``): fold f
   holds out the goods with index % 5 == f and fits steps 2-4 on the rest; fold 2 (``split_holdout``'s fifth) is
   the package's model, the others only score their held-out goods, so EVERY good is scored once by a bank and
   a probe that never saw it, as the line's frames are (with one fold only 1/5 of the goods would set the
   threshold, and at 160 the rule below can only take their maximum: one odd good sets it). The
   good quantile is the curve's default rule (``threshold_rule="upper_bound"``): the lowest score whose
   false-reject rate on them has a one-sided 95 % Clopper-Pearson upper bound of at most the target
   (``trainer.learning_curve.threshold_upper_bound``), placed at normalised ``1 - review margin``
   (``AnomalySpec.placed``).

The ``anomaly_map`` output is the ``wknn`` map, affinely mapped so that the runtime's normalisation (by the
fused score's origin and threshold) gives the map normalised as a good-only package would: 0 at the median
held-out good score, 1 at the ``wknn`` good-quantile threshold.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from inspector.contracts.manifest import AnomalySpec
from trainer.anomaly import AnomalyConfig, FeatureEmbedding, WhitenedKnnScorer
from trainer.anomaly_config import FUSED_WKNN
from trainer.fusion import FusionConfig, FusionModel

POOL_STAGES = (2, 3, 4)  # timm stages pooled into x (stride 8, 16, 32 of EfficientNet-Lite0)
TOP_K = (4, 16)  # map statistics: max, mean of the top 4, top 16, mean


class FusionHead(nn.Module):
    """backbone features -> (fused defect score [B], wknn anomaly map [B,1,h,w]) in one graph.

    ``pool_take``: positions in the backbone's output list of the pooled stages; the ``wknn`` scorer's own
    ``embed`` picks its stages. The score is ``FusionModel.score`` of the same features (normalised by the
    fusion's training goods: 0 at their median, 1 at their 90th percentile)."""

    def __init__(
        self,
        scorer: WhitenedKnnScorer,
        pool_take: Sequence[int],
        model: FusionModel,
        map_scale: float = 1.0,
        map_shift: float = 0.0,
        score_shift: float = 0.0,
    ) -> None:
        super().__init__()
        self.wknn = scorer
        self.pool_take = tuple(int(i) for i in pool_take)
        self.uses_probe = bool(model.uses_probe)
        self.register_buffer("x_mean", torch.as_tensor(model.mean, dtype=torch.float32))
        self.register_buffer("x_scale", torch.as_tensor(model.scale, dtype=torch.float32))
        self.register_buffer("coef", torch.as_tensor(model.coef, dtype=torch.float32))
        # scalars: a_coef, intercept, a_mean, a_scale, origin, spread, map_scale, map_shift, score_shift
        self.register_buffer(
            "consts",
            torch.tensor(
                [
                    model.anomaly_coef,
                    model.intercept,
                    model.anomaly_mean,
                    model.anomaly_scale,
                    model.origin,
                    model.spread,
                    map_scale,
                    map_shift,
                    score_shift,
                ],
                dtype=torch.float64,
            ),
        )

    def features(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        """(x [B,d] as ``pool_stages`` + ``anomaly_features`` concatenate them, raw wknn map [B,1,h,w])."""
        pooled = []
        for i in self.pool_take:
            flat = features[i].flatten(2)
            mean = flat.mean(-1)
            std = ((flat - mean.unsqueeze(-1)) ** 2).mean(-1).sqrt()  # population std, as numpy
            pooled += [mean, flat.amax(-1), std]
        emb = self.wknn.embed(features)
        z, d2, nearest = self.wknn.nearest_patches(emb)
        amap = self.wknn.blur(d2.clamp_min(0).sqrt())
        flat = amap.flatten(1)
        k = min(max(TOP_K), flat.shape[1])
        top = torch.topk(flat, k, dim=1).values
        stats = torch.stack([top[:, 0], top[:, : TOP_K[0]].mean(1), top[:, :k].mean(1), flat.mean(1)], 1)
        zmax = z.abs().amax(0)
        rmax = (z - nearest).abs().amax(0)
        x = torch.cat([*pooled, stats.clamp_min(1e-6).log(), zmax, rmax], 1)
        return x, amap

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        x, amap = self.features(features)
        c = self.consts.float()
        d_pool = x.shape[1] - 4 - 2 * self.wknn.mean.shape[-1]
        log_a = x[:, d_pool]  # log of the wknn image score (max of the map)
        raw = c[0] * (log_a - c[2]) / c[3] + c[1]
        if self.uses_probe:
            raw = raw + ((x - self.x_mean) / self.x_scale) @ self.coef
        return (raw - c[4]) / c[5] + c[8], amap * c[6] + c[7]


# ----------------------------------------------------------------------------------------------- the numpy path
def extract(
    backbone: nn.Module,
    embed: FeatureEmbedding,
    pool_take: Sequence[int],
    pre: Any,
    images: Sequence[np.ndarray],
    batch_size: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """One backbone pass: (pooled [n, d_pool] via ``pool_stages``, wknn embeddings [n,C,h,w] float32)."""
    from trainer.learning_curve_features import pool_stages

    pooled, embs = [], []
    backbone.eval()
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            feats = backbone(torch.from_numpy(pre.batch(list(images[i : i + batch_size]))))
            embs.append(embed(feats).numpy().astype(np.float32))
            pooled.append(pool_stages([feats[j].numpy() for j in pool_take]))
    return np.concatenate(pooled), np.concatenate(embs)


def fit_wknn(
    embed: FeatureEmbedding, embeddings: np.ndarray, cfg: AnomalyConfig, blocks: Sequence[int] | None
) -> WhitenedKnnScorer:
    from trainer.anomaly import fit_whitened_knn

    parts = [torch.from_numpy(embeddings[i : i + 64]) for i in range(0, len(embeddings), 64)]
    return fit_whitened_knn(embed, parts, cfg, blocks)


def numpy_features(scorer: WhitenedKnnScorer, pooled: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """x of the learning curve: pooled stages beside ``anomaly_features`` of ``scorer``."""
    from trainer.learning_curve_features import anomaly_features

    return np.concatenate([pooled, anomaly_features(scorer, embeddings)], 1)


@dataclass
class _FusionData:
    """One backbone pass over the goods then the defects, and how the rows split."""

    embed: FeatureEmbedding
    blocks: list[int] | None
    pool_take: list[int]
    pooled: np.ndarray  # [n, d_pool]
    emb: np.ndarray  # [n, C, h, w]
    fit_rows: np.ndarray  # bank goods of the package's model
    hold_rows: np.ndarray  # its held-out goods
    def_rows: np.ndarray  # every labelled defect
    probe_possible: bool

    @property
    def d_pool(self) -> int:
        return int(self.pooled.shape[1])


def fit_fused_scorer(
    backbone: nn.Module,
    pre: Any,
    good: Sequence[np.ndarray],
    defects: Sequence[np.ndarray],
    cfg: AnomalyConfig,
    review_margin: float,
    fusion: FusionConfig | None = None,
    inner_folds: int = 4,
    threshold_folds: int = 5,
    say: Callable[[str], None] | None = None,
) -> tuple[FusionHead, AnomalySpec, dict[str, Any]]:
    """The fused scorer of a combined package and its placed threshold (see the module docstring)."""
    from trainer.anomaly import threshold_good_quantile
    from trainer.evaluate import rate_interval
    from trainer.learning_curve_thresholds import threshold_upper_bound

    say = say or (lambda _m: None)
    fusion = fusion or FusionConfig()
    cfg = replace(cfg, **FUSED_WKNN)  # type: ignore[arg-type]  # two known AnomalyConfig fields
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    data = _extract_fusion_data(backbone, pre, good, defects, cfg, fusion)
    seconds["features"] = round(time.perf_counter() - t0, 1)
    say(
        f"fused scorer: {threshold_folds} fold(s): wknn bank on {len(data.fit_rows)} goods, fusion on them + "
        f"{len(defects)} labelled defects; every good scored once by the fold model that never saw it"
    )
    folds = _score_held_out_goods(data, len(good), cfg, fusion, inner_folds, threshold_folds, seconds)
    scorer, model, x_hold, hold = folds.scorer, folds.model, folds.x_hold, folds.scores
    shift = 1.0 - float(np.median(hold))  # the runtime needs a positive threshold: median held-out good at 1
    hold = hold + shift
    target = cfg.target_false_reject
    q = threshold_upper_bound(hold, target)
    origin = float(np.median(hold))
    spec = AnomalySpec.placed(q, origin, review_margin, threshold_method="good_quantile", target_false_reject=target)
    # the map in good-only units: what fit_anomaly's holdout rule would place for the wknn score alone
    hold_w = np.exp(x_hold[:, data.d_pool].astype(np.float64))
    spec_w = AnomalySpec.placed(threshold_good_quantile(hold_w, target), float(np.median(hold_w)), review_margin)
    scale = (spec.threshold - spec.origin) / (spec_w.threshold - spec_w.origin)
    head = FusionHead(scorer, data.pool_take, model, scale, spec.origin - spec_w.origin * scale, shift).eval()
    k_above = int((hold > q).sum())
    seconds["total"] = round(time.perf_counter() - t0, 1)
    info = {
        **_fitted_models_info(folds, data, len(defects), inner_folds),
        "threshold_rule": "upper_bound (95 % Clopper-Pearson on held-out goods, as trainer learning-curve)",
        "threshold_good_quantile": q,
        "score_origin": origin,
        "score_shift": shift,
        "target_false_reject": target,
        "threshold_goods_above": k_above,
        "threshold_frr_ci95": rate_interval(k_above, len(hold)),
        "plain_quantile": threshold_good_quantile(hold, target),
        "wknn_map_units": {"threshold": spec_w.threshold, "origin": spec_w.origin},
        "features": int(x_hold.shape[1]),
        "seconds": seconds,
    }
    return head, spec, info


@dataclass
class _FoldScores:
    """The package's fold model and every good's held-out score (each by the fold model that never saw it)."""

    scorer: WhitenedKnnScorer  # the package's wknn bank (fold 2)
    model: FusionModel  # the package's fusion (fold 2)
    x_hold: np.ndarray  # fold 2's held-out goods' features
    scores: np.ndarray  # fold 2's held-out goods' scores, then the other folds'
    probe_uses: list[bool]  # whether each other fold's model uses the probe
    n_folds: int


def _score_held_out_goods(
    data: _FusionData,
    n_good: int,
    cfg: AnomalyConfig,
    fusion: FusionConfig,
    inner_folds: int,
    threshold_folds: int,
    seconds: dict[str, float],
) -> _FoldScores:
    """Fit the fold models and score each fold's held-out goods with the model that never saw them."""
    # fold f holds out the goods with index % holdout_every == f; fold 2 is split_holdout's fifth: the package's
    # model. The other folds' models only score their own held-out goods for the threshold (the fusion scores
    # are normalised by each model's training goods so that fold models share one threshold, as in the curve).
    folds = [2] + [f for f in range(cfg.holdout_every) if f != 2][: max(threshold_folds, 1) - 1]
    fold_of = np.arange(n_good) % cfg.holdout_every
    scores_parts, probe_uses = [], []
    scorer, model = _fit_fold_model(data, data.fit_rows, cfg, fusion, inner_folds, seconds)
    x_hold = numpy_features(scorer, data.pooled[data.hold_rows], data.emb[data.hold_rows])
    for f in folds[1:]:
        s_f, m_f = _fit_fold_model(data, np.flatnonzero(fold_of != f), cfg, fusion, inner_folds, seconds)
        rows = np.flatnonzero(fold_of == f)
        x_f = numpy_features(s_f, data.pooled[rows], data.emb[rows])
        scores_parts.append(m_f.score(x_f, x_f[:, data.d_pool]))
        probe_uses.append(m_f.uses_probe)
    hold = np.concatenate([model.score(x_hold, x_hold[:, data.d_pool]), *scores_parts])
    return _FoldScores(scorer, model, x_hold, hold, probe_uses, len(folds))


def _fitted_models_info(folds: _FoldScores, data: _FusionData, n_defects: int, inner_folds: int) -> dict[str, Any]:
    """The fused scorer's report: what was fitted, on how many images, by how many fold models."""
    model = folds.model
    return {
        "method": "fused: wknn good-only score + guarded ridge probe (trainer.fusion), one graph (FusionHead)",
        "fusion": model.summary(),
        "uses_probe": model.uses_probe,
        "labelled_defects": n_defects,
        "fit_images": len(data.fit_rows),
        "threshold_images": len(folds.scores),
        "threshold_folds": folds.n_folds,
        "fold_models_using_probe": f"{sum(folds.probe_uses) + model.uses_probe}/{folds.n_folds}",
        "inner_folds": inner_folds if data.probe_possible else 0,
    }


def _extract_fusion_data(
    backbone: nn.Module,
    pre: Any,
    good: Sequence[np.ndarray],
    defects: Sequence[np.ndarray],
    cfg: AnomalyConfig,
    fusion: FusionConfig,
) -> _FusionData:
    """Check the inputs, split the goods as ``split_holdout`` does, and run the one backbone pass."""
    from inspector.contracts.errors import DataError
    from trainer.anomaly import feature_positions
    from trainer.pipelines import split_holdout

    if cfg.method != "wknn":
        raise DataError(f"the fused score reads the wknn scorer, not {cfg.method!r}", "use method wknn")
    fit_idx, hold_idx = split_holdout(len(good), cfg.holdout_every)
    if len(hold_idx) < 10:
        raise DataError(
            f"only {len(good)} good images: too few to hold out a threshold set",
            "collect at least 100 good images (200-500 recommended for anomaly detection)",
        )
    take = feature_positions(backbone, cfg.out_indices)
    pool_take = feature_positions(backbone, POOL_STAGES)
    embed = FeatureEmbedding(take, cfg.pool, cfg.downsample)
    blocks = None
    if cfg.whiten_blocks == "stage":
        channels = list(backbone.feature_info.channels())  # type: ignore[union-attr, operator]
        blocks = [channels[i] for i in take]
    pooled, emb = extract(backbone, embed, pool_take, pre, list(good) + list(defects), cfg.batch_size)
    n_good = len(good)
    return _FusionData(
        embed,
        blocks,
        pool_take,
        pooled,
        emb,
        np.array(fit_idx),
        np.array(hold_idx),
        np.arange(n_good, n_good + len(defects)),
        len(defects) >= max(fusion.min_defects, fusion.inner_folds),
    )


def _fit_fold_model(
    data: _FusionData,
    fit_r: np.ndarray,
    cfg: AnomalyConfig,
    fusion: FusionConfig,
    inner_folds: int,
    seconds: dict[str, float],
) -> tuple[WhitenedKnnScorer, FusionModel]:
    """The ``wknn`` bank on the goods ``fit_r`` and the fusion on them plus every labelled defect."""
    from threadpoolctl import threadpool_limits

    from trainer.fusion import fit_fusion

    embed, blocks, pooled, emb = data.embed, data.blocks, data.pooled, data.emb
    def_rows, d_pool = data.def_rows, data.d_pool
    t = time.perf_counter()
    scorer = fit_wknn(embed, emb[fit_r], cfg, blocks)
    seconds["wknn"] = seconds.get("wknn", 0.0) + round(time.perf_counter() - t, 1)
    x_def = numpy_features(scorer, pooled[def_rows], emb[def_rows]) if len(def_rows) else None
    t = time.perf_counter()
    if data.probe_possible:  # the bank goods' anomaly features from inner scorers that never saw them
        x_fit = np.zeros((len(fit_r), d_pool + 4 + 2 * emb.shape[1]), np.float32)
        inner = np.arange(len(fit_r)) % inner_folds
        for j in range(inner_folds):
            s_j = fit_wknn(embed, emb[fit_r[inner != j]], cfg, blocks)
            rows = fit_r[inner == j]
            x_fit[inner == j] = numpy_features(s_j, pooled[rows], emb[rows])
    else:  # fallback: only the normalisation uses them
        x_fit = numpy_features(scorer, pooled[fit_r], emb[fit_r])
    seconds["inner_wknn"] = seconds.get("inner_wknn", 0.0) + round(time.perf_counter() - t, 1)
    x_train = x_fit if x_def is None else np.concatenate([x_fit, x_def])
    y = np.r_[np.zeros(len(x_fit), bool), np.ones(0 if x_def is None else len(x_def), bool)]
    with threadpool_limits(1):
        return scorer, fit_fusion(x_train, x_train[:, d_pool], y, fusion)
