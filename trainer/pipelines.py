"""From images to a validated package, in one call each:

- ``build_anomaly_package``: good-only anomaly model on an anomaly-layout folder (train/good, test/<defect>);
- ``build_classifier_package``: a classifier run (``trainer train-classifier``) exported as a package;
- ``build_combined_package``: one backbone pass feeding a classifier head and an anomaly scorer (the demo).

Training inputs go through the station's own ``Preprocessor`` so that what is fitted is exactly what the
worker will feed the exported graph. The anomaly threshold comes from good images held out of the fit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from inspector.contracts.config import PolicySection
from inspector.contracts.errors import DataError
from inspector.contracts.manifest import AnomalySpec, Preprocess
from inspector.models.preprocess import Preprocessor
from trainer.anomaly import AnomalyConfig, fit_anomaly_scorer, threshold_f1_optimal, threshold_good_quantile
from trainer.anomaly_crossfit import image_batches
from trainer.backbone import BackboneSpec, build_backbone, check_image_size
from trainer.bf16_refit import bf16_scorer_refit
from trainer.data import load_rgb, scan_anomaly, snapshot_hash
from trainer.evaluate import EvalSet, load_test_split, rate_interval
from trainer.int8_refit import RefitInputs
from trainer.network import InspectionNet
from trainer.package import BuildResult, PackageSpec, RefitHook, build_package
from trainer.recipe import ClassifierRecipe

LATENCY_TARGET_MS = 10.0
#: Fused combined packages (``trainer.fusion_head``) declare the line's frame budget instead: a 30 fps camera
#: leaves 33 ms per part to one worker, less its decode, commit and recording (about 8 ms measured in
#: ``inspector bench``): 25 ms. The fused graph (full backbone to stage 4, nearest-patch residuals, pooled
#: stages) measured p50 10.9 ms in ``trainer checklist`` in the learning-loop acceptance (README) and buys
#: recall 0.95 instead of 0.59 at the same false-reject ceiling (README, the learning curve).
FUSED_LATENCY_TARGET_MS = 25.0
MEMORY_BUDGET_MB = 512.0
TARGET_HARDWARE = "x86-64 CPU, 2 threads, ONNX Runtime CPU provider"


def split_holdout(n: int, every: int) -> tuple[list[int], list[int]]:
    """Deterministic split of ``n`` sorted good images: every ``every``-th (from index 2) is held out."""
    fit = [i for i in range(n) if i % every != 2]
    hold = [i for i in range(n) if i % every == 2]
    return fit, hold


@torch.inference_mode()
def net_scores(net: InspectionNet, pre: Preprocessor, images: Sequence[np.ndarray]) -> np.ndarray:
    """Raw anomaly scores of images through the torch network."""
    net.eval()
    idx = net.output_names.index("anomaly_score")
    return np.concatenate([net(x)[idx].numpy() for x in image_batches(pre, images)]) if images else np.zeros(0)


def fit_anomaly(
    backbone: torch.nn.Module, pre: Preprocessor, good: Sequence[np.ndarray], cfg: AnomalyConfig, console: Console
) -> tuple[torch.nn.Module, AnomalySpec, dict[str, Any]]:
    """Fit the scorer on good images and set its threshold from good scores of scorers that never saw them:
    ``threshold_from="cross_fit"`` (default, ``trainer.anomaly_crossfit``) or one held-out fifth."""
    fit_idx, hold_idx = split_holdout(len(good), cfg.holdout_every)
    if len(hold_idx) < 10:
        raise DataError(
            f"only {len(good)} good images: too few to hold out a threshold set",
            "collect at least 100 good images (200-500 recommended for anomaly detection)",
        )
    t0 = time.perf_counter()
    if cfg.threshold_from == "cross_fit":
        from trainer.anomaly_crossfit import backbone_features, cross_fit

        console.print(
            f"anomaly model: fitting {cfg.method} on all {len(good)} good images, threshold from their "
            f"out-of-fold scores ({cfg.holdout_every}-fold cross-fit)"
        )
        fitted = cross_fit(backbone, backbone_features(backbone, image_batches(pre, good, cfg.batch_size)), cfg)
        scorer, hold_scores, n_fit = fitted.scorer, fitted.good_scores, len(good)
    else:
        console.print(
            f"anomaly model: fitting {cfg.method} on {len(fit_idx)} good images, "
            f"threshold from {len(hold_idx)} held-out good images"
        )
        scorer = fit_anomaly_scorer(backbone, image_batches(pre, [good[i] for i in fit_idx], cfg.batch_size), cfg)
        hold_scores = net_scores(InspectionNet(backbone, scorer=scorer), pre, [good[i] for i in hold_idx])
        n_fit = len(fit_idx)
    threshold = threshold_good_quantile(hold_scores, cfg.target_false_reject)
    origin = float(np.median(hold_scores))
    frr_ci = rate_interval(int((hold_scores > threshold).sum()), len(hold_scores))
    if frr_ci and frr_ci[1] > 2 * cfg.target_false_reject:
        console.print(
            f"[yellow]warning:[/] the threshold rests on {len(hold_scores)} held-out good images: the line's "
            f"false-reject rate at it is known only to lie in {frr_ci[0]:.1%}-{frr_ci[1]:.1%} (95 %) "
            f"for a target of {cfg.target_false_reject:.1%}; more good images narrow it"
        )
    info = {
        "score_origin": origin,
        "threshold_frr_ci95": frr_ci,
        "fit_images": n_fit,
        "threshold_images": len(hold_scores),
        "threshold_from": cfg.threshold_from,
        "threshold_folds": cfg.holdout_every if cfg.threshold_from == "cross_fit" else 1,
        "fit_s": round(time.perf_counter() - t0, 1),
        "threshold_good_quantile": threshold,
        "target_false_reject": cfg.target_false_reject,
    }
    spec = AnomalySpec.placed(
        threshold,
        origin,
        PolicySection().anomaly_review_margin,
        threshold_method="good_quantile",
        target_false_reject=cfg.target_false_reject,
    )
    return scorer, spec, info


def operating_points(scores: np.ndarray, is_defect: np.ndarray, good_threshold: float) -> dict[str, Any]:
    """Recall and false-reject rate at the good-only threshold and at the F1-optimal one (reported both ways)."""
    out: dict[str, Any] = {}
    thresholds = {"good_quantile": good_threshold}
    if is_defect.any() and (~is_defect.astype(bool)).any():
        thresholds["f1_optimal"] = threshold_f1_optimal(scores, is_defect)
    for name, t in thresholds.items():
        flagged = scores >= t if name == "f1_optimal" else scores > t
        d = is_defect.astype(bool)
        out[name] = {
            "threshold": round(float(t), 6),
            "recall": round(float(flagged[d].mean()), 4) if d.any() else None,
            "false_reject_rate": round(float(flagged[~d].mean()), 4) if (~d).any() else None,
            "false_reject_rate_ci95": rate_interval(int(flagged[~d].sum()), int((~d).sum())),
        }
    return out


def _calibration(good: Sequence[np.ndarray], n: int = 128) -> list[np.ndarray]:
    step = max(1, len(good) // n)
    return list(good[::step][:n])


def _anomaly_preprocess(cfg: AnomalyConfig, bspec: BackboneSpec) -> Preprocess:
    """The anomaly package's preprocessing: stretched to the input side, gray, the backbone's normalisation."""
    return Preprocess(
        size=cfg.image_size,
        resize="stretch",
        mean=bspec.mean,
        std=bspec.std,
        color="gray",
        roi=cfg.roi,
        ignore=list(cfg.ignore),
    )


def build_anomaly_package(
    data_dir: str | Path,
    out: str | Path,
    cfg: AnomalyConfig | None = None,
    name: str = "anomaly",
    console: Console | None = None,
    heldout_limit: int | None = None,
) -> BuildResult:
    """Good-only anomaly package from an anomaly-layout folder; evaluated on its test/ folder."""
    console = console or Console()
    cfg = cfg or AnomalyConfig()
    data = scan_anomaly(Path(data_dir))
    if not data.train:
        raise DataError(f"{data_dir} has no train/good images", "use the anomaly layout: train/good, test/<class>")
    check_image_size(cfg.backbone, cfg.image_size)
    good = [_rgb(s.path) for s in data.train]
    backbone, bspec = build_backbone(cfg.backbone, out_indices=cfg.out_indices)
    pre_spec = _anomaly_preprocess(cfg, bspec)
    pre = Preprocessor(pre_spec)
    scorer, anomaly, fit_info = fit_anomaly(backbone, pre, good, cfg, console)
    net = InspectionNet(backbone, scorer=scorer).eval()
    held = load_test_split(data_dir, limit=heldout_limit)
    points = operating_points(net_scores(net, pre, held.images), held.is_defect, anomaly.reject_raw)
    spec = PackageSpec(
        name=name,
        task="anomaly",
        preprocess=pre_spec,
        class_names=None,
        good_class="good",
        anomaly=anomaly,
        data={
            "source": str(data_dir),
            "snapshot_hash": snapshot_hash(data.train + data.test),
            "train_good": len(good),
            "heldout": held.source,
            **fit_info,
        },
        augmentation={"policy": "none", "reason": "good-only density model: no augmentation"},
        architecture=_anomaly_architecture(cfg, bspec),
        metrics={"operating_points": points},
        latency_target_ms=LATENCY_TARGET_MS,
        memory_budget_mb=MEMORY_BUDGET_MB,
        target_hardware=TARGET_HARDWARE,
    )
    inputs = RefitInputs.of_fit(backbone, pre, good, cfg, fit_info, held.images[:1])
    refit = int8_scorer_refit(inputs) if cfg.int8_refit else None
    bf16 = bf16_refit_of(inputs) if cfg.bf16_refit else None
    calib = _calibration(good)
    return build_package(out, net, spec, held, calib, overwrite=True, int8_refit=refit, bf16_refit=bf16)


def _anomaly_architecture(cfg: AnomalyConfig, bspec: BackboneSpec) -> dict[str, Any]:
    return {
        "backbone": cfg.backbone,
        "weights": bspec.weights,
        "scorer": cfg.method,
        "out_indices": list(cfg.out_indices),
        "image_size": list(cfg.image_size),
        "blur_sigma": cfg.blur_sigma,
        "pool": cfg.pool,
        **(
            {"neighbours": cfg.neighbours, "position_bank": cfg.position_bank, "lof_k": cfg.lof_k}
            if cfg.method == "wknn"
            else {}
        ),
    }


def int8_scorer_refit(inputs: RefitInputs) -> RefitHook:
    """The packaging hook that refits the scorer on the INT8 graph's features (``trainer.int8_refit``), on the
    holdout rule's split of the good images (one fit, not the fp32 scorer's cross-fit: INT8 is a candidate the
    gate judges on the held-out frames), aligned to the fp32 scorer's origin and threshold quantile."""
    from trainer.int8_refit import make_refit

    return make_refit(inputs, holdout_fit(inputs))


