"""One classifier training run from a recipe: scan, split, check the policy, train, calibrate, save, log.

Writes into ``out``:

- ``classifier.pt``: ``InspectionNet(backbone, head, temperature).state_dict()`` (tensors only; load with
  ``load_classifier`` or ``torch.load(..., weights_only=True)``)
- ``classifier.json``: class names, recipe, architecture, policy, data hash and split, metrics, history
- ``split.json``: the split as relative paths; ``reliability.png``: the reliability diagram
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from inspector.contracts.errors import ModelPackageError
from trainer.augment import build_batch_transform, build_transforms, check_policy, load_policy
from trainer.backbone import BackboneSpec, build_backbone, feature_channels
from trainer.calibration import CalibrationReport, calibrate, reliability_diagram
from trainer.classifier import (
    ClassifierHead,
    TrainConfig,
    TrainResult,
    logits_from_maps,
    per_class_recall,
    predict_logits,
    train_classifier,
)
from trainer.data import (
    ImageDataset,
    Sample,
    scan_class_folders,
    snapshot_hash,
    split_summary,
    stratified_split,
    write_split_file,
)
from trainer.experiment_log import ExperimentRecord, PolicyFields, append_run
from trainer.network import InspectionNet
from trainer.recipe import ClassifierRecipe

STATE_FILE = "classifier.pt"
META_FILE = "classifier.json"


@dataclass
class RunOutput:
    metrics: dict[str, Any]
    class_names: list[str]
    out: Path
    run_id: str


def train_config(recipe: ClassifierRecipe) -> TrainConfig:
    return TrainConfig(
        probe_epochs=recipe.epochs,
        finetune_epochs=recipe.finetune_epochs,
        patience=recipe.patience,
        lr=recipe.lr,
        backbone_lr=recipe.backbone_lr,
        weight_decay=recipe.weight_decay,
        batch_size=recipe.batch_size,
        views=recipe.views,
        class_weights=recipe.class_weights,
        seed=recipe.split.seed,
        threads=recipe.threads,
    )


def architecture(recipe: ClassifierRecipe, weights: str) -> dict[str, Any]:
    keys = (
        "backbone",
        "head",
        "train_blocks",
        "image_size",
        "epochs",
        "finetune_epochs",
        "patience",
        "lr",
        "backbone_lr",
        "weight_decay",
        "batch_size",
        "dropout",
        "views",
        "class_weights",
    )
    # a local file by its name; a source string ("wheel:<dist>:<file>", "timm-hub", "random") as it is
    source = Path(weights).name if Path(weights).is_absolute() or Path(weights).is_file() else weights
    return {**{k: getattr(recipe, k) for k in keys}, "weights": source}


def run_classifier_recipe(
    data: Path,
    recipe: ClassifierRecipe,
    out: Path,
    console: Console | None = None,
    limit_per_class: int | None = None,
    log_path: Path | None = None,
) -> RunOutput:
    """Train, calibrate and evaluate a classifier; ``limit_per_class`` subsamples (tests, smoke runs)."""
    console = console or Console()
    torch.set_num_threads(recipe.threads)
    policy = load_policy(recipe.policy)
    for w in check_policy(policy, recipe.facts):
        console.print(f"[yellow]warning:[/] {w}")
    samples, classes = _class_samples(data, limit_per_class)
    splits = stratified_split(samples, recipe.split.fractions(), recipe.split.seed)
    backbone, spec, head = _build_network(recipe, len(classes))
    train_tf = build_transforms(policy, recipe.image_size, spec.mean, spec.std)
    eval_tf = build_transforms(None, recipe.image_size, spec.mean, spec.std)
    result = train_classifier(
        backbone,
        head,
        ImageDataset(splits["train"], train_tf),
        ImageDataset(splits["val"], eval_tf),
        recipe.image_size,
        recipe.train_blocks,
        train_config(recipe),
        build_batch_transform(policy, len(classes)),
        console,
    )
    cal, metrics = _calibrate_and_evaluate(result, ImageDataset(splits["test"], eval_tf), classes, out, console)
    net = InspectionNet(backbone, head, temperature=cal.temperature)
    torch.save(net.state_dict(), out / STATE_FILE)
    write_split_file(out / "split.json", splits, Path(data))
    record = ExperimentRecord(
        task="classification",
        dataset=str(data),
        dataset_hash=snapshot_hash(samples),
        architecture=architecture(recipe, spec.weights),
        policy=PolicyFields(**{k: v for k, v in policy.summary().items() if k != "params"}),
        metrics=_flat_metrics(metrics),
        notes=f"recipe {recipe.name}, engine {result.runner.engine}",
    )
    meta = {
        "run_id": record.run_id,
        "class_names": classes,
        "recipe": recipe.model_dump(mode="json"),
        "architecture": record.architecture,
        "augmentation": policy.summary(),
        "preprocess": {"size": [recipe.image_size] * 2, "mean": spec.mean, "std": spec.std},
        "temperature": cal.temperature,
        "data": {"hash": record.dataset_hash, "splits": split_summary(splits)},
        "metrics": metrics,
        "history": result.history,
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=1))
    append_run(record, log_path)
    return RunOutput(metrics, classes, out, record.run_id)


def _build_network(recipe: ClassifierRecipe, n_classes: int) -> tuple[nn.Module, BackboneSpec, ClassifierHead]:
    """The recipe's backbone (with its spec) and a fresh classifier head for ``n_classes``."""
    backbone, spec = build_backbone(recipe.backbone, recipe.weights)
    head = ClassifierHead(
        feature_channels(backbone), n_classes, hidden=256 if recipe.head == "mlp" else 0, dropout=recipe.dropout
    )
    return backbone, spec, head


