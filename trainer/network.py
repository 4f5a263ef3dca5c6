"""One network, one backbone pass: the feature maps feed both the classifier head and the anomaly scorer.

The exported ONNX graph takes ``image`` [B,3,H,W] (normalised float32) and returns, in this order, the
outputs that exist: ``class_probs`` [B,C] (softmax of logits / temperature), ``anomaly_score`` [B] and
``anomaly_map`` [B,1,h,w]. The manifest's ``model.outputs`` names them.
"""

from __future__ import annotations

import torch
from torch import nn

OUTPUT_PROBS = "class_probs"
OUTPUT_SCORE = "anomaly_score"
OUTPUT_MAP = "anomaly_map"
INPUT_NAME = "image"


class InspectionNet(nn.Module):
    """backbone(image) -> feature list; ``classifier(features) -> logits``; ``scorer(features) -> (score, map)``."""

    def __init__(
        self,
        backbone: nn.Module,
        classifier: nn.Module | None = None,
        scorer: nn.Module | None = None,
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if classifier is None and scorer is None:
            raise ValueError("InspectionNet needs a classifier, an anomaly scorer, or both")
        self.backbone = backbone
        self.classifier = classifier
        self.scorer = scorer
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    @property
    def output_names(self) -> list[str]:
        names = []
        if self.classifier is not None:
            names.append(OUTPUT_PROBS)
        if self.scorer is not None:
            names += [OUTPUT_SCORE, OUTPUT_MAP]
        return names

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = self.backbone(image)
        outs: list[torch.Tensor] = []
        if self.classifier is not None:
            outs.append(torch.softmax(self.classifier(feats) / self.temperature, dim=1))
        if self.scorer is not None:
            score, amap = self.scorer(feats)
            outs += [score, amap]
        return tuple(outs)
