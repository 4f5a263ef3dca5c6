"""The learning-curve experiment: recall at a good-only false-reject budget as labelled defects grow.

``trainer learning-curve DATA`` on an anomaly-layout folder (train/good, test/good, test/<defect>):

1. Features, once per image (cached as .npy when a cache folder is given): the frozen EfficientNet-Lite0
   (``trainer.backbone.build_backbone``) at the anomaly model's preprocessing; the ``wknn`` embedding (stages 2+3)
   and pooled stages 2-4 (mean, max, std over positions).
2. Good images are cross-fitted: train/good is split into ``good_folds`` folds. For fold k, the ``wknn`` anomaly
   scorer (``trainer.anomaly.fit_whitened_knn``, the project's default model) is fitted on the other folds and
   scores fold k, test/ and the defects; inside the other folds an inner cross-fit gives every TRAINING good image
   anomaly features from a scorer that never saw it. Fold k's good images are used only to set the threshold.
3. test/good is split like the station's held-out set (``trainer.heldout.select_heldout``): images ordered by
   sha256, even positions are half 0 (the station's held-out goods), odd positions half 1. In good rotation h,
   half h is scored and the other half joins the held-out train/good images as threshold goods, so threshold
   goods come from both populations (test/good scores higher than train/good even for the good-only model).
   Nothing is ever fitted on test/good, so both good rotations share the same models; over the two, every
   test/good image is scored exactly once (per defect rotation).
4. Defects are cross-fitted per class: for a labelled fraction f, each class is split into round(1/f) folds; one
   fold is labelled (training), the rest are scored; ``rotations`` different folds are labelled in turn.
5. For every (fraction, defect rotation, good fold) ``trainer.fusion.fit_fusion`` is fitted on the fold's training
   goods and the labelled defects. Scored images and the test/good threshold half get the mean of the good folds'
   normalised scores; each held-out train/good image is scored by the one model that did not see it. The
   threshold comes from these threshold goods (``threshold_rule``: by default the stricter of each good population's
   Clopper-Pearson threshold, ``per_population_threshold``). Recall and false-reject rate are measured on
   the scored test/good half plus the defects not labelled in that rotation (each defect is judged at both good
   rotations' thresholds, counted half each); image AUROC on all of test/good plus those defects. No scored or
   threshold image was ever fitted on, and the threshold never sees a defect.

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
    good_rotations: int = 2  # test/good halves (sha256 order, as trainer.heldout): one scored, one thresholds
    target_false_reject: float = 0.02
    #: "upper_bound_per_population": the stricter of the Clopper-Pearson thresholds of each good population among
    #: the threshold goods (held-out train/good, the test/good half); "upper_bound": that rule on them pooled;
    #: "quantile": the plain (1 - target) quantile of the pooled threshold goods.
    threshold_rule: str = "upper_bound_per_population"
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


def split_test_good(hashes: Sequence[str], paths: Sequence[str] | None = None, parts: int = 2) -> np.ndarray:
    """Half id of each test/good image, as the station's held-out selection (``trainer.heldout.select_heldout``):
    images ordered by sha256 (then path), position ``i`` goes to half ``i % parts``; half 0 is the station's
    held-out goods (even positions)."""
    n = len(hashes)
    if n < 2 * parts:
        raise DataError(f"only {n} test/good images for {parts} halves", "collect more good test images")
    keys = list(zip(hashes, paths if paths is not None else [""] * n, strict=True))
    order = sorted(range(n), key=lambda i: keys[i])
    half = np.empty(n, dtype=int)
    half[order] = np.arange(n) % parts
    return half


@dataclass
class FoldFit:
    """One fitted model of the curve: what it was trained on and what it scores (indices into the image table)."""

    fraction: float
    rotation: int
    good_fold: int
    train_good: np.ndarray  # train/good images fitting the probe (and, in inner folds, the anomaly scorers)
    anomaly_fit_good: np.ndarray  # train/good images in the anomaly scorer that scores this fold
    threshold_good: np.ndarray  # held-out train/good fold + the other test/good half (never fitted by this model)
    train_defect: np.ndarray  # labelled defect images
    scored: np.ndarray  # one test/good half + unlabelled defects
    good_rotation: int = 0  # which test/good half is scored (the other thresholds)


def crossfit_plan(is_train_good: np.ndarray, is_test_good: np.ndarray, defect_class: Sequence[str | None],
                  cfg: CurveConfig, test_half: np.ndarray | None = None) -> list[FoldFit]:
    """Every model the curve fits, as index sets; ``check_plan`` proves no scored or threshold image was fitted on.

    ``test_half``: half id per test/good image (``split_test_good``, row order); default alternating.
    One FoldFit per (fraction, defect rotation, good rotation, good fold); the fitted sets do not depend on
    the good rotation (nothing is fitted on test/good), so ``curve_from_features`` fits each model once."""
    train_good = np.flatnonzero(is_train_good)
    test_good = np.flatnonzero(is_test_good)
    half = np.arange(len(test_good)) % cfg.good_rotations if test_half is None else np.asarray(test_half)
    if len(half) != len(test_good):
        raise ValueError(f"{len(half)} half ids for {len(test_good)} test/good images")
    defects = np.array([i for i, c in enumerate(defect_class) if c is not None])
    classes = [defect_class[i] for i in defects]
    gfold = good_fold_ids(len(train_good), cfg.good_folds, cfg.seed)
    plan = []
    for f in cfg.fractions:
        masks = [np.zeros(len(defects), bool)] if f == 0 else defect_rotations(classes, f, cfg.rotations, cfg.seed)  # type: ignore[arg-type]
        for r, labelled in enumerate(masks):
            for h in range(cfg.good_rotations):
                for k in range(cfg.good_folds):
                    fit = train_good[gfold != k]
                    plan.append(FoldFit(f, r, k, fit, fit,
                                        np.concatenate([train_good[gfold == k], test_good[half != h]]),
                                        defects[labelled], np.concatenate([test_good[half == h], defects[~labelled]]),
                                        good_rotation=h))
    return plan


def check_plan(plan: Sequence[FoldFit], is_test_good: np.ndarray | None = None) -> None:
    """Raises AssertionError if any model scores (or thresholds with) an image it was fitted on, or if a scored image
    also sets the threshold. With ``is_test_good``: also if, over the good rotations of a (fraction, defect
    rotation, good fold), a test/good image is not scored exactly once (and thresholding in the others)."""
    for p in plan:
        fitted = set(p.train_good.tolist()) | set(p.anomaly_fit_good.tolist()) | set(p.train_defect.tolist())
        assert not fitted & set(p.scored.tolist()), f"fraction {p.fraction} rotation {p.rotation}: scored image fitted"
        assert not fitted & set(p.threshold_good.tolist()), f"fraction {p.fraction}: threshold image fitted"
        assert not set(p.threshold_good.tolist()) & set(p.scored.tolist()), "a scored image sets the threshold"
    groups: dict[tuple[float, int, int], list[FoldFit]] = {}
    for p in plan:
        groups.setdefault((p.fraction, p.rotation, p.good_fold), []).append(p)
    for key, fits in groups.items():
        for p in fits:
            assert set(p.train_defect.tolist()) == set(fits[0].train_defect.tolist()) and np.array_equal(
                p.train_good, fits[0].train_good), f"{key}: the good rotations must share the fitted sets"
        if is_test_good is None:
            continue
        scored = [set(p.scored.tolist()) for p in fits]
        thresholds = [set(p.threshold_good.tolist()) for p in fits]
        for i in np.flatnonzero(is_test_good).tolist():
            times = sum(i in s for s in scored)
            assert times == 1, f"{key}: test/good image {i} scored {times} times over the good rotations"
            assert all(i in t for s, t in zip(scored, thresholds, strict=True) if i not in s), \
                f"{key}: test/good image {i} sets no threshold where it is not scored"


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
            imgs = [np.asarray(load_rgb(Path(p))) for p in paths[i:i + bs]]
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
def _rate(k: float, n: float, confidence: float = 0.95) -> tuple[float, float] | None:
    """Exact (Clopper-Pearson) interval of ``k`` events in ``n`` trials; ``k`` and ``n`` may be fractional (a pooled
    rate's counts scaled to the distinct images it was measured on); equal to ``trainer.evaluate.rate_interval``
    for whole counts."""
    from scipy.stats import beta

    if n <= 0:
        return None
    a = (1 - confidence) / 2
    lo = 0.0 if k <= 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k >= n else float(beta.ppf(1 - a, k + 1, n - k))
    return round(lo, 4), round(hi, 4)


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


def per_population_threshold(populations: Sequence[np.ndarray], target: float, confidence: float = 0.95) -> float:
    """The stricter (highest) of the ``threshold_upper_bound`` thresholds of each good population.

    The false-reject ceiling is a promise about every kind of good part the station knows, not about their mix:
    pooled, a small population that scores higher (magnetic_tile's test/good beside 7x more train/good) barely
    moves the threshold and its parts are rejected above the ceiling. A population too small for the bound to
    reach ``target`` contributes its highest score (``threshold_upper_bound``'s fallback)."""
    kept = [np.asarray(p, np.float64) for p in populations if len(p)]
    if not kept:
        raise DataError("no good images to set a threshold on", "hold out good images for the threshold")
    return max(threshold_upper_bound(p, target, confidence) for p in kept)


def _oracle_recall(scores: np.ndarray, is_defect: np.ndarray, target: float) -> float:
    """Recall at the threshold set on the SCORED good images (optimistic; for comparison with the field notes)."""
    from trainer.anomaly import threshold_good_quantile

    t = threshold_good_quantile(scores[~is_defect], target)
    return float((scores[is_defect] > t).mean())


def evaluate_rotation(table: ImageTable, anom: AnomalyCrossFit, labelled: np.ndarray, cfg: CurveConfig,
                      plan: Sequence[FoldFit]) -> dict[str, Any]:
    """Fit the good folds' fusion models for one labelled set (once: the good rotations share them), then for each
    good rotation set the threshold on its threshold goods and measure the operating point on its scored images."""
    from trainer.anomaly import threshold_good_quantile

    feats_of = lambda k, rows, src: np.concatenate([table.pooled[rows], src[k, rows]], 1)  # noqa: E731
    d_pool = table.pooled.shape[1]
    train_good = set(np.flatnonzero(table.is_train_good).tolist())
    by_fold: dict[int, FoldFit] = {}
    for p in plan:
        by_fold.setdefault(p.good_fold, p)
    # every image any good rotation scores or thresholds with that no model of this labelled set saw
    outside = np.unique(np.concatenate([np.concatenate([p.scored, p.threshold_good]) for p in plan]))
    outside = np.array([i for i in outside.tolist() if i not in train_good], dtype=int)
    single = np.full(len(table.paths), np.nan)  # held-out train/good: the one model that did not see it
    total = np.zeros(len(table.paths))  # the rest: mean over the good folds' models
    models = []
    for k, p in sorted(by_fold.items()):
        x = np.concatenate([feats_of(k, p.train_good, anom.inner), feats_of(k, p.train_defect, anom.outer)])
        y = np.r_[np.zeros(len(p.train_good), bool), np.ones(len(p.train_defect), bool)]
        model = fit_fusion(x, x[:, d_pool], y, cfg.fusion)
        own = np.array([i for i in p.threshold_good.tolist() if i in train_good], dtype=int)
        xt = feats_of(k, own, anom.outer)
        single[own] = model.score(xt, xt[:, d_pool])
        xs = feats_of(k, outside, anom.outer)
        total[outside] += model.score(xs, xs[:, d_pool]) / len(by_fold)
        models.append(model.summary())
    assert np.isfinite(single[table.is_train_good]).all(), "every train/good image must be scored by the model that did not see it"
    score = np.where(table.is_train_good, single, total)
    rot: dict[int, list[FoldFit]] = {}
    for p in plan:
        rot.setdefault(p.good_rotation, []).append(p)
    per_rot = []
    per_class: dict[str, list[int]] = {}
    for h, fits in sorted(rot.items()):
        thr_rows = np.unique(np.concatenate([p.threshold_good for p in fits]))
        scored = fits[0].scored
        good_thr = score[thr_rows]
        plain = threshold_good_quantile(good_thr, cfg.target_false_reject)
        pooled_bound = threshold_upper_bound(good_thr, cfg.target_false_reject)
        populations = [score[thr_rows[table.is_train_good[thr_rows]]], score[thr_rows[table.is_test_good[thr_rows]]]]
        threshold = {"upper_bound": pooled_bound, "quantile": plain,
                     "upper_bound_per_population": per_population_threshold(populations, cfg.target_false_reject),
                     }[cfg.threshold_rule]
        is_def = np.array([table.defect_class[i] is not None for i in scored])
        flagged, flagged_plain = score[scored] > threshold, score[scored] > plain
        for c in sorted({table.defect_class[i] for i in scored if table.defect_class[i] is not None}):  # type: ignore[type-var]
            m = np.array([table.defect_class[i] == c for i in scored])
            acc = per_class.setdefault(c, [0, 0])  # type: ignore[arg-type]
            acc[0] += int(flagged[m].sum())
            acc[1] += int(m.sum())
        n_thr_test = int(np.isin(thr_rows, np.flatnonzero(table.is_test_good)).sum())
        per_rot.append({"good_rotation": h, "threshold": threshold, "plain_threshold": plain,
                        "pooled_upper_bound_threshold": pooled_bound,
                        "pooled_detected": int((score[scored][is_def] > pooled_bound).sum()),
                        "pooled_false_rejects": int((score[scored][~is_def] > pooled_bound).sum()),
                        "threshold_goods": {"train_good": len(thr_rows) - n_thr_test, "test_good": n_thr_test},
                        "detected": int(flagged[is_def].sum()), "defects": int(is_def.sum()),
                        "false_rejects": int(flagged[~is_def].sum()), "goods": int((~is_def).sum()),
                        "plain_detected": int(flagged_plain[is_def].sum()),
                        "plain_false_rejects": int(flagged_plain[~is_def].sum())})
    # threshold-free figures on every test/good image (scored once over the good rotations) and the defects
    defects = np.array(sorted({i for p in plan for i in p.scored.tolist() if table.defect_class[i] is not None}))
    test_good = np.flatnonzero(table.is_test_good)
    assert sum(r["goods"] for r in per_rot) == len(test_good), "every test/good image is scored exactly once"
    rows = np.concatenate([test_good, defects])
    is_def = np.r_[np.zeros(len(test_good), bool), np.ones(len(defects), bool)]
    sum_ = lambda key: sum(r[key] for r in per_rot)  # noqa: E731
    return {"detected": sum_("detected"), "defects": sum_("defects"), "good_rotations": len(per_rot),
            "false_rejects": sum_("false_rejects"), "goods": sum_("goods"),
            "auroc": _auroc(score[rows], is_def), "threshold": float(np.mean([r["threshold"] for r in per_rot])),
            "per_class": per_class,
            "plain_quantile": {"threshold": float(np.mean([r["plain_threshold"] for r in per_rot])),
                               "detected": sum_("plain_detected"), "false_rejects": sum_("plain_false_rejects")},
            "pooled_upper_bound": {"detected": sum_("pooled_detected"), "false_rejects": sum_("pooled_false_rejects")},
            "oracle_recall": _oracle_recall(score[rows], is_def, cfg.target_false_reject),
            "median_good_score": {"train_good_heldout": float(np.median(score[table.is_train_good])),
                                  "test_good": float(np.median(score[test_good]))},
            "labelled": int(labelled.sum()), "models": models, "by_good_rotation": per_rot,
            "scored_defect_ids": defects.tolist(), "test_goods": len(test_good),
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
    half = split_test_good(test_good_hashes(table), [table.paths[i] for i in np.flatnonzero(table.is_test_good)],
                            cfg.good_rotations)
    plan = crossfit_plan(table.is_train_good, table.is_test_good, table.defect_class, cfg, half)
    check_plan(plan, table.is_test_good)
    groups: dict[tuple[float, int], list[FoldFit]] = {}
    for p in plan:
        groups.setdefault((p.fraction, p.rotation), []).append(p)
    defects = np.flatnonzero(table.is_defect)
    results: dict[float, list[dict[str, Any]]] = {}
    from threadpoolctl import threadpool_limits

    # one BLAS thread: small eigendecompositions oversubscribe a loaded 2-core machine (35 s instead of 3 s)
    with Progress(console=console, transient=True) as prog, threadpool_limits(1):
        task = prog.add_task("fitting fusion models (fraction x rotation x good fold)",
                             total=len(plan) // cfg.good_rotations)
        for (f, _r), fits in groups.items():
            labelled = np.isin(defects, fits[0].train_defect)
            results.setdefault(f, []).append(evaluate_rotation(table, anom, labelled, cfg, fits))
            prog.advance(task, len(fits) // cfg.good_rotations)
    points = [_point(f, rs) for f, rs in results.items()]
    n_classes = {c: int(sum(1 for d in table.defect_class if d == c)) for c in sorted({d for d in table.defect_class if d})}
    return {
        "data": None, "method": "wknn good-only score fused with a linear probe (trainer.fusion)",
        "images": {"train_good": int(table.is_train_good.sum()), "test_good": int(table.is_test_good.sum()),
                   "test_good_halves": np.bincount(half).tolist(), "defects": n_classes},
        "protocol": "test/good split in sha256 order (trainer.heldout); per good rotation one half is scored, the "
                    "other half and the held-out train/good fold set the threshold; nothing is fitted on test/good",
        "target_false_reject": cfg.target_false_reject,
        "threshold_rule": cfg.threshold_rule,
        "config": {"good_folds": cfg.good_folds, "inner_good_folds": cfg.inner_good_folds, "rotations": cfg.rotations,
                   "good_rotations": cfg.good_rotations,
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
    # the rotations judge the same images more than once (a defect at both good rotations' thresholds and in
    # several defect rotations, a test/good image once per defect rotation): intervals use the pooled rates on
    # the number of DISTINCT images judged, not on the number of judgements
    hs = rotations[0].get("good_rotations", 1)
    n_def_eff = n_def // hs
    distinct_def = len(set().union(*(set(r["scored_defect_ids"]) for r in rotations)))
    distinct_good = rotations[0]["test_goods"]
    recalls = [r["detected"] / r["defects"] for r in rotations]
    aurocs = [r["auroc"] for r in rotations]
    return {
        "labelled_fraction": fraction,
        "labelled_defects": round(float(np.mean([r["labelled"] for r in rotations])), 1),
        "recall": round(det / n_def, 4),
        "false_reject_rate": round(fr / n_good, 4),
        "image_auroc": round(float(np.mean(aurocs)), 4),
        "recall_ci95": _rate(det / n_def * distinct_def, distinct_def),
        "false_reject_rate_ci95": _rate(fr / n_good * distinct_good, distinct_good),
        "rotations": len(rotations), "good_rotations": hs,
        "recall_range": [round(min(recalls), 4), round(max(recalls), 4)],
        "image_auroc_range": [round(min(aurocs), 4), round(max(aurocs), 4)],
        "per_class_recall": {c: round(k / n, 4) for c, (k, n) in per_class.items()},
        "threshold": round(float(np.mean([r["threshold"] for r in rotations])), 4),
        "at_plain_quantile": {
            "recall": round(sum(r["plain_quantile"]["detected"] for r in rotations) / n_def, 4),
            "false_reject_rate": round(sum(r["plain_quantile"]["false_rejects"] for r in rotations) / n_good, 4)},
        "at_pooled_upper_bound": {  # the Clopper-Pearson rule on all threshold goods pooled (the previous default)
            "recall": round(sum(r["pooled_upper_bound"]["detected"] for r in rotations) / n_def, 4),
            "false_reject_rate": round(sum(r["pooled_upper_bound"]["false_rejects"] for r in rotations) / n_good, 4)},
        "oracle_recall": round(float(np.mean([r["oracle_recall"] for r in rotations])), 4),
        "by_rotation": [{"defect_rotation": i, "good_rotation": g["good_rotation"],
                         "false_rejects": f"{g['false_rejects']}/{g['goods']}",
                         "recall": round(g["detected"] / g["defects"], 4), "threshold": round(g["threshold"], 4),
                         "threshold_goods": g["threshold_goods"]}
                        for i, r in enumerate(rotations) for g in r["by_good_rotation"]],
        "scored_defects": n_def_eff, "scored_goods": n_good,
        "distinct_scored_defects": distinct_def, "distinct_scored_goods": distinct_good,
        "median_good_score": {k: round(float(np.mean([r["median_good_score"][k] for r in rotations])), 4)
                              for k in ("train_good_heldout", "test_good")},
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
    ax.set_ylabel("recall / AUROC")
    ax.set_title(f"learning curve: {Path(result['data'] or 'synthetic').name}", fontsize=10)
    ax.grid(alpha=0.3)
    fr = ax.twinx()  # the false-reject rate on the scored test/good images, against its budget
    fr.plot(x, [100 * p["false_reject_rate"] for p in pts], marker="v", color="tab:red", lw=1,
            label="false-reject on test/good (%, right)")
    fr.axhline(100 * result["target_false_reject"], color="tab:red", lw=0.8, ls="--", label="false-reject budget")
    fr.set_ylim(0, max(6.0, 110 * max(p["false_reject_rate"] for p in pts)))
    fr.set_ylabel("false-reject (%)", color="tab:red")
    lines = ax.get_legend_handles_labels()
    more = fr.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="lower right", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
