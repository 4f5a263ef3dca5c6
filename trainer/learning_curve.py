"""The learning-curve experiment: recall at a good-only false-reject budget as labelled defects grow.

``trainer learning-curve DATA`` on an anomaly-layout folder (train/good, test/good, test/<defect>):

1. Features, once per image (cached as .npy when a cache folder is given): the frozen EfficientNet-Lite0
   (``trainer.backbone.build_backbone``) at the anomaly model's preprocessing; the ``wknn`` embedding (stages 2+3)
   and pooled stages 2-4 (mean, max, std over positions).
2. Good images are cross-fitted: train/good is split into ``good_folds`` folds. For fold k, the ``wknn`` anomaly
   scorer (``trainer.anomaly.fit_whitened_knn``, the project's default model) is fitted on the other folds and
   scores fold k, test/ and the defects; inside the other folds an inner cross-fit gives every TRAINING good image
   anomaly features from a scorer that never saw it. Fold k's good images are used only to set the threshold.
3. Defects are cross-fitted per class: for a labelled fraction f, each class is split into round(1/f) folds; one
   fold is labelled (training), the rest are scored; ``rotations`` different folds are labelled in turn.
4. For every (fraction, rotation, good fold) ``trainer.fusion.fit_fusion`` is fitted on the fold's training goods
   and the labelled defects. Scored images get the mean of the good folds' normalised scores; the threshold is
   the (1 - target) quantile of the cross-fitted scores of train/good (each scored by the one model that did not
   see it). Recall, false-reject rate (test/good) and image AUROC are measured on test/good plus the defects not
   labelled in that rotation: no scored image was ever trained on, and the threshold never sees a defect.

Fraction 0 is the good-only ``wknn`` scorer through the same cross-fit (threshold from held-out good images).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from inspector.contracts.errors import DataError
from trainer.anomaly import AnomalyConfig
from trainer.fusion import FusionConfig, fit_fusion

CACHE_VERSION = "lc1"


@dataclass(frozen=True)
class CurveConfig:
    """The experiment's fixed choices (the README documents them; none is tuned on the scored images)."""

    fractions: tuple[float, ...] = (0.0, 0.05, 0.10, 0.25, 0.50)
    good_folds: int = 5
    inner_good_folds: int = 4
    rotations: int = 4  # labelled folds per fraction (all of them when there are fewer, e.g. 2 at 50 %)
    target_false_reject: float = 0.02
    threshold_rule: str = "upper_bound"  # or "quantile": the plain (1 - target) quantile of held-out good scores
    seed: int = 0
    anomaly: AnomalyConfig = field(default_factory=AnomalyConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)


# ----------------------------------------------------------------------------------------------- bookkeeping
def good_fold_ids(n: int, folds: int, seed: int = 0) -> np.ndarray:
    """Fold id (0..folds-1) of each of ``n`` good images, balanced, shuffled with ``seed``."""
    if n < 2 * folds:
        raise DataError(f"only {n} good training images for {folds} folds", "collect more good images")
    ids = np.arange(n) % folds
    return np.random.default_rng(seed).permutation(ids)


