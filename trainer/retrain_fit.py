"""The train step of a retraining (``trainer.retrain``): fit the candidate, export it, gate INT8.

Kind: the incumbent manifest's ``task``; no incumbent: combined when labelled defects of at least 2 classes
reach ``jobs.min_class_frames`` training frames, else anomaly-only. A combined package gets a linear-probe
classifier on the frozen backbone (it only names the class) and the FUSED defect score (``trainer.fusion_head``)
that alone decides; an anomaly package gets the good-only scorer. Writes ``package/`` and ``work/draft.json``.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from inspector.contracts.config import StationConfig
from inspector.contracts.errors import DataError
from inspector.contracts.labels import GOOD_LABEL
from inspector.contracts.manifest import Manifest, Preprocess
from inspector.runtime.package import load_package
from trainer.heldout import LabelledImage, load_images
from trainer.retrain_export import export_draft
from trainer.retrain_snapshot import count_by_label, items_of
from trainer.retrain_staging import (
    SNAPSHOT_FILE,
    Say,
    models_dir,
    read_work_file,
    say_or_print,
    work_dir,
)

#: The classifier recipe of retrained combined / classification packages (``jobs.classifier_recipe`` overrides).
#: A linear probe on cached, pooled stride-32 features of the frozen ImageNet backbone (``train_blocks=0``:
#: the backbone the anomaly scorer reads stays exactly as fitted, and the job costs one backbone pass per
#: frame). ``class_weights`` OFF: on a line the prior is honest (good parts dominate) and inverse-frequency
#: weights (x47 for 16 fray tiles against 759 good ones) push good parts into defect classes; measured on
#: magnetic_tile with weights on and LP-FT, the classifier's own test accuracy was 0.39, i.e. a classifier that
#: rejects good parts. Without weights a rare class is called only when the features are clear, and the
#: good-only scorer still rejects what the classifier misses (decide(): either model's reject rejects).
#: Augmentation ``tile-anomaly``: flips and mild photometric changes; no crop (it can cut a defect at a part's
#: edge off the image and leave a wrong label), no erasing (it paints fake defects). ``image_size`` is set
#: from ``jobs.anomaly_image_size``: one preprocessing for both heads.
RETRAIN_RECIPE_FIELDS: dict[str, Any] = dict(
    name="station-retrain",
    backbone="tf_efficientnet_lite0",
    head="linear",
    train_blocks=0,
    epochs=40,
    finetune_epochs=0,
    patience=6,
    views=1,
    class_weights=False,
    policy="tile-anomaly",
    threads=2,
)


def _incumbent_manifest(incumbent: str | Path | None) -> Manifest | None:
    return load_package(incumbent).manifest if incumbent else None


def choose_kind(incumbent: Manifest | None, class_counts: dict[str, int], min_frames: int) -> str:
    """The incumbent's task; without one: combined when >= 2 defect classes have ``min_frames`` frames."""
    if incumbent is not None:
        return incumbent.task
    rich = [c for c, n in class_counts.items() if c != GOOD_LABEL and n >= min_frames]
    return "combined" if len(rich) >= 2 else "anomaly"


def classifier_classes(class_counts: dict[str, int], min_frames: int) -> list[str]:
    """``good`` plus every defect class with at least ``min_frames`` training frames, sorted (folder order)."""
    return sorted([GOOD_LABEL] + [c for c, n in class_counts.items() if c != GOOD_LABEL and n >= min_frames])


def _recipe(cfg: StationConfig) -> Any:
    from trainer.augment import DomainFacts
    from trainer.recipe import ClassifierRecipe, load_recipe

    size = cfg.jobs.anomaly_image_size
    if cfg.jobs.classifier_recipe is not None:
        return load_recipe(cfg.jobs.classifier_recipe).model_copy(update={"image_size": size})
    return ClassifierRecipe(
        **RETRAIN_RECIPE_FIELDS,
        image_size=size,
        facts=DomainFacts(task="classification", orientation_is_cue=False, colour_discriminates=False),
    )


