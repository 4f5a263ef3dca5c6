"""The trainer's maker of the demo's models, registered as the ``demo_models`` provider (pyproject.toml) for
``inspector.demo.models``: the station asks for it by name and never imports the trainer.

Importing this module needs the training extra (torch, timm): without it the provider cannot load and the
demo falls back to the tiny numpy model.
"""

from __future__ import annotations

from pathlib import Path

import timm  # noqa: F401 - the training extra, checked when the provider loads
import torch  # noqa: F401
from rich.console import Console

from inspector.contracts.errors import DataError
from trainer import backbone, demo_training


def train_demo_models(target: Path, data: Path | None, console: Console) -> Path | None:
    """Train the demo's package into ``target`` (from synthetic parts or ``data``). None, after one line saying
    so, when no ImageNet weights are anywhere (the caller falls back to its tiny numpy model)."""
    try:
        return demo_training.train_demo_package(target, data, console)
    except DataError as err:
        recipe = demo_training.DEMO_RECIPE
        if backbone.resolve_weights(recipe.backbone) is not None:
            raise
        console.print(
            f"[yellow]{err.message}: the demo falls back to the tiny numpy model, its last resort; "
            f"for real models: {backbone.install_hint(recipe.backbone)}[/yellow]",
            soft_wrap=True,
        )
        return None
