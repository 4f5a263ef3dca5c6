"""Cheap per-frame image statistics for the drift monitor and the operator view.

All statistics are computed on a copy whose longer side is at most ``STATS_SIDE`` pixels (area
interpolation), so they are comparable across camera resolutions and cost well under a millisecond.
The trainer computes the package's drift reference with this same function.
"""

from __future__ import annotations

import cv2
import numpy as np

from inspector.contracts.messages import ImageStats
from inspector.models.preprocess import resize_to

STATS_SIDE = 256


def _downscale(rgb: np.ndarray, side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    if scale >= 1.0:
        return rgb
    return resize_to(rgb, (max(1, round(h * scale)), max(1, round(w * scale))))


def image_stats(rgb: np.ndarray) -> ImageStats:
    """Brightness (mean luma), contrast (luma std), sharpness (variance of the Laplacian), channel means."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"image_stats needs uint8 (H,W,3) RGB, got {rgb.dtype} {rgb.shape}")
    small = _downscale(rgb, STATS_SIDE)
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    luma_mean, luma_std = cv2.meanStdDev(grey)
    _, lap_std = cv2.meanStdDev(cv2.Laplacian(grey, cv2.CV_32F))
    r, g, b, _ = cv2.mean(small)
    return ImageStats(
        brightness=float(luma_mean[0, 0]),
        contrast=float(luma_std[0, 0]),
        sharpness=float(lap_std[0, 0]) ** 2,
        mean_r=float(r),
        mean_g=float(g),
        mean_b=float(b),
    )
