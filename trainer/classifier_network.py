"""The classifier's network on the shared backbone: the head, the frozen trunk, the trainable tail.

Only the blocks after the stride-16 feature may train (the anomaly scorer reads the frozen stride-8/16 maps):
:func:`split_backbone` cuts a timm ``features_only`` backbone into the frozen :class:`Trunk` and the trainable
tail; :class:`TrunkRunner` runs the trunk (ONNX Runtime when it can, about 4x faster than torch eager on this CPU).
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from inspector.contracts.errors import InspectorError

log = logging.getLogger(__name__)


class ClassifierHead(nn.Module):
    """Logits from the last (stride-32) map of a feature list: global average pool, dropout, linear (or MLP)."""

    def __init__(
        self, feature_channels: Sequence[int] | int, num_classes: int, hidden: int = 0, dropout: float = 0.2
    ) -> None:
        super().__init__()
        channels = feature_channels if isinstance(feature_channels, int) else list(feature_channels)[-1]
        self.in_channels = channels
        self.num_classes = num_classes
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if hidden > 0:
            layers += [nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        layers.append(nn.Linear(hidden or channels, num_classes))
        self.fc = nn.Sequential(*layers)

    def pool(self, features: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        x = features if isinstance(features, torch.Tensor) else features[-1]
        return x.mean(dim=(2, 3))

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc(pooled)

    def forward(self, features: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        return self.classify(self.pool(features))


class Trunk(nn.Module):
    """The frozen part of a timm EfficientNet-style ``features_only`` backbone: stem and ``blocks[:upto]``."""

    def __init__(self, backbone: nn.Module, upto: int) -> None:
        super().__init__()
        self.conv_stem = backbone.conv_stem
        self.bn1 = backbone.bn1
        self.blocks = nn.Sequential(*list(backbone.blocks)[:upto])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.bn1(self.conv_stem(x)))


@dataclass
class BackboneParts:
    trunk: Trunk
    tail: nn.Sequential
    upto: int


def max_train_blocks(backbone: nn.Module) -> int:
    """How many last blocks may train without changing the stride-8/16 maps the anomaly scorer uses."""
    info = backbone.feature_info.get_dicts()  # type: ignore[attr-defined]  # timm features_only models carry it
    frozen = [d for d in info if d["reduction"] < 32]
    last = frozen[-1]["module"] if frozen else "blocks.-1"
    return len(backbone.blocks) - 1 - int(last.split(".")[1])


def split_backbone(backbone: nn.Module, train_blocks: int) -> BackboneParts:
    """Freeze stem and early blocks (eval mode, no grad); return them and the trainable last blocks."""
    if not hasattr(backbone, "blocks") or not hasattr(backbone, "conv_stem"):
        raise InspectorError(
            f"backbone {type(backbone).__name__} has no conv_stem/blocks",
            "use an EfficientNet/MobileNet timm features_only backbone",
        )
    limit = max_train_blocks(backbone)
    if not 0 <= train_blocks <= limit:
        raise InspectorError(
            f"train_blocks={train_blocks} would change the frozen stride-8/16 features the anomaly scorer uses",
            f"use 0..{limit} (only the stride-32 blocks may be fine-tuned)",
        )
    upto = len(backbone.blocks) - train_blocks
    trunk = Trunk(backbone, upto).eval()
    trunk.requires_grad_(False)
    tail = nn.Sequential(*list(backbone.blocks)[upto:])
    tail.requires_grad_(True)
    return BackboneParts(trunk, tail, upto)


class TrunkRunner:
    """Runs the frozen trunk on batches: ONNX Runtime when export works (faster on CPU), else torch."""

    def __init__(self, trunk: Trunk, image_size: int, threads: int = 2, engine: str = "auto") -> None:
        self.trunk = trunk
        self.session: Any = None
        if engine in ("auto", "onnxruntime"):
            self.session = self._ort_session(trunk, image_size, threads, required=engine == "onnxruntime")
        self.engine = "onnxruntime" if self.session is not None else "torch"

    @staticmethod
    def _ort_session(trunk: Trunk, size: int, threads: int, required: bool) -> Any:
        try:
            import onnxruntime as ort

            buf = io.BytesIO()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    trunk,
                    (torch.zeros(1, 3, size, size),),
                    buf,
                    input_names=["x"],
                    output_names=["y"],
                    dynamic_axes={"x": {0: "b"}, "y": {0: "b"}},
                    opset_version=17,
                    dynamo=False,
                )
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            return ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - any export failure falls back to torch
            if required:
                raise InspectorError(f"ONNX export of the frozen trunk failed: {err}", "use engine='torch'") from None
            log.warning("trunk runs in torch: ONNX export failed (%s)", err)
            return None

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.session is not None:
            return torch.from_numpy(self.session.run(None, {"x": x.numpy()})[0])
        return self.trunk(x.contiguous(memory_format=torch.channels_last)).contiguous()
