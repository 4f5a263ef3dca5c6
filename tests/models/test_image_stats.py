from __future__ import annotations

import time

import numpy as np

from inspector.models.image_stats import image_stats


def test_stats_of_known_images() -> None:
    flat = np.full((64, 64, 3), (200, 100, 50), np.uint8)
    s = image_stats(flat)
    assert abs(s.mean_r - 200) < 1e-6 and abs(s.mean_g - 100) < 1e-6 and abs(s.mean_b - 50) < 1e-6
    assert abs(s.brightness - (0.299 * 200 + 0.587 * 100 + 0.114 * 50)) < 1
    assert s.contrast < 1e-6 and s.sharpness < 1e-6
    checker = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
    sharp = image_stats(np.repeat(checker[..., None], 3, 2))
    assert sharp.contrast > 100 and sharp.sharpness > 1000


def test_large_images_are_downscaled_and_fast() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)
    image_stats(img)
    t0 = time.perf_counter()
    for _ in range(50):
        image_stats(img)
    per_ms = (time.perf_counter() - t0) * 1000 / 50
    assert per_ms < 2.0, per_ms  # target < 1 ms; loose bound for a shared machine
    big = image_stats(rng.integers(0, 255, (2048, 2448, 3), dtype=np.uint8))
    assert 120 < big.brightness < 135
