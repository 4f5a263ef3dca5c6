from __future__ import annotations

from pathlib import Path

import pytest

from inspector.contracts.errors import ConfigError
from trainer.recipe import load_recipe

REPO = Path(__file__).resolve().parents[2]


def test_neu_recipe_loads() -> None:
    r = load_recipe(REPO / "configs" / "recipes" / "neu.yaml")
    assert r.policy == "steel-surface" and r.facts.orientation_is_cue and r.split.seed == 0
    assert r.train_blocks <= 2


def test_unknown_and_bad_keys_are_named(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text("name: x\nsplit: {seed: 1, train: 0.6, val: 0.2, test: 0.2, shuffle: true}\n")
    with pytest.raises(ConfigError, match=r"split\.shuffle"):
        load_recipe(p)
    p.write_text("name: x\nsplit: {train: 0.7, val: 0.2, test: 0.2}\n")
    with pytest.raises(ConfigError, match="must be 1.0"):
        load_recipe(p)
    p.write_text("name: x\nfacts: {task: detection}\n")
    with pytest.raises(ConfigError, match=r"facts\.task"):
        load_recipe(p)
