"""Synthetic parts for the demo and tests: brushed-metal washers, good or with a defect.

Defect classes: ``scratch`` (thin dark line), ``spot`` (dark pit), ``chip`` (a bite out of the rim).
Deterministic for a seed, ~1 ms per part.
"""

from __future__ import annotations

import cv2
import numpy as np

DEFECT_CLASSES = ("scratch", "spot", "chip")
CLASSES = ("good", *DEFECT_CLASSES)


class PartFactory:
    def __init__(self, seed: int = 0, size: int = 224) -> None:
        self.rng = np.random.default_rng(seed)
        self.size = size

    def _texture(self) -> np.ndarray:
        s, rng = self.size, self.rng
        streaks = rng.normal(0, 6, size=(s, 1)).astype(np.float32)
        streaks = cv2.GaussianBlur(streaks, (1, 5), 0)
        tex = 150 + np.repeat(streaks, s, axis=1) + rng.normal(0, 3, size=(s, s)).astype(np.float32)
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
        angle = rng.uniform(0, 2 * np.pi)
        tex += 12 * (np.cos(angle) * xx + np.sin(angle) * yy)
        return tex

    def _washer_mask(self) -> tuple[np.ndarray, tuple[int, int], int, int]:
        s, rng = self.size, self.rng
        cx, cy = s // 2 + int(rng.integers(-3, 4)), s // 2 + int(rng.integers(-3, 4))
        r_out, r_in = int(s * 0.42), int(s * 0.15)
        mask = np.zeros((s, s), np.uint8)
        cv2.circle(mask, (cx, cy), r_out, 255, -1)
        cv2.circle(mask, (cx, cy), r_in, 0, -1)
        return mask, (cx, cy), r_out, r_in

    def _point_on_ring(self, c: tuple[int, int], r_in: int, r_out: int) -> tuple[int, int]:
        a = self.rng.uniform(0, 2 * np.pi)
        r = self.rng.uniform(r_in + 12, r_out - 12)
        return int(c[0] + r * np.cos(a)), int(c[1] + r * np.sin(a))

    def make(self, kind: str = "good") -> np.ndarray:
        """One part as an RGB uint8 image."""
        if kind not in CLASSES:
            raise ValueError(f"unknown part kind {kind!r}; known: {CLASSES}")
        rng = self.rng
        tex = self._texture()
        mask, c, r_out, r_in = self._washer_mask()
        img = np.where(mask > 0, tex, 35 + rng.normal(0, 2, tex.shape)).astype(np.float32)
        if kind == "scratch":
            p = self._point_on_ring(c, r_in, r_out)
            a = rng.uniform(0, np.pi)
            length = rng.uniform(25, 50)
            q = (int(p[0] + length * np.cos(a)), int(p[1] + length * np.sin(a)))
            cv2.line(img, p, q, float(rng.uniform(70, 95)), int(rng.integers(2, 4)), cv2.LINE_AA)
        elif kind == "spot":
            p = self._point_on_ring(c, r_in, r_out)
            cv2.circle(img, p, int(rng.integers(5, 9)), float(rng.uniform(55, 80)), -1, cv2.LINE_AA)
        elif kind == "chip":
            a = rng.uniform(0, 2 * np.pi)
            p = (int(c[0] + r_out * np.cos(a)), int(c[1] + r_out * np.sin(a)))
            cv2.circle(img, p, int(rng.integers(10, 16)), 35.0, -1, cv2.LINE_AA)
        img = np.clip(img, 0, 255).astype(np.uint8)
        return np.repeat(img[:, :, None], 3, axis=2)

    def sample_kind(self, defect_rate: float) -> str:
        if self.rng.random() >= defect_rate:
            return "good"
        return str(self.rng.choice(DEFECT_CLASSES))
