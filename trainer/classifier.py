"""Defect classifier on the shared backbone: frozen early blocks, fine-tuned stride-32 blocks, light head.

The anomaly scorer reads the backbone's frozen stride-8/16 maps, so only the blocks after the stride-16
feature may change here (``train_blocks`` of them). Training runs in two cheap stages on a 2-core CPU:

1. The frozen trunk runs once per image and augmented view (through ONNX Runtime when it can, about
   4x faster than torch eager on this CPU; torch otherwise) and its output is cached.
2. Linear probe: the head is fitted on pooled stride-32 features of the cached views (seconds).
3. Fine-tune (``train_blocks > 0`` and ``finetune_epochs > 0``): the last blocks and the head train
   together on the cached trunk maps, starting from the probe (LP-FT), with early stopping.

Loss: cross-entropy with inverse-frequency class weights; AdamW; cosine learning rate; early stopping on
validation loss; the best state is restored.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn
from torch.utils.data import DataLoader, Dataset

from trainer.classifier_network import BackboneParts, ClassifierHead, TrunkRunner, split_backbone
from trainer.classifier_network import max_train_blocks as max_train_blocks  # re-exported: tests import it here

BatchTransform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class TrainConfig:
    probe_epochs: int = 40
    finetune_epochs: int = 3
    patience: int = 6
    lr: float = 1e-3
    backbone_lr: float = 3e-4
    weight_decay: float = 1e-4
    batch_size: int = 32
    views: int = 2
    class_weights: bool = True
    seed: int = 0
    threads: int = 2
    engine: str = "auto"


@dataclass
class TrainResult:
    backbone: nn.Module
    head: ClassifierHead
    parts: BackboneParts
    runner: TrunkRunner
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    val_maps: torch.Tensor | None = None  # cached trunk output of the validation set [N, C, h, w]
    val_labels: torch.Tensor | None = None


def _progress(console: Console | None) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console or Console(stderr=True),
        transient=False,
    )


def cache_trunk(
    runner: TrunkRunner, dataset: Dataset[Any], views: int, batch_size: int, seed: int, progress: Progress, label: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Trunk outputs [views, N, C, h, w] (float16) and labels [N]; view v draws augmentations with seed+v."""
    n = len(dataset)  # type: ignore[arg-type]
    task = progress.add_task(label, total=n * views, info="")
    out: list[torch.Tensor] = []
    labels = torch.empty(0, dtype=torch.long)
    for v in range(views):
        torch.manual_seed(seed + v)
        chunks, ys = [], []
        for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0):
            chunks.append(runner(x).half())
            ys.append(y)
            progress.advance(task, len(y))
        out.append(torch.cat(chunks))
        labels = torch.cat(ys)
    return torch.stack(out), labels


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, normalised to mean 1 over present classes (absent classes weigh 0)."""
    counts = torch.bincount(labels, minlength=num_classes).float()
    w = torch.where(counts > 0, counts.sum() / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))
    return w * (counts > 0).sum() / w.sum()


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy for hard ([B]) or soft ([B,C], MixUp/CutMix) targets, with optional class weights."""
    if target.ndim == 1:
        return F.cross_entropy(logits, target, weight=weight)
    logp = F.log_softmax(logits, dim=1)
    w = torch.ones(logits.shape[1]) if weight is None else weight
    per = -(target * w * logp).sum(1)
    return per.sum() / (target * w).sum()


@dataclass
class _Stage:
    name: str
    forward: Callable[[torch.Tensor], torch.Tensor]
    modules: list[nn.Module]
    params: list[dict[str, Any]]
    epochs: int


def _evaluate(stage: _Stage, x: torch.Tensor, y: torch.Tensor, batch: int) -> tuple[float, float, torch.Tensor]:
    for m in stage.modules:
        m.eval()
    with torch.inference_mode():
        logits = torch.cat([stage.forward(x[i : i + batch].float()) for i in range(0, len(x), batch)])
    loss = F.cross_entropy(logits, y).item()
    acc = (logits.argmax(1) == y).float().mean().item()
    return loss, acc, logits


