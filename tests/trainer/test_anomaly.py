"""Good-only anomaly scorers: separation on synthetic textures, thresholds, coreset, ONNX parity, real data."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.anomaly import (
    AnomalyConfig,
    AnomalyModelError,
    PatchKnnScorer,
    PositionalGaussianScorer,
    WhitenedKnnScorer,
    export_onnx,
    fit_anomaly_scorer,
    greedy_coreset,
    list_magnetic_tile,
    load_gray,
    split_holdout,
    threshold_f1_optimal,
    threshold_good_quantile,
    to_input,
)
from trainer.backbone import build_backbone
from trainer.network import InspectionNet

SIZE = (64, 64)


def _texture(rng: np.random.Generator, defect: bool) -> np.ndarray:
    """A smooth striped grey texture; a defect adds a dark scratch and a bright blob."""
    y, x = np.mgrid[0 : SIZE[0], 0 : SIZE[1]].astype(np.float32)
    img = 0.45 + 0.08 * np.sin(x / rng.uniform(1.5, 2.0) + rng.uniform(0, 6)) + 0.05 * (y / SIZE[0])
    img += rng.normal(0, 0.01, SIZE).astype(np.float32)
    if defect:
        r0, c0 = rng.integers(16, 40, size=2)
        for t in range(20):
            img[min(r0 + t, SIZE[0] - 1), min(c0 + t // 2, SIZE[1] - 1) : min(c0 + t // 2 + 2, SIZE[1])] = 0.05
        blob = (y - rng.integers(12, 52)) ** 2 + (x - rng.integers(12, 52)) ** 2 < 16
        img[blob] = 0.95
    return np.clip(img, 0, 1)


@pytest.fixture(scope="module")
def backbone() -> tuple[torch.nn.Module, object]:
    torch.manual_seed(0)
    return build_backbone("tf_efficientnet_lite0", out_indices=(1, 2, 3), allow_download=False, allow_random=True)


def _images(n: int, defect: bool, seed: int, spec: object) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return to_input([_texture(rng, defect) for _ in range(n)], spec.mean, spec.std)  # type: ignore[attr-defined]


SCORERS = {"wknn": WhitenedKnnScorer, "gaussian": PositionalGaussianScorer, "knn": PatchKnnScorer}


@pytest.mark.parametrize("method", ["wknn", "gaussian", "knn"])
def test_scorer_separates_scratches_from_clean_texture(backbone, method: str) -> None:  # type: ignore[no-untyped-def]
    model, spec = backbone
    cfg = AnomalyConfig(method=method, image_size=SIZE, bank_size=256, pool=3 if method == "knn" else 1)
    scorer = fit_anomaly_scorer(model, _images(24, False, 0, spec), cfg)
    assert isinstance(scorer, SCORERS[method])
    net = InspectionNet(model, scorer=scorer).eval()
    with torch.inference_mode():
        good, gmap = net(_images(8, False, 1, spec))
        bad, bmap = net(_images(8, True, 2, spec))
    side = 8 if method == "knn" else 4  # gaussian and wknn pool stride 8 -> 16 by default (downsample=2)
    assert good.shape == (8,) and gmap.shape == (8, 1, side, side)
    assert good.max() < bad.min(), f"{method}: good {good.tolist()} vs defect {bad.tolist()}"


def test_threshold_good_quantile_bounds_false_rejects() -> None:
    good = np.random.default_rng(0).normal(size=1000)
    thr = threshold_good_quantile(good, 0.02)
    assert (good > thr).mean() <= 0.02
    assert threshold_good_quantile(good, 0.0) == good.max()
    with pytest.raises(AnomalyModelError):
        threshold_good_quantile([], 0.02)


def test_threshold_good_quantile_is_the_split_conformal_rank() -> None:
    """759 good scores at 2 %: rank 745 (15 of 760 exchangeable scores above it), not the empirical 744 (16)."""
    good = np.arange(1.0, 760.0)
    assert threshold_good_quantile(good, 0.02) == 745.0
    assert threshold_good_quantile(np.arange(1.0, 257.0), 0.005) == 256.0  # too few for 0.5 %: the highest


def test_threshold_good_quantile_holds_its_target_on_new_good_parts() -> None:
    """Over many draws, a new good part from the same distribution is rejected at most at the target rate."""
    rng = np.random.default_rng(1)
    trials, n, target = 4000, 98, 0.05
    calibration, new = rng.normal(size=(trials, n)), rng.normal(size=trials)
    rejected = np.mean([new[i] > threshold_good_quantile(calibration[i], target) for i in range(trials)])
    assert rejected <= target + 2.5 * np.sqrt(target * (1 - target) / trials), rejected
    # 98 scores at 5 %: the empirical quantile's rank 94 lets 5 of 99 through, the conformal rank 95 lets 4
    assert threshold_good_quantile(np.arange(1.0, 99.0), target) == 95.0


def test_threshold_f1_optimal_finds_the_gap() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.9, 1.0, 1.1])
    labels = np.array([0, 0, 0, 1, 1, 1])
    t = threshold_f1_optimal(scores, labels)
    assert 0.3 < t <= 0.9
    with pytest.raises(AnomalyModelError):
        threshold_f1_optimal(scores, np.zeros(6))


def test_greedy_coreset_picks_far_points() -> None:
    g = torch.Generator().manual_seed(0)
    clusters = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    pts = torch.cat([c + 0.1 * torch.randn(50, 2, generator=g) for c in clusters])
    idx = greedy_coreset(pts, 4, seed=0, proj_dim=None)
    assert len(set(idx.tolist())) == 4
    assert {int(i) // 50 for i in idx} == {0, 1, 2, 3}  # one pick per cluster
    big = torch.randn(20000, 152, generator=g)
    t = time.perf_counter()
    assert len(greedy_coreset(big, 200, seed=0)) == 200
    assert time.perf_counter() - t < 10


def test_downsample_pools_the_embedding(backbone) -> None:  # type: ignore[no-untyped-def]
    model, spec = backbone
    x = _images(6, False, 0, spec)
    fine = fit_anomaly_scorer(model, x, AnomalyConfig(method="gaussian", image_size=SIZE, downsample=1))
    coarse = fit_anomaly_scorer(model, x, AnomalyConfig(method="gaussian", image_size=SIZE))
    assert isinstance(fine, PositionalGaussianScorer) and isinstance(coarse, PositionalGaussianScorer)
    assert fine.grid == (8, 8) and coarse.grid == (4, 4)
    assert coarse.precision.shape[0] * 4 == fine.precision.shape[0]
    with torch.inference_mode():
        feats = model(x)
        torch.testing.assert_close(coarse.embed(feats), torch.nn.functional.avg_pool2d(fine.embed(feats), 2))
    with pytest.raises(AnomalyModelError):
        fit_anomaly_scorer(model, x, AnomalyConfig(image_size=SIZE, downsample=0))


@pytest.mark.parametrize(("method", "downsample"), [("wknn", 2), ("gaussian", 2), ("gaussian", 1), ("knn", 1)])
def test_onnx_export_dynamic_batch_matches_torch(
    backbone,
    method: str,
    downsample: int,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    ort = pytest.importorskip("onnxruntime")
    model, spec = backbone
    cfg = AnomalyConfig(
        method=method, image_size=SIZE, bank_size=128, k=1 if method == "gaussian" else 3, downsample=downsample
    )
    net = InspectionNet(model, scorer=fit_anomaly_scorer(model, _images(12, False, 0, spec), cfg)).eval()
    path = export_onnx(net, tmp_path / "m.onnx", SIZE, net.output_names)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = _images(batch, True, batch, spec)
        score, amap = sess.run(None, {"image": x.numpy()})
        with torch.inference_mode():
            ref_score, ref_map = net(x)
        assert score.shape == (batch,) and amap.shape == tuple(ref_map.shape)
        np.testing.assert_allclose(score, ref_score.numpy(), rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(amap, ref_map.numpy(), rtol=1e-3, atol=1e-3)


def _wknn(
    embeddings: torch.Tensor, neighbours: str = "row", position_bank: int = 0, lof_k: int = 0
) -> WhitenedKnnScorer:
    """The scorer on raw embeddings; plain distances unless ``lof_k`` (the tests of the distance itself)."""
    from trainer.anomaly import FeatureEmbedding, fit_whitened_knn

    cfg = AnomalyConfig(neighbours=neighbours, position_bank=position_bank, blur_sigma=0.0, lof_k=lof_k)  # type: ignore[arg-type]  # neighbours is a str here
    return fit_whitened_knn(FeatureEmbedding((0,)), [embeddings], cfg)


def test_local_density_lets_sparse_normal_variation_pass_and_still_flags_an_off_cluster_patch() -> None:
    """At each position most good patches sit in a tight cluster, a few in a wide one (normal, but sparse). A new
    patch of the wide cluster lies as far from the bank as a defect just off the tight cluster: plain distance
    cannot tell them apart; the radius correction (lof_k) can."""
    g = torch.Generator().manual_seed(5)
    c = 8

    def wide(n: int) -> torch.Tensor:  # its own place on channel 0, spread on channels 4-7
        x = 0.05 * torch.randn(n, c, 2, 2, generator=g)
        x[:, 0] += 6.0
        x[:, 4:] = torch.randn(n, c - 4, 2, 2, generator=g)
        return x

    train = torch.cat([0.05 * torch.randn(150, c, 2, 2, generator=g), wide(50)])
    normal_sparse = wide(20)
    defect = 0.05 * torch.randn(20, c, 2, 2, generator=g)
    defect[:, 1] += 0.1  # off the tight cluster on a channel where both clusters are tight
    with torch.inference_mode():
        plain = _wknn(train, "own")
        lof = _wknn(train, "own", lof_k=5)
        assert lof.local_density and not plain.local_density
        margin = {}
        for name, scorer in (("plain", plain), ("lof", lof)):
            s_normal, _ = scorer([normal_sparse])
            s_defect, _ = scorer([defect])
            margin[name] = float(s_defect.median() / s_normal.median().clamp_min(1e-3))
    assert margin["plain"] < 1.5 and margin["lof"] > 3 * margin["plain"], margin


def test_wknn_distance_is_zero_on_its_own_patches_and_at_most_mahalanobis_at_the_border() -> None:
    g = torch.Generator().manual_seed(0)
    train = torch.randn(40, 6, 3, 5, generator=g)  # 40 "images", 6 channels, 3x5 grid
    scorer = _wknn(train)
    with torch.inference_mode():
        own, _ = scorer([train[:4]])
        assert own.abs().max() < 1e-2  # every training patch is in its position's bank
        x = torch.randn(5, 6, 3, 5, generator=g) * 3
        _, amap = scorer([x])
        z = torch.matmul(x.flatten(2).permute(2, 0, 1) - scorer.mean.unsqueeze(1), scorer.whiten0)  # [P,B,C]
        maha = z.norm(dim=-1).transpose(0, 1).reshape(5, 1, 3, 5)
    # left and right columns also count the position's mean: never above the Gaussian's distance
    assert torch.all(amap[..., [0, -1]] <= maha[..., [0, -1]] + 1e-4)
    assert scorer.border[0, 0, :, [0, -1]].all() and not scorer.border[0, 0, :, 1:-1].any()


def test_wknn_row_neighbours_bring_a_one_cell_horizontal_shift_closer() -> None:
    g = torch.Generator().manual_seed(1)
    train = torch.randn(30, 16, 4, 6, generator=g)
    shifted = torch.roll(train[:5], shifts=1, dims=-1)  # the same patches, one cell to the right
    with torch.inference_mode():
        own, own_map = _wknn(train, "own")([shifted])
        row, row_map = _wknn(train, "row")([shifted])
    # "row" searches a superset of "own"'s bank: never further, and nearer for shifted patches
    # (not zero: each position whitens with its own Gaussian)
    assert torch.all(row_map <= own_map + 1e-4)
    assert row_map[..., 1:].mean() < 0.9 * own_map[..., 1:].mean() and torch.all(row < own)


def test_wknn_position_bank_keeps_the_rare_pattern() -> None:
    g = torch.Generator().manual_seed(2)
    train = 0.1 * torch.randn(200, 4, 2, 2, generator=g)
    train[7, :, 1, 1] = torch.tensor([3.0, -3.0, 3.0, -3.0])  # one rare but normal mark
    scorer = _wknn(train, "own", position_bank=20)
    assert scorer.bank_t.shape[-1] == 20  # [P,C,N]
    probe = train[7:8].clone()
    with torch.inference_mode():
        _, amap = scorer([probe])
    assert amap[0, 0, 1, 1] < 1e-2  # greedy k-center keeps the outlier; a random subset would drop it


def test_wknn_stage_blocks_whiten_each_block_with_its_own_gaussian() -> None:
    from trainer.anomaly import FeatureEmbedding, fit_whitened_knn

    g = torch.Generator().manual_seed(3)
    train = torch.randn(80, 5, 2, 3, generator=g)
    train[:, 3:] += 2.0 * train[:, :1]  # channels 3-4 correlate with channel 0: ignored by the blocks
    cfg = AnomalyConfig(neighbours="own", position_bank=0, blur_sigma=0.0, lof_k=0)
    split = fit_whitened_knn(FeatureEmbedding((0,)), [train], cfg, blocks=[3, 2])
    assert split.blocks == [3, 2] and split.whiten0.shape == (6, 3, 3) and split.whiten1.shape == (6, 2, 2)
    alone = fit_whitened_knn(FeatureEmbedding((0,)), [train[:, 3:]], cfg)
    x = torch.randn(4, 5, 2, 3, generator=g).flatten(2).permute(2, 0, 1)
    with torch.inference_mode():
        torch.testing.assert_close(split.whiten_patches(x)[..., 3:], alone.whiten_patches(x[..., 3:]))
    with pytest.raises(AnomalyModelError, match="blocks"):
        fit_whitened_knn(FeatureEmbedding((0,)), [train], cfg, blocks=[3, 3])


def test_wknn_rejects_unknown_neighbours() -> None:
    with pytest.raises(AnomalyModelError, match="neighbours"):
        _wknn(torch.randn(10, 2, 2, 2), "diagonal")


@pytest.mark.data
def test_magnetic_tile_subsample_auroc(magnetic_tile: Path) -> None:
    """Fit on 120 train/good images at the default config; AUROC on 40 test/good vs 60 defects (< 60 s)."""
    from sklearn.metrics import roc_auc_score

    torch.set_num_threads(2)
    cfg = AnomalyConfig()
    model, spec = build_backbone(cfg.backbone, out_indices=cfg.out_indices, allow_download=False)
    files = list_magnetic_tile(magnetic_tile)
    fit_files, _ = split_holdout(files["train"], cfg.holdout_every)

    def load(fs: list[str]) -> torch.Tensor:
        return to_input([load_gray(f, cfg.image_size) for f in fs], spec.mean, spec.std)

    scorer = fit_anomaly_scorer(model, load(fit_files[::4]), cfg)
    net = InspectionNet(model, scorer=scorer).eval()
    defects = [f for c in ("blowhole", "break", "crack", "fray", "uneven") for f in files[c][::7]]
    good = files["good"][::5]
    with torch.inference_mode():
        scores = torch.cat([net(load(fs))[0] for fs in (good, defects)]).numpy()
    auroc = roc_auc_score([0] * len(good) + [1] * len(defects), scores)
    assert auroc >= 0.85, f"image AUROC {auroc:.3f} on the subsample"


def test_package_anomaly_refuses_bad_scorer_options_in_one_line(tmp_path: Path) -> None:
    """`--neighbours`, `--lof-k` and `--threshold-from` are checked before any data is read; they are options of our scorer only."""
    from typer.testing import CliRunner

    from trainer.cli import app

    base = ["package-anomaly", str(tmp_path / "nowhere"), "--out", str(tmp_path / "pkg")]
    for extra, words in [
        (["--neighbours", "diagonal"], "--neighbours 'diagonal': use own, row or square"),
        (["--lof-k", "-3"], "--lof-k -3: use 0 (off)"),
        (["--threshold-from", "median"], "--threshold-from 'median': use cross_fit or holdout"),
        (["--method", "anomalib:padim", "--lof-k", "0"], "options of our scorers, not of anomalib"),
        (["--method", "anomalib:padim", "--threshold-from", "holdout"], "options of our scorers, not of anomalib"),
    ]:
        result = CliRunner().invoke(app, base + extra)
        assert result.exit_code == 2 and words in " ".join(result.output.split()), result.output
    assert not (tmp_path / "pkg").exists()