def defect_rotations(classes: Sequence[str], fraction: float, rotations: int, seed: int = 0) -> list[np.ndarray]:
    """Labelled masks over the defect images: per class, round(1/fraction) folds, one labelled per rotation.

    Every class keeps at least one labelled and one scored image. Returns at most ``rotations`` masks (bool [n]).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    cls = np.asarray(classes)
    k = max(2, round(1.0 / fraction))
    rng = np.random.default_rng(seed)
    fold_of = np.zeros(len(cls), dtype=int)
    folds_of = np.zeros(len(cls), dtype=int)  # folds of the image's class (fewer than k for small classes)
    for c in sorted(set(cls.tolist())):
        idx = np.flatnonzero(cls == c)
        if len(idx) < 2:
            raise DataError(f"defect class {c!r} has {len(idx)} image(s)", "each defect class needs at least 2 images")
        kc = min(k, len(idx))
        for f, part in enumerate(np.array_split(rng.permutation(idx), kc)):
            fold_of[part] = f
        folds_of[idx] = kc
    masks = [fold_of == (r % folds_of) for r in range(min(rotations, k))]
    return masks


@dataclass
class FoldFit:
    """One fitted model of the curve: what it was trained on and what it scores (indices into the image table)."""

    fraction: float
    rotation: int
    good_fold: int
    train_good: np.ndarray  # train/good images fitting the probe (and, in inner folds, the anomaly scorers)
    anomaly_fit_good: np.ndarray  # train/good images in the anomaly scorer that scores this fold
    threshold_good: np.ndarray  # train/good images scored for the threshold (never fitted by this model)
    train_defect: np.ndarray  # labelled defect images
    scored: np.ndarray  # test/good + unlabelled defects


def crossfit_plan(is_train_good: np.ndarray, is_test_good: np.ndarray, defect_class: Sequence[str | None],
                  cfg: CurveConfig) -> list[FoldFit]:
    """Every model the curve fits, as index sets; ``check_plan`` proves no scored image was trained on."""
    train_good = np.flatnonzero(is_train_good)
    test_good = np.flatnonzero(is_test_good)
    defects = np.array([i for i, c in enumerate(defect_class) if c is not None])
    classes = [defect_class[i] for i in defects]
    gfold = good_fold_ids(len(train_good), cfg.good_folds, cfg.seed)
    plan = []
    for f in cfg.fractions:
        masks = [np.zeros(len(defects), bool)] if f == 0 else defect_rotations(classes, f, cfg.rotations, cfg.seed)  # type: ignore[arg-type]
        for r, labelled in enumerate(masks):
            for k in range(cfg.good_folds):
                fit = train_good[gfold != k]
                plan.append(FoldFit(f, r, k, fit, fit, train_good[gfold == k], defects[labelled],
                                    np.concatenate([test_good, defects[~labelled]])))
    return plan


def check_plan(plan: Sequence[FoldFit]) -> None:
    """Raises AssertionError if any model scores (or thresholds with) an image it was fitted on."""
    for p in plan:
        fitted = set(p.train_good.tolist()) | set(p.anomaly_fit_good.tolist()) | set(p.train_defect.tolist())
        assert not fitted & set(p.scored.tolist()), f"fraction {p.fraction} rotation {p.rotation}: scored image fitted"
        assert not fitted & set(p.threshold_good.tolist()), f"fraction {p.fraction}: threshold image fitted"
        assert not set(p.threshold_good.tolist()) & set(p.scored.tolist())


# ----------------------------------------------------------------------------------------------- features
@dataclass
class ImageTable:
    """Every image of the data folder with its role and features (rows in the same order everywhere)."""

    paths: list[str]
    is_train_good: np.ndarray
    is_test_good: np.ndarray
    defect_class: list[str | None]
    pooled: np.ndarray  # [n, d_pool] pooled backbone stages
    embedding: np.ndarray  # [n, C, h, w] float16 wknn embedding

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


def list_images(data_dir: Path) -> tuple[list[str], np.ndarray, np.ndarray, list[str | None]]:
    from trainer.data import scan_anomaly

    data = scan_anomaly(data_dir)
    test_good = [s for s in data.test if s.label == 0]
    test_bad = [s for s in data.test if s.label == 1]
    if not data.train or not test_good or not test_bad:
        raise DataError(f"{data_dir} needs train/good, test/good and test/<defect> images",
                        "use the anomaly layout (MVTec AD)")
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
        return ImageTable(paths, is_tr, is_tg, classes, pooled, emb)
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
            imgs = [np.asarray(load_rgb(Path(p))) for p in paths[i:i + bs]]
            feats = backbone(torch.from_numpy(pre.batch(imgs)))
            embs.append(embed(feats).numpy().astype(np.float16))
            pooled.append(pool_stages([feats[j].numpy() for j in pool_take]))
            prog.advance(task, len(imgs))
    table = ImageTable(paths, is_tr, is_tg, classes, np.concatenate(pooled), np.concatenate(embs))
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

    embs = [torch.from_numpy(embeddings[i:i + 64].astype(np.float32)) for i in range(0, len(embeddings), 64)]
    return fit_whitened_knn(FeatureEmbedding([0]), embs, cfg, blocks)


def anomaly_features(scorer, embeddings: np.ndarray, batch: int = 64) -> np.ndarray:  # type: ignore[no-untyped-def]
    """[n, 4 + 2C] per image: log image score (wknn), log top-4 / top-16 / mean of the anomaly map, the channel-wise
    max over positions of the whitened patch ``|z|``, and of the residual ``|z - nearest good patch|``."""
    import torch

    h, w = scorer.grid
    bank = scorer.bank_t.transpose(1, 2)  # [P, N, C]
    P, N, C = bank.shape
    far = torch.full((P, N, C), 1e4)
    cands = []
    grid = bank.reshape(h, w, N, C)
    for dy, dx in scorer.offsets:  # query (y, x) meets bank (y + dy, x + dx)
        shifted = far.clone().reshape(h, w, N, C)
        ys, xs = slice(max(0, -dy), h - max(0, dy)), slice(max(0, -dx), w - max(0, dx))
        yb, xb = slice(max(0, dy), h - max(0, -dy)), slice(max(0, dx), w - max(0, -dx))
        shifted[ys, xs] = grid[yb, xb]
        cands.append(shifted.reshape(P, N, C))
    zero = torch.where(scorer.border.reshape(P, 1, 1), torch.zeros(P, 1, C), torch.full((P, 1, C), 1e4))
    cand = torch.cat([*cands, zero], 1)  # [P, M, C]
    cand_t, cand_sq = cand.transpose(1, 2).contiguous(), (cand * cand).sum(-1).unsqueeze(1)
    out = []
    with torch.inference_mode():
        for i in range(0, len(embeddings), batch):
            e = torch.from_numpy(embeddings[i:i + batch].astype(np.float32))
            z = scorer.whiten_patches(e.flatten(2).permute(2, 0, 1))  # [P, B, C]
            d2 = (z * z).sum(-1, keepdim=True) - 2 * torch.matmul(z, cand_t) + cand_sq  # [P, B, M]
            best, arg = d2.min(-1)
            nearest = torch.gather(cand, 1, arg.unsqueeze(-1).expand(-1, -1, C))  # [P, B, C]
            dist = best.clamp_min(0).sqrt().transpose(0, 1).reshape(-1, 1, h, w)
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
    key = _cache_key(table.paths, cfg.anomaly) + hashlib.sha256(
        json.dumps([cfg.good_folds, cfg.inner_good_folds, cfg.seed, asdict(cfg.anomaly)], default=str).encode()
    ).hexdigest()[:8]
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
            task = prog.add_task("cross-fitting wknn anomaly scorers on good images",
                                 total=cfg.good_folds * (1 + cfg.inner_good_folds))
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


# ----------------------------------------------------------------------------------------------- the curve
def _rate(k: int, n: int) -> tuple[float, float] | None:
    from trainer.evaluate import rate_interval

    return rate_interval(k, n)


def _auroc(scores: np.ndarray, is_defect: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(is_defect, scores))


def threshold_upper_bound(good_scores: np.ndarray, target: float, confidence: float = 0.95) -> float:
    """The lowest threshold whose held-out false-reject rate has a one-sided ``confidence`` upper bound
    (Clopper-Pearson) of at most ``target``: "at most 2 %" then holds with 95 % confidence, not just on average."""
    from scipy.stats import beta

    s = np.sort(np.asarray(good_scores, np.float64))[::-1]
    n, k = len(s), 0
    while k + 1 < n and beta.ppf(confidence, k + 2, n - k - 1) <= target:
        k += 1
    return float(s[k])  # k good images lie strictly above it (ties aside)


def _oracle_recall(scores: np.ndarray, is_defect: np.ndarray, target: float) -> float:
    """Recall at the threshold set on the SCORED good images (optimistic; for comparison with the field notes)."""
    from trainer.anomaly import threshold_good_quantile

    t = threshold_good_quantile(scores[~is_defect], target)
    return float((scores[is_defect] > t).mean())


def evaluate_rotation(table: ImageTable, anom: AnomalyCrossFit, labelled: np.ndarray, cfg: CurveConfig,
                      plan: Sequence[FoldFit]) -> dict[str, Any]:
    """Fit the good folds' fusion models for one labelled set, score the rest, measure the operating point."""
    from trainer.anomaly import threshold_good_quantile

    feats_of = lambda k, rows, src: np.concatenate([table.pooled[rows], src[k, rows]], 1)  # noqa: E731
    thr_scores = np.full(len(table.paths), np.nan)
    scored = plan[0].scored
    total = np.zeros(len(scored))
    models = []
    for p in plan:
        k = p.good_fold
        x = np.concatenate([feats_of(k, p.train_good, anom.inner), feats_of(k, p.train_defect, anom.outer)])
        y = np.r_[np.zeros(len(p.train_good), bool), np.ones(len(p.train_defect), bool)]
        model = fit_fusion(x, x[:, table.pooled.shape[1]], y, cfg.fusion)
        xt = feats_of(k, p.threshold_good, anom.outer)
        thr_scores[p.threshold_good] = model.score(xt, xt[:, table.pooled.shape[1]])
        xs = feats_of(k, scored, anom.outer)
        total += model.score(xs, xs[:, table.pooled.shape[1]]) / len(plan)
        models.append(model.summary())
    good_thr = thr_scores[table.is_train_good]
    assert np.isfinite(good_thr).all(), "every train/good image must be scored by the model that did not see it"
    plain = threshold_good_quantile(good_thr, cfg.target_false_reject)
    threshold = threshold_upper_bound(good_thr, cfg.target_false_reject) if cfg.threshold_rule == "upper_bound" else plain
    is_def = np.array([table.defect_class[i] is not None for i in scored])
    flagged = total > threshold
    flagged_plain = total > plain
    per_class = {}
    for c in sorted({table.defect_class[i] for i in scored if table.defect_class[i] is not None}):  # type: ignore[type-var]
        m = np.array([table.defect_class[i] == c for i in scored])
        per_class[c] = (int(flagged[m].sum()), int(m.sum()))
    return {"detected": int(flagged[is_def].sum()), "defects": int(is_def.sum()),
            "false_rejects": int(flagged[~is_def].sum()), "goods": int((~is_def).sum()),
            "auroc": _auroc(total, is_def), "threshold": threshold, "per_class": per_class,
            "plain_quantile": {"threshold": plain, "detected": int(flagged_plain[is_def].sum()),
                               "false_rejects": int(flagged_plain[~is_def].sum())},
            "oracle_recall": _oracle_recall(total, is_def, cfg.target_false_reject),
            "labelled": int(labelled.sum()), "models": models,
            "probe_models": sum(1 for m in models if m["uses_probe"])}


