"""Small synthetic image sets made in tmp_path for the trainer tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _pattern(kind: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """Class 0: horizontal stripes, class 1: vertical stripes, class 2: blob; plus noise (grey, uint8)."""
    yy, xx = np.mgrid[0:size, 0:size]
    if kind == 0:
        img = 128 + 80 * np.sin(yy * 0.8 + rng.uniform(0, 6))
    elif kind == 1:
        img = 128 + 80 * np.sin(xx * 0.8 + rng.uniform(0, 6))
    else:
        cy, cx = rng.integers(8, size - 8, 2)
        img = 60 + 160 * (((yy - cy) ** 2 + (xx - cx) ** 2) < 36)
    return np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)


def make_class_folders(root: Path, counts: dict[str, int], seed: int = 0, mode: str = "L") -> Path:
    rng = np.random.default_rng(seed)
    for k, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(_pattern(k % 3, rng)).convert(mode).save(root / name / f"{name}_{i}.png")
    return root


@pytest.fixture
def class_data(tmp_path: Path) -> Path:
    root = make_class_folders(tmp_path / "cls", {"a": 12, "b": 12, "c": 9})
    # an exact duplicate pair inside class a, like neu patches_101/105
    (root / "a" / "a_dup.png").write_bytes((root / "a" / "a_0.png").read_bytes())
    return root


@pytest.fixture
def anomaly_data(tmp_path: Path) -> Path:
    root = tmp_path / "anom"
    rng = np.random.default_rng(1)
    for sub, n in (("train/good", 6), ("test/good", 3), ("test/crack", 2)):
        (root / sub).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(_pattern(0 if "good" in sub else 2, rng)).save(root / sub / f"img_{i}.jpg")
    (root / "ground_truth/crack").mkdir(parents=True)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / "ground_truth/crack/img_0_mask.png")
    return root
