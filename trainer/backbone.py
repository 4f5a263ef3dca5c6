"""Pretrained timm backbones, built from local weight files (offline) or, online, by any timm name.

Local files are looked up in ``INSPECTOR_WEIGHTS_DIR`` (default ``../shared/data/weights``) by the
names in ``LOCAL_WEIGHTS``; a path can also be given directly. Weights load with
``torch.load(weights_only=True)``: never pickle.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from inspector.contracts.errors import DataError
from inspector.contracts.paths import weights_dir

log = logging.getLogger(__name__)

LOCAL_WEIGHTS = {
    "tf_efficientnet_lite0": "tf_efficientnet_lite0.in1k.timm.pth",
    "mobilenetv2_100": "mobilenetv2_100.in1k.features.timm.pth",
}

# Input normalisation each set of weights was trained with (see shared/data/README.md).
NORMALISATION = {
    "tf_efficientnet_lite0": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "mobilenetv2_100": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    weights: str  # path of the local file, or "timm-hub", or "random"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def resolve_weights(name: str, weights: str | Path | None = None) -> Path | None:
    """The local weight file for ``name``: an explicit path, or the known file in the weights folder."""
    if weights is not None:
        p = Path(weights)
        if not p.is_file():
            raise DataError(f"backbone weight file {p} does not exist", "pass an existing .pth file or leave it unset")
        return p
    folder = weights_dir()
    if folder is not None and name in LOCAL_WEIGHTS and (folder / LOCAL_WEIGHTS[name]).is_file():
        return folder / LOCAL_WEIGHTS[name]
    return None


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise DataError(f"{path} does not hold a state dict", "use a timm-style .pth state dict")
    return state


def build_backbone(
    name: str = "tf_efficientnet_lite0",
    weights: str | Path | None = None,
    out_indices: tuple[int, ...] = (1, 2, 3, 4),
    allow_download: bool = True,
    allow_random: bool = False,
) -> tuple[nn.Module, BackboneSpec]:
    """A ``features_only`` timm model returning the feature maps at ``out_indices`` (strides 2..32).

    Weights come from a local file when one is found, else from the timm hub when ``allow_download``;
    ``allow_random`` permits an untrained backbone (tests only: pretrained weights are essential).
    """
    mean, std = NORMALISATION.get(name, ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    local = resolve_weights(name, weights)
    model = timm.create_model(name, features_only=True, out_indices=out_indices, pretrained=False)
    if local is not None:
        state = load_state_dict(local)
        missing, unexpected = model.load_state_dict(state, strict=False)
        wanted_missing = [k for k in missing if not k.startswith(("classifier", "conv_head", "bn2"))]
        if wanted_missing:
            raise DataError(f"{local} does not fit {name}: missing {wanted_missing[:5]}", "use the weights made for this backbone")
        return model, BackboneSpec(name, str(local), mean, std)
    if allow_download:
        try:
            model = timm.create_model(name, features_only=True, out_indices=out_indices, pretrained=True)
            return model, BackboneSpec(name, "timm-hub", mean, std)
        except Exception as err:  # noqa: BLE001 - network errors come in many types
            if not allow_random:
                raise DataError(
                    f"no local weights for backbone {name!r} and the download failed: {err}",
                    "set INSPECTOR_WEIGHTS_DIR to a folder with the .pth file, or connect to the internet",
                ) from None
    if not allow_random:
        raise DataError(f"no weights for backbone {name!r}", "set INSPECTOR_WEIGHTS_DIR or allow download")
    log.warning("backbone %s has random weights: results will be poor", name)
    return model, BackboneSpec(name, "random", mean, std)


def feature_channels(model: nn.Module) -> list[int]:
    return list(model.feature_info.channels())  # type: ignore[attr-defined]
