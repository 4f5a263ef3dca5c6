"""Fit the anomaly scorer on the features OpenVINO computes in bf16: the bf16 candidate's own scorer.

Why: bf16 keeps 8 significant bits, and the rounding of the backbone's features raises every nearest-patch
distance a little (noise adds to a distance, it never cancels). Measured on magnetic_tile (AMD EPYC with
AVX512-BF16, the default cross-fit package, the whole test split, ``python -m trainer.bf16_diagnose``): the
whole graph in bf16 scores +0.76 % higher on average (standard deviation 1.37 %), so good tiles just under the
threshold cross it: line agreement with fp32 0.988, which the precision gate declines (budget 1 point). This
module's candidate, gated by the package build: agreement 0.9966 at ×1.91 (README, "The bf16 candidate's own
scorer").

How (the INT8 refit's machinery, ``trainer.int8_refit.make_refit``): the fp32 graph gets the scorer's input
tensors as extra outputs and OpenVINO runs it in bf16 (``BackendFeatures``, the station's own runner class); the
good training images go through it; the scorer is cross-fitted on those features (``trainer.anomaly_crossfit``,
the package's threshold rule); its raw score is mapped affinely so that its out-of-fold good median and
threshold quantile land on the fp32 package's (one ``AnomalySpec`` serves both files). The network with that
scorer is exported as an fp32 ONNX graph (``model.bf16.onnx``) that OpenVINO compiles in bf16; the precision
gate judges it against the package's fp32 graph like every other candidate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from trainer.int8_refit import RefitInputs, make_refit


class BackendFeatures(nn.Module):
    """The backbone features as a station runner computes them (OpenVINO bf16 by default): a graph whose extra
    outputs are the scorer's inputs, read like a timm ``features_only`` backbone (``feature_info`` of the torch one)."""

    def __init__(
        self, path: Path, names: Sequence[str], feature_info: object, threads: int = 2, precision: str = "bf16"
    ) -> None:
        from inspector.runtime.openvino_runner import OpenVinoRunner

        super().__init__()
        self.runner = OpenVinoRunner(path, threads=threads, precision=precision)
        self.names = list(names)
        self.feature_info = feature_info

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = self.runner.run(np.ascontiguousarray(x.detach().numpy(), np.float32))
        return [torch.from_numpy(outs[n]) for n in self.names]


def bf16_available() -> bool:
    """OpenVINO is installed and this CPU runs bf16 in it (AVX512-BF16 or AMX)."""
    from inspector.runtime.openvino_runner import cpu_capabilities, openvino_available

    return openvino_available() and "BF16" in cpu_capabilities()


def bf16_scorer_refit(
    inputs: RefitInputs, fit: Callable[[nn.Module], tuple[nn.Module, float, float]] | None = None
) -> Callable[[Path, Path], nn.Module | None] | None:
    """The packaging hook (``trainer.package_int8.quantise``'s ``bf16_refit``): called with the package's fp32
    graph, it returns the network whose scorer was cross-fitted on that graph's bf16 features and aligned to the
    fp32 scorer's origin and threshold quantile (raw units); None where this CPU has no bf16 in OpenVINO.
    ``fit``: another ``fit_scorer`` (the holdout rule's, ``trainer.pipelines.holdout_fit``, for a package whose
    fp32 threshold came from one held-out fifth: both thresholds then rest on the same goods)."""
    if not bf16_available():
        return None
    from trainer.anomaly import threshold_good_quantile
    from trainer.anomaly_crossfit import backbone_features, cross_fit, image_batches

    cfg = inputs.cfg

    def fit_scorer(features: nn.Module) -> tuple[nn.Module, float, float]:
        batches = image_batches(inputs.pre, inputs.good, cfg.batch_size)
        fitted = cross_fit(features, backbone_features(features, batches), cfg)
        scores = fitted.good_scores
        return fitted.scorer, float(np.median(scores)), threshold_good_quantile(scores, cfg.target_false_reject)

    return make_refit(inputs, fit or fit_scorer, open_features=BackendFeatures)