def _class_folders(root: Path, items: list[LabelledImage], classes: list[str]) -> Path:
    """Class folders of links to the training images (one per sha256), the layout the classifier run reads."""
    if root.exists():
        shutil.rmtree(root)
    for i in items:
        if i.label not in classes:
            continue
        d = root / i.label
        d.mkdir(parents=True, exist_ok=True)
        target = d / f"{i.sha256}{Path(i.path).suffix.lower()}"
        try:
            os.link(i.path, target)
        except OSError:
            shutil.copyfile(i.path, target)
    return root


@dataclass
class _Fitted:
    """The candidate's network and what its manifest says about it, filled in as the fit goes on.

    ``net`` is None until the network has a head: an anomaly-only candidate starts from ``backbone`` alone and
    gets its network once the good-only scorer is fitted (a network needs a classifier or a scorer)."""

    net: Any
    pre_spec: Preprocess
    architecture: dict[str, Any]
    augmentation: dict[str, Any]
    temperature: float | None
    classes: list[str] | None = None
    anomaly: Any = None
    backbone: Any = None
    bf16_refit: Any = None  # anomaly-only: the hook that fits the scorer on bf16 features (trainer.bf16_refit)


def train(
    cfg: StationConfig, stage: str | Path, incumbent: str | Path | None = None, say: Say | None = None
) -> dict[str, Any]:
    """Fit the candidate (the incumbent's kind), export it, gate INT8; writes ``package/`` and ``work/draft.json``.

    ``incumbent``: the active package's folder (None: the station's first model)."""
    from trainer.anomaly import AnomalyConfig

    say = say_or_print(say)
    stage = Path(stage)
    t0 = time.perf_counter()
    snap = read_work_file(stage, SNAPSHOT_FILE)
    items = items_of(snap["train"])
    inc = _incumbent_manifest(incumbent)
    counts = count_by_label(items)
    kind = choose_kind(inc, counts, cfg.jobs.min_class_frames)
    size = cfg.jobs.anomaly_image_size
    wanted = set(snap["scorer_goods"])  # after a condition change: the new condition's goods only
    scorer_goods = [i for i in items if i.label == GOOD_LABEL and i.sha256 in wanted]
    name = inc.name if inc is not None else f"station-{kind}"
    seconds: dict[str, float] = {}
    info: dict[str, Any] = {"kind": kind, "incumbent_task": inc.task if inc else None, "name": name}
    acfg = AnomalyConfig(image_size=(size, size))
    data: dict[str, Any] = {"train_counts": counts}
    if kind in ("combined", "classification"):
        fitted = _fit_classifier(cfg, stage, items, counts, kind, data, seconds, say)
    else:
        fitted = _plain_backbone(acfg, inc, size)
    goods_from = "base + labelled" if snap["base_goods_used"] else "the new condition only"
    if kind == "combined":
        defect_items = [i for i in items if i.label != GOOD_LABEL]  # every labelled defect, any class
        _fit_fused_score(fitted, acfg, scorer_goods, defect_items, goods_from, data, seconds, say)
    elif kind == "anomaly":
        _fit_good_only_score(fitted, acfg, scorer_goods, goods_from, data, seconds, say)
    spec = _package_spec(kind, name, fitted, data)
    draft = export_draft(cfg, stage, kind, fitted.net, spec, items, snap, seconds, say, fitted.bf16_refit)
    seconds["total"] = round(time.perf_counter() - t0, 1)
    q = draft.quant
    info.update(
        {
            "classes": fitted.classes,
            "n_train": len(items),
            "n_scorer_goods": len(scorer_goods) if fitted.anomaly else 0,
            "parity_passed": bool(draft.parity.get("passed")),
            "int8": None
            if q is None
            else {
                "kept": q.kept,
                "reason": q.reason,
                "metric": q.metric,
                "fp32": q.metric_fp32,
                "int8": q.metric_int8,
                "speedup": round(q.speedup, 3),
                "n_calibration": q.n_calibration,
            },
            "seconds": seconds,
        }
    )
    return info