def run_learning_curve(data_dir: str | Path, cfg: CurveConfig | None = None, cache: Path | None = None,
                       console: Console | None = None) -> dict[str, Any]:
    """The whole experiment; returns the JSON-ready result (``points`` one per labelled fraction)."""
    console = console or Console(stderr=True)
    cfg = cfg or CurveConfig()
    t0 = time.perf_counter()
    data_dir = Path(data_dir)
    table = extract_table(data_dir, cfg.anomaly, cache, console)
    t_feat = time.perf_counter() - t0
    anom = crossfit_anomaly(table, cfg, cache, console)
    t_anom = time.perf_counter() - t0 - t_feat
    result = curve_from_features(table, anom, cfg, console)
    result["data"] = str(data_dir)
    result["seconds"] = {"features": round(t_feat, 1), "anomaly_crossfit": round(t_anom, 1),
                         "fusion": result["seconds"]["fusion"], "total": round(time.perf_counter() - t0, 1)}
    return result


def curve_from_features(table: ImageTable, anom: AnomalyCrossFit, cfg: CurveConfig,
                        console: Console | None = None) -> dict[str, Any]:
    """The curve from extracted features (``extract_table``) and cross-fitted anomaly features."""
    console = console or Console(stderr=True)
    t0 = time.perf_counter()
    plan = crossfit_plan(table.is_train_good, table.is_test_good, table.defect_class, cfg)
    check_plan(plan)
    groups: dict[tuple[float, int], list[FoldFit]] = {}
    for p in plan:
        groups.setdefault((p.fraction, p.rotation), []).append(p)
    defects = np.flatnonzero(table.is_defect)
    results: dict[float, list[dict[str, Any]]] = {}
    from threadpoolctl import threadpool_limits

    # one BLAS thread: small eigendecompositions oversubscribe a loaded 2-core machine (35 s instead of 3 s)
    with Progress(console=console, transient=True) as prog, threadpool_limits(1):
        task = prog.add_task("fitting fusion models (fraction x rotation x good fold)", total=len(plan))
        for (f, _r), fits in groups.items():
            labelled = np.isin(defects, fits[0].train_defect)
            results.setdefault(f, []).append(evaluate_rotation(table, anom, labelled, cfg, fits))
            prog.advance(task, len(fits))
    points = [_point(f, rs) for f, rs in results.items()]
    n_classes = {c: int(sum(1 for d in table.defect_class if d == c)) for c in sorted({d for d in table.defect_class if d})}
    return {
        "data": None, "method": "wknn good-only score fused with a linear probe (trainer.fusion)",
        "images": {"train_good": int(table.is_train_good.sum()), "test_good": int(table.is_test_good.sum()),
                   "defects": n_classes},
        "target_false_reject": cfg.target_false_reject,
        "threshold_rule": cfg.threshold_rule,
        "config": {"good_folds": cfg.good_folds, "inner_good_folds": cfg.inner_good_folds, "rotations": cfg.rotations,
                   "seed": cfg.seed, "fusion": asdict(cfg.fusion),
                   "anomaly": {k: v for k, v in asdict(cfg.anomaly).items() if k in (
                       "backbone", "out_indices", "image_size", "method", "position_bank", "downsample")}},
        "points": points,
        "seconds": {"fusion": round(time.perf_counter() - t0, 1)},
    }