def _class_samples(data: Path, limit_per_class: int | None) -> tuple[list[Sample], list[str]]:
    """The class-folder samples and class names; ``limit_per_class``: the first that many of each class."""
    samples, classes = scan_class_folders(data)
    if limit_per_class:
        samples = [s for c in range(len(classes)) for s in [x for x in samples if x.label == c][:limit_per_class]]
    return samples, classes


def _calibrate_and_evaluate(
    result: TrainResult, test_set: ImageDataset, classes: list[str], out: Path, console: Console
) -> tuple[CalibrationReport, dict[str, Any]]:
    """Temperature from the validation logits, the test metrics and the reliability diagram (in ``out``)."""
    t0 = time.perf_counter()
    assert result.val_maps is not None and result.val_labels is not None
    val_logits, val_y = logits_from_maps(result, result.val_maps), result.val_labels
    test_logits, test_y = predict_logits(result, test_set, console=console)
    cal = calibrate(val_logits, val_y, test_logits, test_y)
    out.mkdir(parents=True, exist_ok=True)
    reliability_diagram(test_logits, test_y, cal.temperature, out / "reliability.png")
    metrics = _metrics(test_logits, test_y, val_logits, val_y, classes, cal)
    metrics["seconds"] = {**result.seconds, "evaluate": round(time.perf_counter() - t0, 1)}
    metrics["seconds"]["total"] = round(result.seconds["total"] + metrics["seconds"]["evaluate"], 1)
    return cal, metrics


def _metrics(
    test_logits: torch.Tensor,
    test_y: torch.Tensor,
    val_logits: torch.Tensor,
    val_y: torch.Tensor,
    classes: list[str],
    cal: CalibrationReport,
) -> dict[str, Any]:
    recall = per_class_recall(test_logits, test_y, len(classes))
    return {
        "test_accuracy": round(float((test_logits.argmax(1) == test_y).float().mean()), 5),
        "val_accuracy": round(float((val_logits.argmax(1) == val_y).float().mean()), 5),
        "n_test": len(test_y),
        "per_class_recall": {c: round(r, 5) for c, r in zip(classes, recall, strict=True)},
        **cal.as_dict(),
    }


def _flat_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    keep = ("test_accuracy", "val_accuracy", "ece_before", "ece_after", "temperature", "n_test")
    flat = {k: metrics[k] for k in keep}
    flat["min_recall"] = min(metrics["per_class_recall"].values())
    flat["train_s"] = metrics["seconds"]["total"]
    return flat


def load_classifier(out: Path, backbone_name: str | None = None) -> tuple[InspectionNet, dict[str, Any]]:
    """Rebuild the InspectionNet saved by a run (``weights_only=True``: tensors only, never pickle)."""
    meta = json.loads((out / META_FILE).read_text())
    name = backbone_name or meta["architecture"]["backbone"]
    backbone, _ = build_backbone(name, allow_download=False, allow_random=True)
    head = ClassifierHead(
        feature_channels(backbone), len(meta["class_names"]), hidden=256 if meta["architecture"]["head"] == "mlp" else 0
    )
    net = InspectionNet(backbone, head)
    state = torch.load(out / STATE_FILE, map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    if abs(float(net.temperature) - meta["temperature"]) > 1e-5:
        raise ModelPackageError(f"{out / STATE_FILE} does not match {out / META_FILE}", "re-run train-classifier")
    return net.eval(), meta