def _fit_classifier(
    cfg: StationConfig,
    stage: Path,
    items: list[LabelledImage],
    counts: dict[str, int],
    kind: str,
    data: dict[str, Any],
    seconds: dict[str, float],
    say: Say,
) -> _Fitted:
    """The classifier recipe on class folders of the classes with enough frames (the rest: the anomaly scorer's)."""
    from trainer.classifier_run import load_classifier, run_classifier_recipe

    classes = classifier_classes(counts, cfg.jobs.min_class_frames)
    if len(classes) < 2:
        raise DataError(
            f"the incumbent is a {kind} model but no defect class has {cfg.jobs.min_class_frames} "
            f"labelled training frames ({counts})",
            "label more defects, or lower jobs.min_class_frames",
        )
    recipe = _recipe(cfg)
    left_out = sorted(c for c in counts if c not in classes)
    say(
        f"train: {kind} classifier on {classes} ({sum(counts[c] for c in classes)} frames, recipe {recipe.name}, "
        f"{recipe.image_size} px){'; left to the anomaly scorer: ' + ', '.join(left_out) if left_out else ''}"
    )
    t = time.perf_counter()
    run_dir = work_dir(stage) / "classifier-run"
    class_dir = _class_folders(work_dir(stage) / "classes", items, classes)
    run_classifier_recipe(
        class_dir, recipe, run_dir, Console(quiet=True), log_path=models_dir(cfg) / "experiments.jsonl"
    )
    net, meta = load_classifier(run_dir)
    seconds["classifier"] = round(time.perf_counter() - t, 1)
    say(
        f"classifier: test accuracy {meta['metrics']['test_accuracy']:.3f} on its own split, temperature "
        f"{meta['temperature']:.2f}, {seconds['classifier']} s"
    )
    prep = meta["preprocess"]
    pre_spec = Preprocess(
        size=tuple(prep["size"]), resize="stretch", mean=tuple(prep["mean"]), std=tuple(prep["std"]), color="rgb"
    )
    data["classifier"] = {
        "classes": classes,
        "left_to_anomaly": left_out,
        "split": meta["data"]["splits"],
        **{k: meta["metrics"][k] for k in ("test_accuracy", "ece_before", "ece_after")},
    }
    return _Fitted(net, pre_spec, dict(meta["architecture"]), meta["augmentation"], meta["temperature"], classes)


def _plain_backbone(acfg: Any, inc: Manifest | None, size: int) -> _Fitted:
    """The ImageNet backbone alone (an anomaly-only package: no classifier head, no augmentation); the network
    is built around it once the good-only scorer exists (``_fit_good_only_score``)."""
    from trainer.backbone import build_backbone

    backbone, bspec = build_backbone(acfg.backbone, out_indices=acfg.out_indices)
    color = inc.preprocess.color if inc is not None else "gray"
    pre_spec = Preprocess(size=(size, size), resize="stretch", mean=bspec.mean, std=bspec.std, color=color)
    return _Fitted(
        None,
        pre_spec,
        {"backbone": acfg.backbone, "weights": bspec.weights},
        {"policy": "none", "reason": "good-only density model: no augmentation"},
        None,
        backbone=backbone,
    )