def _point(fraction: float, rotations: list[dict[str, Any]]) -> dict[str, Any]:
    """One curve point from its rotations: pooled counts (recall, false rejects) and mean AUROC."""
    det = sum(r["detected"] for r in rotations)
    n_def = sum(r["defects"] for r in rotations)
    fr = sum(r["false_rejects"] for r in rotations)
    n_good = sum(r["goods"] for r in rotations)
    per_class: dict[str, list[int]] = {}
    for r in rotations:
        for c, (k, n) in r["per_class"].items():
            acc = per_class.setdefault(c, [0, 0])
            acc[0] += k
            acc[1] += n
    recalls = [r["detected"] / r["defects"] for r in rotations]
    aurocs = [r["auroc"] for r in rotations]
    return {
        "labelled_fraction": fraction,
        "labelled_defects": round(float(np.mean([r["labelled"] for r in rotations])), 1),
        "recall": round(det / n_def, 4),
        "false_reject_rate": round(fr / n_good, 4),
        "image_auroc": round(float(np.mean(aurocs)), 4),
        "recall_ci95": _rate(det, n_def),
        "false_reject_rate_ci95": _rate(fr, n_good),
        "rotations": len(rotations),
        "recall_range": [round(min(recalls), 4), round(max(recalls), 4)],
        "image_auroc_range": [round(min(aurocs), 4), round(max(aurocs), 4)],
        "per_class_recall": {c: round(k / n, 4) for c, (k, n) in per_class.items()},
        "threshold": round(float(np.mean([r["threshold"] for r in rotations])), 4),
        "at_plain_quantile": {
            "recall": round(sum(r["plain_quantile"]["detected"] for r in rotations) / n_def, 4),
            "false_reject_rate": round(sum(r["plain_quantile"]["false_rejects"] for r in rotations) / n_good, 4)},
        "oracle_recall": round(float(np.mean([r["oracle_recall"] for r in rotations])), 4),
        "scored_defects": n_def, "scored_goods": n_good,
        "models_with_probe": f"{sum(r['probe_models'] for r in rotations)}/{sum(len(r['models']) for r in rotations)}",
        "chosen_alpha": sorted({m["alpha"] for r in rotations for m in r["models"]}),
    }