def bf16_refit_of(inputs: RefitInputs) -> RefitHook | None:
    """The bf16 refit hook (``trainer.bf16_refit``) by the package's own threshold rule: cross-fit, or for a
    ``threshold_from="holdout"`` package the same held-out fifth as its fp32 threshold; None without bf16."""
    return bf16_scorer_refit(inputs, holdout_fit(inputs) if inputs.cfg.threshold_from == "holdout" else None)


def holdout_fit(inputs: RefitInputs) -> Callable[[torch.nn.Module], tuple[torch.nn.Module, float, float]]:
    """``fit_scorer`` of a refit by the holdout rule: fitted on 4/5 of the goods, median and threshold quantile
    from the other fifth."""
    cfg, pre, good = inputs.cfg, inputs.pre, inputs.good
    fit_idx, hold_idx = split_holdout(len(good), cfg.holdout_every)

    def fit_scorer(features: torch.nn.Module) -> tuple[torch.nn.Module, float, float]:
        scorer = fit_anomaly_scorer(features, image_batches(pre, [good[i] for i in fit_idx], cfg.batch_size), cfg)
        hold = net_scores(InspectionNet(features, scorer=scorer), pre, [good[i] for i in hold_idx])
        return scorer, float(np.median(hold)), threshold_good_quantile(hold, cfg.target_false_reject)

    return fit_scorer


