"""What the refit tests share: 64 px synthetic tiles (good noise, or with a bright square) and a small scorer config."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import timm
import torch
from torch import nn

from inspector.contracts.manifest import AnomalySpec, Preprocess
from inspector.models.preprocess import Preprocessor
from trainer.anomaly import AnomalyConfig
from trainer.evaluate import EvalSet
from trainer.int8_refit import RefitInputs
from trainer.package import BuildResult, PackageSpec, RefitHook, build_package
from trainer.quantize import QuantConfig

SIZE = 64
PRE = Preprocess(size=(SIZE, SIZE), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
CFG = replace(AnomalyConfig(), image_size=(SIZE, SIZE), position_bank=16, batch_size=8, holdout_every=3)


def tiles(n: int, seed: int, defect: bool = False) -> list[np.ndarray]:
    """``n`` grey noise tiles; ``defect``: each with a 10 px bright square somewhere inside."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = np.clip(rng.normal(128, 12, (SIZE, SIZE, 1)), 0, 255).repeat(3, 2)
        if defect:
            y, x = rng.integers(8, SIZE - 16, 2)
            img[y : y + 10, x : x + 10] = 250
        out.append(img.astype(np.uint8))
    return out


@dataclass
class FittedTiles:
    """A random-weight Lite0 backbone, a scorer fitted on 30 good tiles, and that scorer's good median and
    threshold quantile (raw): what a refit hook refits from."""

    backbone: nn.Module
    pre: Preprocessor
    good: list[np.ndarray]
    net: nn.Module
    origin: float
    threshold: float

    def inputs(self, sample: list[np.ndarray]) -> RefitInputs:
        return RefitInputs(self.backbone, self.pre, self.good, CFG, self.origin, self.threshold, self.pre.batch(sample))


def random_backbone() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "tf_efficientnet_lite0", features_only=True, out_indices=CFG.out_indices, pretrained=False
    ).eval()


def held_tiles(n: int) -> EvalSet:
    """``n`` good and ``n`` defective tiles, the held-out set of a refit package."""
    return EvalSet(tiles(n, 7) + tiles(n, 8, defect=True), ["good"] * n + ["blob"] * n, [None] * 2 * n, "synthetic")


def refit_spec(name: str, fitted: FittedTiles) -> PackageSpec:
    return PackageSpec(
        name=name,
        task="anomaly",
        preprocess=PRE,
        class_names=None,
        anomaly=AnomalySpec(threshold=fitted.threshold, score_origin=fitted.origin),
        latency_target_ms=500.0,
        memory_budget_mb=1024.0,
    )


def build_refit_package(out: Path, fitted: FittedTiles, held: EvalSet, **refits: RefitHook | None) -> BuildResult:
    """The package of ``fitted.net`` with the given refit hooks (``int8_refit``, ``bf16_refit``), no checklist."""
    return build_package(
        out,
        fitted.net,
        refit_spec(out.name, fitted),
        held,
        calibration_images=fitted.good[:8],
        quant_config=QuantConfig(allow_few_calibration=True, bench_runs=5, bench_warmup=1),
        n_canaries=2,
        checklist=False,
        **refits,  # type: ignore[arg-type]  # the two hook keywords of build_package
    )


def feature_graph(fitted: FittedTiles, folder: Path) -> tuple[Path, list[str], np.ndarray]:
    """``fitted.net`` exported with its scorer's inputs as extra outputs: (that graph, those output names in the
    backbone's stage order, the two-tile batch it was checked on)."""
    from trainer.export import export_onnx
    from trainer.int8_refit import order_by_stage, scorer_inputs, with_outputs

    x = fitted.pre.batch(fitted.good[:2])
    path = export_onnx(fitted.net, torch.from_numpy(x), folder / "m.onnx")
    names = scorer_inputs(path)
    augmented = with_outputs(path, names, folder / "aug.onnx")
    channels = list(fitted.backbone.feature_info.channels())  # type: ignore[union-attr,operator]  # timm features_only
    ordered = order_by_stage(augmented, names, channels, x)
    assert ordered is not None and len(ordered) == len(channels)
    return augmented, ordered, x
