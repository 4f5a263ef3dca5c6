"""Tiny stand-in InspectionNets for the deployment tests (export, quantise, package, checklist)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from trainer.network import InspectionNet

torch.set_num_threads(2)


class TinyBackbone(nn.Module):
    """Three plain conv stages returning a feature list, like a timm ``features_only`` model."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.s1 = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU())
        self.s2 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, 2, 1), nn.BatchNorm2d(2 * width), nn.ReLU())
        self.s3 = nn.Sequential(nn.Conv2d(2 * width, 4 * width, 3, 2, 1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.s1(x)
        f2 = self.s2(f1)
        return [f1, f2, self.s3(f2)]


class LinearHead(nn.Module):
    def __init__(self, channels: int, n_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, n_classes)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.fc(feats[-1].mean(dim=(2, 3)))


class MeanDistanceScorer(nn.Module):
    """Distance of each stage-2 feature vector to a stored mean: map [B,1,h,w], score = map max [B]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, channels, 1, 1))

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        amap = ((feats[1] - self.mean) ** 2).sum(dim=1, keepdim=True).sqrt()
        amap = F.avg_pool2d(amap, 3, 1, 1)
        return amap.flatten(1).amax(dim=1), amap


def tiny_net(classes: int = 3, anomaly: bool = True, seed: int = 0) -> InspectionNet:
    torch.manual_seed(seed)
    bb = TinyBackbone()
    for m in bb.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    head = LinearHead(32, classes) if classes else None
    scorer = MeanDistanceScorer(16) if anomaly else None
    return InspectionNet(bb, head, scorer, temperature=1.5).eval()


def images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Normalised [n,3,size,size] float32 images."""
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32))


def rgb_images(n: int, size: int = 48, seed: int = 0) -> list[np.ndarray]:
    """uint8 RGB HxWx3 images with some structure (a bright blob on a textured background)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = rng.integers(60, 120, (size, size, 3), dtype=np.uint8)
        y, x = rng.integers(4, size - 12, 2)
        img[y : y + 8, x : x + 8] = rng.integers(150, 255)
        out.append(img)
    return out