def build_classifier_package(
    run_dir: str | Path,
    data_dir: str | Path,
    out: str | Path,
    name: str = "classifier",
    backbone: str | None = None,
    image_size: int | None = None,
) -> BuildResult:
    """Export a ``trainer train-classifier`` run as a package, evaluated on the run's fixed test split.

    ``backbone`` / ``image_size``: refuse unless the run was trained with them (a package cannot change either)."""
    import json

    from trainer.classifier_run import load_classifier

    run = Path(run_dir)
    net, meta = load_classifier(run)
    _check_run_matches(run, meta, backbone, image_size)
    split = json.loads((run / "split.json").read_text())
    root = Path(data_dir)
    test = [(root / p, c) for p, c in _split_items(split, "test")]
    train = [root / p for p, _ in _split_items(split, "train")]
    held = EvalSet([_rgb(p) for p, _ in test], [c for _, c in test], [None] * len(test), f"{root} split test")
    prep = meta["preprocess"]
    spec = PackageSpec(
        name=name,
        task="classification",
        preprocess=Preprocess(
            size=tuple(prep["size"]), resize="stretch", mean=tuple(prep["mean"]), std=tuple(prep["std"]), color="rgb"
        ),
        class_names=meta["class_names"],
        good_class="good" if "good" in meta["class_names"] else None,
        temperature=meta["temperature"],
        data={"source": str(root), **meta["data"]},
        augmentation=meta["augmentation"],
        architecture=meta["architecture"],
        metrics={
            "training": {
                k: meta["metrics"][k] for k in ("test_accuracy", "ece_before", "ece_after") if k in meta["metrics"]
            }
        },
        latency_target_ms=LATENCY_TARGET_MS,
        memory_budget_mb=MEMORY_BUDGET_MB,
        target_hardware=TARGET_HARDWARE,
    )
    calib = [_rgb(p) for p in train[:: max(1, len(train) // 128)][:128]]
    return build_package(out, net, spec, held, calibration_images=calib, overwrite=True)


def _check_run_matches(run: Path, meta: dict[str, Any], backbone: str | None, image_size: int | None) -> None:
    arch, size = meta.get("architecture", {}), list(meta.get("preprocess", {}).get("size", []))
    if backbone and arch.get("backbone") != backbone:
        raise DataError(
            f"run {run} was trained on backbone {arch.get('backbone')!r}, not {backbone!r}",
            f"train it first: trainer train-classifier DATA --backbone {backbone} --out RUN",
        )
    if image_size and size and size != [image_size, image_size]:
        raise DataError(
            f"run {run} was trained at {size[0]}x{size[1]} px, not {image_size}",
            f"train it first: trainer train-classifier DATA --image-size {image_size} --out RUN",
        )


def _split_items(split: dict[str, list[str]], part: str) -> list[tuple[str, str]]:
    """(relative path, class) pairs of one part of a class-folder split file (``write_split_file``)."""
    return [(rel, Path(rel).parts[0]) for rel in split[part]]


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(load_rgb(path))


def build_combined_package(
    class_dir: Path, out: Path, recipe: ClassifierRecipe, anomaly_cfg: AnomalyConfig, name: str, console: Console
) -> BuildResult:
    """Classifier head and anomaly scorer on ONE backbone pass, trained on a class-folder set with a ``good`` class.

    The classifier trains only its head (and blocks after the scorer's stages), so the stride-8/16 features the
    anomaly scorer was fitted on are the ones the shared graph computes.
    """
    from trainer.classifier_run import load_classifier, run_classifier_recipe

    run_dir = out.parent / f".{out.name}.classifier-run"
    run_classifier_recipe(class_dir, recipe, run_dir, console, log_path=out.parent / "experiments.jsonl")
    net, meta = load_classifier(run_dir)
    split = _read_json(run_dir / "split.json")
    good = [_rgb(class_dir / p) for p, c in _split_items(split, "train") + _split_items(split, "val") if c == "good"]
    prep = meta["preprocess"]
    pre_spec = Preprocess(size=tuple(prep["size"]), resize="stretch", mean=tuple(prep["mean"]), std=tuple(prep["std"]))
    cfg = replace(anomaly_cfg, image_size=tuple(prep["size"]), backbone=meta["architecture"]["backbone"])
    scorer, anomaly, fit_info = fit_anomaly(net.backbone, Preprocessor(pre_spec), good, cfg, console)
    net.scorer = scorer
    test = [(class_dir / p, c) for p, c in _split_items(split, "test")]
    held = EvalSet([_rgb(p) for p, _ in test], [c for _, c in test], [None] * len(test), f"{class_dir} split test")
    spec = PackageSpec(
        name=name,
        task="combined",
        preprocess=pre_spec,
        class_names=meta["class_names"],
        good_class="good",
        temperature=meta["temperature"],
        anomaly=anomaly,
        data={"source": str(class_dir), **meta["data"], **fit_info},
        augmentation=meta["augmentation"],
        architecture={**meta["architecture"], "scorer": cfg.method, "scorer_out_indices": list(cfg.out_indices)},
        metrics={"training": {k: meta["metrics"][k] for k in ("test_accuracy", "ece_before", "ece_after")}},
        latency_target_ms=LATENCY_TARGET_MS,
        memory_budget_mb=MEMORY_BUDGET_MB,
        target_hardware=TARGET_HARDWARE,
    )
    return build_package(out, net, spec, held, calibration_images=_calibration(good), overwrite=True)


def _read_json(path: Path) -> dict[str, Any]:
    import json

    return json.loads(path.read_text())
