"""Fit the anomaly scorer on the features the INT8 graph computes, so its statistics match what the station runs.

Why INT8 lost 5 AUROC points on magnetic_tile: the whitened nearest-patch scorer divides every feature by the
spread good parts show in it (per position, per channel block). Directions in which good parts barely vary
get the largest weights, and 8-bit rounding of the backbone adds noise of about one quantisation step in
exactly those directions: a good part's INT8 features sit many "good standard deviations" from their fp32
selves, so the fp32-fitted statistics call them anomalous. Fitting the Gaussians and the bank on the INT8
features themselves puts that noise into the covariance, and the whitening no longer amplifies it.

How: the INT8 graph of the fp32 package (ONNX Runtime static QDQ, ``trainer.quantize``) gets the scorer's
input tensors as extra outputs; the good training images run through it (``QuantisedFeatures``, a torch
module the scorer fit reads like a timm backbone); the scorer is fitted on them; its raw score is mapped
affinely so that the held-out good median and the threshold quantile land on the fp32 package's values
(one ``AnomalySpec`` serves both files); the network with that scorer is quantised again with the same
calibration images and nodes, which gives the same backbone scales. The gate then judges that INT8 graph
against the package's fp32 one like any other candidate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from trainer.export import open_session

if TYPE_CHECKING:
    from inspector.models.preprocess import Preprocessor
    from trainer.anomaly_config import AnomalyConfig

log = logging.getLogger(__name__)


def scorer_inputs(model_path: str | Path, scope: str = "/backbone/") -> list[str]:
    """Tensors made by nodes under ``scope`` and read by nodes outside it (order of first use)."""
    graph = onnx.load(str(model_path), load_external_data=False).graph
    inside = {o for n in graph.node if n.name.startswith(scope) for o in n.output}
    seen: list[str] = []
    for n in graph.node:
        if n.name.startswith(scope) or n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for name in n.input:
            if name in inside and name not in seen:
                seen.append(name)
    return seen


def with_outputs(model_path: str | Path, names: Sequence[str], out_path: str | Path) -> Path:
    """A copy of the graph that also outputs ``names`` (shapes left to the runtime)."""
    model = onnx.load(str(model_path))
    have = {o.name for o in model.graph.output}
    for name in names:
        if name not in have:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    onnx.save(model, str(out_path))
    return Path(out_path)


class QuantisedFeatures(nn.Module):
    """The INT8 graph's backbone features as a ``features_only``-like module (``feature_info`` of the torch one)."""

    def __init__(self, int8_path: Path, names: Sequence[str], feature_info: object, threads: int = 2) -> None:
        super().__init__()
        self.session = open_session(int8_path, threads)
        self.names = list(names)
        self.feature_info = feature_info
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = self.session.run(self.names, {self.input_name: x.detach().numpy().astype(np.float32)})
        return [torch.from_numpy(np.asarray(o)) for o in outs]


def order_by_stage(int8_path: Path, names: list[str], channels: Sequence[int], sample: np.ndarray) -> list[str] | None:
    """``names`` ordered like the torch backbone's outputs (matched by channel count); None when ambiguous."""
    if len(set(channels)) != len(channels):
        return None
    sess = open_session(int8_path)
    outs = sess.run(names, {sess.get_inputs()[0].name: sample[:1].astype(np.float32)})
    by_c = {int(o.shape[1]): n for n, o in zip(names, outs, strict=True) if np.asarray(o).ndim == 4}
    return [by_c[c] for c in channels] if all(c in by_c for c in channels) else None


class AlignedScorer(nn.Module):
    """``a * raw + b`` on the score and the map of a scorer: puts a refitted scorer on the package's raw scale."""

    def __init__(self, scorer: nn.Module, a: float, b: float) -> None:
        super().__init__()
        self.scorer = scorer
        self.register_buffer("a", torch.tensor(float(a)))
        self.register_buffer("b", torch.tensor(float(b)))

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        score, amap = self.scorer(features)
        return score * self.a + self.b, amap * self.a + self.b


@dataclass
class RefitInputs:
    """What a refit hook refits from: the torch backbone and preprocessing the package's scorer was fitted with,
    the good training images, the anomaly config, and the fp32 scorer's out-of-sample good median (``origin``)
    and threshold quantile (``threshold``) in raw units; ``sample``: one preprocessed held-out frame batch."""

    backbone: nn.Module
    pre: Preprocessor
    good: Sequence[np.ndarray]
    cfg: AnomalyConfig
    origin: float
    threshold: float
    sample: np.ndarray

    @classmethod
    def of_fit(
        cls,
        backbone: nn.Module,
        pre: Preprocessor,
        good: Sequence[np.ndarray],
        cfg: AnomalyConfig,
        fit_info: dict[str, Any],
        sample: Sequence[np.ndarray],
    ) -> RefitInputs:
        """From ``trainer.pipelines.fit_anomaly``'s info (``score_origin``, ``threshold_good_quantile``)."""
        origin, threshold = fit_info["score_origin"], fit_info["threshold_good_quantile"]
        return cls(backbone, pre, good, cfg, origin, threshold, pre.batch(list(sample)))

    def net(self, scorer: nn.Module) -> nn.Module:
        """The station network with ``scorer`` on this backbone."""
        from trainer.network import InspectionNet

        return InspectionNet(self.backbone, scorer=scorer).eval()


#: ``open_features(graph with the scorer's inputs as outputs, their names in stage order, feature_info, threads)``:
#: the module that computes the backbone features the way the candidate runtime does.
OpenFeatures = Callable[[Path, list[str], object, int], nn.Module]


def make_refit(
    inputs: RefitInputs,
    fit_scorer: Callable[[nn.Module], tuple[nn.Module, float, float]],
    threads: int = 2,
    open_features: OpenFeatures = QuantisedFeatures,
) -> Callable[[Path, Path], nn.Module | None]:
    """The hook ``trainer.package`` calls with (a graph of the fp32 net, a scratch folder): the network whose
    scorer was fitted on the features that graph computes and aligned to the fp32 scorer's (``inputs.origin``,
    ``inputs.threshold``), or None.

    The graph is the INT8 graph (``open_features``: ONNX Runtime, ``QuantisedFeatures``) or the fp32 graph run
    by OpenVINO in bf16 (``trainer.bf16_refit``). ``fit_scorer(features_module) -> (scorer, origin_q,
    threshold_q)`` fits on the good training images and returns its held-out good median and threshold
    quantile in its own raw units."""
    backbone, origin, threshold = inputs.backbone, inputs.origin, inputs.threshold
    channels = list(backbone.feature_info.channels())  # type: ignore[union-attr,operator]

    def refit(graph: Path, scratch: Path) -> nn.Module | None:
        names = scorer_inputs(graph)
        augmented = with_outputs(graph, names, scratch / f"{graph.stem}_features.onnx")
        ordered = order_by_stage(augmented, names, channels, inputs.sample)
        if ordered is None:
            log.info("refit skipped: the scorer's inputs could not be matched to the backbone stages")
            return None
        features = open_features(augmented, ordered, backbone.feature_info, threads)  # type: ignore[union-attr]
        scorer, origin_q, threshold_q = fit_scorer(features)
        if not threshold_q > origin_q:
            return None
        a = (threshold - origin) / (threshold_q - origin_q)
        return inputs.net(AlignedScorer(scorer, a, origin - a * origin_q).eval())

    return refit
