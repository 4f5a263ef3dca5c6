"""What a good-only anomaly model is (``trainer.anomaly``): its configuration, its method names, its error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from inspector.contracts.errors import InspectorError

# the wknn part of the fused defect score (``trainer.fusion_head``, and the learning curve that measured it): own
# cell plus one column left and right, no local-density correction. The good-only package's session-8 defaults
# (own cell, lof_k 5) cut a fused first model's held-out recall in the learning-loop acceptance from 0.980 to 0.793.
FUSED_WKNN: dict[str, object] = {"neighbours": "row", "lof_k": 0}
DEFECT_CLASSES = ("blowhole", "break", "crack", "fray", "uneven")
ANOMALY_METHODS = ("wknn", "gaussian", "knn")


class AnomalyModelError(InspectorError):
    """The anomaly scorer cannot be fitted or exported as asked."""


@dataclass
class AnomalyConfig:
    """How the good-only anomaly model is built. Defaults are the best found on magnetic_tile."""

    backbone: str = "tf_efficientnet_lite0"
    out_indices: tuple[int, ...] = (2, 3)  # timm stages: stride 8 (40 ch) and 16 (112 ch) for EffNet-Lite0
    image_size: tuple[int, int] = (256, 256)  # (height, width); images are stretched ("stretch" resize)
    roi: tuple[int, int, int, int] | None = None  # (x, y, w, h) frame pixels cropped first (Preprocess.roi)
    ignore: tuple[tuple[float, float, float, float], ...] = ()  # masked rectangles of the input (Preprocess.ignore)
    method: Literal["wknn", "gaussian", "knn"] = "wknn"
    pool: int = 1  # local average aggregation (3 for knn as in PatchCore; 1 best for gaussian)
    bank_size: int = 4096  # knn only
    k: int = 1  # knn only: mean of the k nearest distances
    coreset_proj_dim: int = 64  # knn only: random projection used by the coreset selection
    eps: float = 0.01  # gaussian only: covariance ridge
    neighbours: Literal["own", "row", "square"] = "own"  # wknn: bank positions a patch is compared with
    position_bank: int = 150  # wknn: good patches kept per position (greedy k-center in whitened space)
    lof_k: int = 5  # wknn: a bank patch's radius is its distance to its k-th nearest good patch (0: no correction)
    lof_alpha: float = 1.0  # wknn: distances are reduced by lof_alpha * (radius - median radius)
    whiten_blocks: Literal["stage", "full"] = (
        "stage"  # wknn: one Gaussian per backbone stage's channels, or one for all
    )
    downsample: int = 2  # gaussian and wknn: average-pool the concatenated embedding (2: stride 16; 1: stride 8)
    blur_sigma: float = 1.0  # in feature-map cells (1 cell = 8 * downsample input pixels)
    holdout_every: int = 5  # folds of the threshold's cross-fit; "holdout": every n-th good image held out
    threshold_from: Literal["cross_fit", "holdout"] = (
        "cross_fit"  # cross_fit: scorer fitted on every good, threshold from out-of-fold scores of all of them
    )
    target_false_reject: float = 0.02
    batch_size: int = 16
    seed: int = 0
    int8_refit: bool = True  # packaging: also gate an INT8 graph whose scorer is fitted on INT8 features
    bf16_refit: bool = True  # packaging: also gate a bf16 graph whose scorer is fitted on OpenVINO's bf16 features