def print_curve(result: dict[str, Any], console: Console) -> None:
    """The curve as a rich table."""
    t = Table(title=f"learning curve: recall at a false-reject target of {result['target_false_reject']:.0%} "
                    "(threshold from held-out good images)")
    for col in ("labelled", "defects labelled", "recall (95 % CI)", "false-reject", "image AUROC", "probe models",
                "per-class recall"):
        t.add_column(col, justify="right" if col != "per-class recall" else "left")
    for p in result["points"]:
        ci = p["recall_ci95"]
        t.add_row(f"{p['labelled_fraction']:.0%}", f"{p['labelled_defects']:g}",
                  f"{p['recall']:.3f} ({ci[0]:.3f}-{ci[1]:.3f})" if ci else f"{p['recall']:.3f}",
                  f"{p['false_reject_rate']:.2%}", f"{p['image_auroc']:.4f}", p["models_with_probe"],
                  " ".join(f"{c} {r:.2f}" for c, r in p["per_class_recall"].items()))
    console.print(t)
    console.print(f"time: {result['seconds']}")


def plot_curve(result: dict[str, Any], path: str | Path, dpi: int = 90) -> Path:
    """Recall and image AUROC against the labelled fraction (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = result["points"]
    x = [100 * p["labelled_fraction"] for p in pts]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    rec = [p["recall"] for p in pts]
    lo = [p["recall"] - p["recall_ci95"][0] if p["recall_ci95"] else 0 for p in pts]
    hi = [p["recall_ci95"][1] - p["recall"] if p["recall_ci95"] else 0 for p in pts]
    ax.errorbar(x, rec, yerr=[lo, hi], marker="o", capsize=3,
                label=f"recall at {result['target_false_reject']:.0%} false-reject (95 % CI)")
    ax.plot(x, [p["image_auroc"] for p in pts], marker="s", label="image AUROC")
    ax.axhline(pts[0]["recall"], color="grey", lw=0.8, ls=":", label="good-only recall")
    ax.set_xlabel("labelled defects per class (%)")
    ax.set_ylabel("score")
    ax.set_title(f"learning curve: {Path(result['data'] or 'synthetic').name}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