def _fit_fused_score(
    fitted: _Fitted,
    acfg: Any,
    scorer_goods: list[LabelledImage],
    defect_items: list[LabelledImage],
    goods_from: str,
    data: dict[str, Any],
    seconds: dict[str, float],
    say: Say,
) -> None:
    """The fused defect score (wknn good-only score + guarded probe) on the classifier's backbone."""
    import torch

    from inspector.contracts.config import PolicySection
    from inspector.models.preprocess import Preprocessor
    from trainer.fusion_head import fit_fused_scorer

    acfg = replace(acfg, image_size=tuple(fitted.pre_spec.size), backbone=fitted.architecture["backbone"])
    say(
        f"train: fused defect score (wknn + probe) on {len(scorer_goods)} good frames "
        f"({goods_from}) and {len(defect_items)} labelled defects"
    )
    t = time.perf_counter()
    torch.set_num_threads(2)
    scorer, fitted.anomaly, fit_info = fit_fused_scorer(
        fitted.net.backbone,
        Preprocessor(fitted.pre_spec),
        load_images(scorer_goods),
        load_images(defect_items),
        acfg,
        PolicySection().anomaly_review_margin,
        say=say,
    )
    fitted.net.scorer = scorer
    seconds["anomaly"] = round(time.perf_counter() - t, 1)
    data["anomaly"] = fit_info
    fitted.architecture.update(
        {
            "scorer": "fused-wknn",
            "scorer_out_indices": list(acfg.out_indices),
            "fusion_pooled_stages": [2, 3, 4],
            "classifier_decides": False,
        }
    )
    say(
        f"fused scorer: probe {'used' if fit_info['uses_probe'] else 'not used (good-only fallback)'}, "
        f"{fit_info['features']} features, {seconds['anomaly']} s {fit_info['seconds']}"
    )


def _fit_good_only_score(
    fitted: _Fitted,
    acfg: Any,
    scorer_goods: list[LabelledImage],
    goods_from: str,
    data: dict[str, Any],
    seconds: dict[str, float],
    say: Say,
) -> None:
    """The good-only anomaly scorer of an anomaly-only package; the network is built here, around its scorer."""
    import torch

    from inspector.models.preprocess import Preprocessor
    from trainer.int8_refit import RefitInputs
    from trainer.network import InspectionNet
    from trainer.pipelines import bf16_refit_of, fit_anomaly

    acfg = replace(acfg, image_size=tuple(fitted.pre_spec.size), backbone=fitted.architecture["backbone"])
    say(f"train: good-only {acfg.method} scorer on {len(scorer_goods)} good frames ({goods_from})")
    t = time.perf_counter()
    torch.set_num_threads(2)
    backbone = fitted.backbone if fitted.net is None else fitted.net.backbone
    pre, goods = Preprocessor(fitted.pre_spec), load_images(scorer_goods)
    scorer, fitted.anomaly, fit_info = fit_anomaly(backbone, pre, goods, acfg, Console(quiet=True))
    if acfg.bf16_refit:  # one more bf16 candidate for the export's gate, as `trainer package-anomaly` has
        fitted.bf16_refit = bf16_refit_of(RefitInputs.of_fit(backbone, pre, goods, acfg, fit_info, goods[:1]))
    if fitted.net is None:
        fitted.net = InspectionNet(backbone, scorer=scorer)
    else:
        fitted.net.scorer = scorer
    seconds["anomaly"] = round(time.perf_counter() - t, 1)
    data["anomaly"] = fit_info
    fitted.architecture.update({"scorer": acfg.method, "scorer_out_indices": list(acfg.out_indices)})


def _package_spec(kind: str, name: str, fitted: _Fitted, data: dict[str, Any]) -> Any:
    """What the candidate's manifest says: the fitted network's preprocessing, classes, scorer and data record."""
    from trainer.package import PackageSpec
    from trainer.pipelines import FUSED_LATENCY_TARGET_MS, LATENCY_TARGET_MS, MEMORY_BUDGET_MB, TARGET_HARDWARE

    return PackageSpec(
        name=name,
        task=kind,
        preprocess=fitted.pre_spec,
        class_names=fitted.classes,
        good_class=GOOD_LABEL,
        temperature=fitted.temperature,
        anomaly=fitted.anomaly,
        data=data,
        augmentation=fitted.augmentation,
        architecture=fitted.architecture,
        latency_target_ms=FUSED_LATENCY_TARGET_MS if kind == "combined" else LATENCY_TARGET_MS,
        memory_budget_mb=MEMORY_BUDGET_MB,
        target_hardware=TARGET_HARDWARE,
    )