def _run_stage(
    stage: _Stage,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    cfg: TrainConfig,
    weight: torch.Tensor | None,
    batch_transform: BatchTransform | None,
    progress: Progress,
) -> list[dict[str, Any]]:
    """Train ``stage`` on cached inputs [views, N, ...]; early stopping on val loss; restore the best state."""
    views, n = train_x.shape[:2]
    steps = max(1, (n + cfg.batch_size - 1) // cfg.batch_size)
    opt = torch.optim.AdamW(stage.params, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, stage.epochs * steps))
    gen = torch.Generator().manual_seed(cfg.seed)
    best: tuple[float, list[dict[str, Any]]] = (float("inf"), [])
    history: list[dict[str, Any]] = []
    since = 0
    task = progress.add_task(stage.name, total=stage.epochs * steps, info="")
    for epoch in range(stage.epochs):
        t0 = time.perf_counter()
        train_loss = _train_epoch(
            stage, train_x, train_y, cfg, weight, batch_transform, opt, sched, gen, progress, task
        )
        val_loss, val_acc, _ = _evaluate(stage, val_x, val_y, 256)
        history.append(
            {
                "stage": stage.name,
                "epoch": epoch + 1,
                "train_loss": round(train_loss, 5),
                "val_loss": round(val_loss, 5),
                "val_acc": round(val_acc, 5),
                "seconds": round(time.perf_counter() - t0, 2),
            }
        )
        progress.update(task, info=f"epoch {epoch + 1} val_loss {val_loss:.4f} val_acc {val_acc:.4f}")
        if val_loss < best[0] - 1e-5:
            best = (val_loss, [copy.deepcopy(m.state_dict()) for m in stage.modules])
            since = 0
        else:
            since += 1
            if since >= cfg.patience:
                progress.update(task, completed=stage.epochs * steps, info=f"early stop at epoch {epoch + 1}")
                break
    for m, state in zip(stage.modules, best[1], strict=True):
        m.load_state_dict(state)
    best_row = min(history, key=lambda h: h["val_loss"])
    progress.console.log(
        f"{stage.name}: {len(history)} epochs, best epoch {best_row['epoch']} "
        f"val_loss {best_row['val_loss']:.4f} val_acc {best_row['val_acc']:.4f}"
    )
    return history


def _train_epoch(
    stage: _Stage,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    cfg: TrainConfig,
    weight: torch.Tensor | None,
    batch_transform: BatchTransform | None,
    opt: torch.optim.Optimizer,
    sched: Any,
    gen: torch.Generator,
    progress: Progress,
    task: Any,
) -> float:
    for m in stage.modules:
        m.train()
    views, n = train_x.shape[:2]
    order = torch.randperm(n, generator=gen)
    pick = torch.randint(0, views, (n,), generator=gen)
    total, seen = 0.0, 0
    for i in range(0, n, cfg.batch_size):
        idx = order[i : i + cfg.batch_size]
        x, y = train_x[pick[idx], idx].float(), train_y[idx]
        target: torch.Tensor = y
        if batch_transform is not None and len(idx) > 1:
            x, target = batch_transform(x, y)
        loss = soft_cross_entropy(stage.forward(x), target, weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total += loss.item() * len(idx)
        seen += len(idx)
        progress.advance(task)
    return total / max(seen, 1)


def _pooled(parts: BackboneParts, head: ClassifierHead, maps: torch.Tensor, batch: int = 128) -> torch.Tensor:
    """Pooled stride-32 features of cached trunk maps [V, N, ...] -> [V, N, C] (tail in eval mode)."""
    parts.tail.eval()
    with torch.inference_mode():
        flat = maps.flatten(0, 1)
        pooled = torch.cat([head.pool(parts.tail(flat[i : i + batch].float())) for i in range(0, len(flat), batch)])
    return pooled.view(*maps.shape[:2], -1)


def train_classifier(
    backbone: nn.Module,
    head: ClassifierHead,
    train_ds: Dataset[Any],
    val_ds: Dataset[Any],
    image_size: int,
    train_blocks: int,
    cfg: TrainConfig,
    batch_transform: BatchTransform | None = None,
    console: Console | None = None,
) -> TrainResult:
    """Fit ``head`` (and the last ``train_blocks`` blocks of ``backbone``); return modules and history.

    ``train_ds`` applies the augmentation policy (each view is one pass over it); ``val_ds`` must not.
    """
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    parts = split_backbone(backbone, train_blocks)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    runner = TrunkRunner(parts.trunk, image_size, cfg.threads, cfg.engine)
    with _progress(console) as progress:
        train_x, train_y = cache_trunk(
            runner,
            train_ds,
            cfg.views,
            cfg.batch_size,
            cfg.seed,
            progress,
            f"cache train ({runner.engine}, {cfg.views} views)",
        )
        val_x, val_y = cache_trunk(runner, val_ds, 1, cfg.batch_size, cfg.seed, progress, "cache val")
        seconds["cache"] = time.perf_counter() - t0
        progress.console.log(
            f"trunk cached with {runner.engine} in {seconds['cache']:.1f} s "
            f"(train {tuple(train_x.shape)}, val {tuple(val_x.shape)})"
        )
        weight = class_weights(train_y, head.num_classes) if cfg.class_weights else None
        t1 = time.perf_counter()
        history = _probe(parts, head, train_x, train_y, val_x[0], val_y, cfg, weight, batch_transform, progress)
        seconds["probe"] = time.perf_counter() - t1
        if train_blocks > 0 and cfg.finetune_epochs > 0:
            t2 = time.perf_counter()
            history += _finetune(parts, head, train_x, train_y, val_x[0], val_y, cfg, weight, batch_transform, progress)
            seconds["finetune"] = time.perf_counter() - t2
    parts.tail.eval()
    head.eval()
    seconds["total"] = time.perf_counter() - t0
    return TrainResult(
        backbone, head, parts, runner, history, {k: round(v, 1) for k, v in seconds.items()}, val_x[0], val_y
    )


def _probe(
    parts: BackboneParts,
    head: ClassifierHead,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    cfg: TrainConfig,
    weight: torch.Tensor | None,
    batch_transform: BatchTransform | None,
    progress: Progress,
) -> list[dict[str, Any]]:
    """Linear probe: the head alone on pooled features (MixUp on pooled vectors; CutMix needs maps: skipped)."""
    pooled_train = _pooled(parts, head, train_x)
    pooled_val = _pooled(parts, head, val_x.unsqueeze(0))[0]
    stage = _Stage(
        "linear probe", head.classify, [head], [{"params": head.parameters(), "lr": cfg.lr}], cfg.probe_epochs
    )
    mix = batch_transform if batch_transform is not None and _is_vector_safe(batch_transform) else None
    return _run_stage(stage, pooled_train, train_y, pooled_val, val_y, cfg, weight, mix, progress)


def _is_vector_safe(batch_transform: BatchTransform) -> bool:
    """CutMix needs spatial maps; pooled vectors only take MixUp."""
    from torchvision.transforms import v2

    op = getattr(batch_transform, "op", batch_transform)
    return isinstance(op, v2.MixUp)


def _finetune(
    parts: BackboneParts,
    head: ClassifierHead,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    cfg: TrainConfig,
    weight: torch.Tensor | None,
    batch_transform: BatchTransform | None,
    progress: Progress,
) -> list[dict[str, Any]]:
    """Last blocks + head on cached trunk maps (MixUp/CutMix act on the maps: manifold mixing)."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        return head(parts.tail(x.contiguous(memory_format=torch.channels_last)))

    params = [
        {"params": parts.tail.parameters(), "lr": cfg.backbone_lr},
        {"params": head.parameters(), "lr": cfg.lr * 0.1},
    ]
    stage = _Stage(f"fine-tune {len(parts.tail)} block(s)", forward, [parts.tail, head], params, cfg.finetune_epochs)
    return _run_stage(stage, train_x, train_y, val_x, val_y, cfg, weight, batch_transform, progress)


def predict_logits(
    result: TrainResult, dataset: Dataset[Any], batch_size: int = 64, console: Console | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [N, C] and labels [N] of a (non-augmented) dataset through trunk, tail and head."""
    with _progress(console) as progress:
        maps, labels = cache_trunk(result.runner, dataset, 1, batch_size, 0, progress, "predict")
    return logits_from_maps(result, maps[0]), labels


def logits_from_maps(result: TrainResult, maps: torch.Tensor, batch: int = 128) -> torch.Tensor:
    """Logits [N, C] of cached trunk maps [N, C', h, w] through the trained tail and head."""
    result.parts.tail.eval()
    result.head.eval()
    with torch.inference_mode():
        return torch.cat(
            [result.head(result.parts.tail(maps[i : i + batch].float())) for i in range(0, len(maps), batch)]
        )


def per_class_recall(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float]:
    pred = logits.argmax(1).numpy()
    y = labels.numpy()
    return [float(np.mean(pred[y == c] == c)) if np.any(y == c) else float("nan") for c in range(num_classes)]
