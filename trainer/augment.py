"""Augmentation policies: named YAML files of tagged transforms, checked against the domain's facts.

Every transform has a safety tag:

- ``safe``: flips, crops/resizing, moderate brightness/contrast, noise, blur. Keep the label on most
  inspection images.
- ``domain``: rotation, colour jitter, random erasing. Right only when the domain facts allow them.
- ``careful``: strong geometric distortion (perspective, elastic), channel shuffle, inversion, MixUp,
  CutMix. They can erase or fake the very defect a label names; use them knowingly.

``check_policy(policy, facts)`` refuses the combinations that break labels (MixUp/CutMix outside
classification, rotation when orientation is a cue, colour jitter or channel shuffle when colour
discriminates) and returns warnings for the rest of the ``careful`` transforms.
``build_transforms`` turns a policy into a torchvision v2 pipeline; ``build_batch_transform`` returns
the batch-level MixUp/CutMix (or ``None``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torchvision.transforms import v2

from inspector.contracts.errors import ConfigError, InspectorError
from inspector.contracts.paths import REPO_ROOT

POLICY_DIR = REPO_ROOT / "configs" / "augment"
Safety = Literal["safe", "domain", "careful"]


class DomainFacts(BaseModel):
    """What the images mean: decides which augmentations keep the label true."""

    model_config = ConfigDict(extra="forbid")
    task: Literal["classification", "anomaly"] = Field("classification", description="What the model is trained for.")
    orientation_is_cue: bool = Field(False, description="Rotating a part changes its label or hides the defect.")
    colour_discriminates: bool = Field(False, description="Colour tells classes (or defects) apart.")


class _T(BaseModel):
    model_config = ConfigDict(extra="forbid")
    p: float = Field(0.5, ge=0.0, le=1.0, description="Probability of applying the transform.")


class HFlip(_T):
    kind: Literal["hflip"]


class VFlip(_T):
    kind: Literal["vflip"]


class RandomResizedCrop(_T):
    kind: Literal["random_resized_crop"]
    p: float = Field(1.0, ge=0.0, le=1.0, description="Ignored: the crop replaces the plain resize.")
    scale: tuple[float, float] = Field((0.8, 1.0), description="Area fraction range of the crop.")
    ratio: tuple[float, float] = Field((0.9, 1.1), description="Aspect ratio range of the crop.")


class BrightnessContrast(_T):
    kind: Literal["brightness_contrast"]
    brightness: float = Field(0.15, ge=0.0, le=0.4, description="Max relative brightness change (moderate).")
    contrast: float = Field(0.15, ge=0.0, le=0.4, description="Max relative contrast change (moderate).")


class GaussianNoise(_T):
    kind: Literal["gaussian_noise"]
    sigma: float = Field(0.02, gt=0.0, le=0.1, description="Noise std on the [0, 1] image.")


class GaussianBlur(_T):
    kind: Literal["gaussian_blur"]
    kernel_size: int = Field(3, ge=3, le=9, description="Odd kernel size.")
    sigma: tuple[float, float] = Field((0.1, 1.0), description="Blur sigma range.")


class Rotation(_T):
    kind: Literal["rotation"]
    degrees: float = Field(15.0, ge=0.0, le=180.0, description="Max rotation angle (ignored with right_angles).")
    right_angles: bool = Field(False, description="Rotate by a random multiple of 90 degrees (no interpolation).")


class ColorJitter(_T):
    kind: Literal["color_jitter"]
    saturation: float = Field(0.2, ge=0.0, le=1.0, description="Max relative saturation change.")
    hue: float = Field(0.05, ge=0.0, le=0.5, description="Max hue shift.")


class RandomErasing(_T):
    kind: Literal["random_erasing"]
    scale: tuple[float, float] = Field((0.02, 0.1), description="Area fraction range of the erased box.")


class Perspective(_T):
    kind: Literal["perspective"]
    distortion: float = Field(0.3, gt=0.0, le=1.0, description="Distortion scale.")


class Elastic(_T):
    kind: Literal["elastic"]
    alpha: float = Field(50.0, gt=0.0, le=500.0, description="Displacement magnitude.")


class ChannelShuffle(_T):
    kind: Literal["channel_shuffle"]


class Invert(_T):
    kind: Literal["invert"]


class MixUp(_T):
    kind: Literal["mixup"]
    alpha: float = Field(0.2, gt=0.0, le=2.0, description="Beta distribution parameter.")


class CutMix(_T):
    kind: Literal["cutmix"]
    alpha: float = Field(1.0, gt=0.0, le=2.0, description="Beta distribution parameter.")


TransformSpec = Annotated[
    HFlip
    | VFlip
    | RandomResizedCrop
    | BrightnessContrast
    | GaussianNoise
    | GaussianBlur
    | Rotation
    | ColorJitter
    | RandomErasing
    | Perspective
    | Elastic
    | ChannelShuffle
    | Invert
    | MixUp
    | CutMix,
    Field(discriminator="kind"),
]

SAFETY: dict[str, Safety] = {
    "hflip": "safe",
    "vflip": "safe",
    "random_resized_crop": "safe",
    "brightness_contrast": "safe",
    "gaussian_noise": "safe",
    "gaussian_blur": "safe",
    "rotation": "domain",
    "color_jitter": "domain",
    "random_erasing": "domain",
    "perspective": "careful",
    "elastic": "careful",
    "channel_shuffle": "careful",
    "invert": "careful",
    "mixup": "careful",
    "cutmix": "careful",
}
BATCH_KINDS = frozenset({"mixup", "cutmix"})


class AugmentPolicy(BaseModel):
    """A named list of transforms, applied in order to training images only."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", description="Policy name (the YAML file stem).")
    description: str = Field("", max_length=500, description="Why this policy fits its domain.")
    transforms: list[TransformSpec] = Field(default_factory=list, description="Transforms in order.")

    def kinds(self) -> list[str]:
        return [t.kind for t in self.transforms]

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of the policy (name and description excluded)."""
        body = json.dumps([t.model_dump(mode="json") for t in self.transforms], sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()

    def summary(self) -> dict[str, Any]:
        """What the experiment log and the manifest keep about the policy."""
        return {
            "name": self.name,
            "hash": self.fingerprint()[:16],
            "transforms": [f"{t.kind}[{SAFETY[t.kind]}]" for t in self.transforms],
            "params": [t.model_dump(mode="json") for t in self.transforms],
        }


def _error_path(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"])
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


def parse_policy(data: dict[str, Any], source: str = "<dict>") -> AugmentPolicy:
    try:
        return AugmentPolicy.model_validate(data)
    except ValidationError as err:
        raise ConfigError(
            f"augmentation policy {source} is invalid: {_error_path(err)}",
            f"fix the named key; known transforms: {', '.join(sorted(SAFETY))}",
        ) from None


def load_policy(name_or_path: str | Path, policy_dir: Path | None = None) -> AugmentPolicy:
    """Load ``configs/augment/<name>.yaml`` or an explicit YAML path."""
    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml"):
        p = (policy_dir or POLICY_DIR) / f"{name_or_path}.yaml"
    if not p.is_file():
        known = sorted(x.stem for x in (policy_dir or POLICY_DIR).glob("*.yaml"))
        raise ConfigError(f"augmentation policy {name_or_path!r} not found at {p}", f"known policies: {known}")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"augmentation policy {p} is not a mapping", "write `name:` and `transforms:` keys")
    return parse_policy(data, str(p))


def _refusal(kind: str, facts: DomainFacts) -> InspectorError | None:
    if kind in BATCH_KINDS and facts.task != "classification":
        return InspectorError(
            f"transform '{kind}' mixes two images and their labels; it is meaningless for task '{facts.task}'",
            f"remove '{kind}' from the policy (anomaly models learn from good images only)",
        )
    if kind == "rotation" and facts.orientation_is_cue:
        return InspectorError(
            "transform 'rotation' refused: the domain facts say orientation is a cue, rotating changes the label",
            "remove 'rotation' (flips along the rolling axis may still be safe) or set orientation_is_cue: false",
        )
    if kind in ("color_jitter", "channel_shuffle") and facts.colour_discriminates:
        return InspectorError(
            f"transform '{kind}' refused: the domain facts say colour discriminates the classes",
            f"remove '{kind}' or use 'brightness_contrast', which keeps hue; or set colour_discriminates: false",
        )
    return None


def check_policy(policy: AugmentPolicy, facts: DomainFacts) -> list[str]:
    """Raise ``InspectorError`` for transforms that break labels under ``facts``; return warnings."""
    warnings: list[str] = []
    for kind in policy.kinds():
        err = _refusal(kind, facts)
        if err is not None:
            raise InspectorError(f"policy '{policy.name}': {err.message}", err.hint)
        if SAFETY[kind] == "careful":
            warnings.append(f"policy '{policy.name}' uses '{kind}' (use carefully): check samples by eye")
    return warnings


def _op(t: Any) -> Callable[..., Any] | None:
    """A v2 transform for one spec (resize-crop and batch transforms are handled elsewhere)."""
    ops: dict[str, Callable[[], Any]] = {
        "hflip": lambda: v2.RandomHorizontalFlip(p=1.0),
        "vflip": lambda: v2.RandomVerticalFlip(p=1.0),
        "brightness_contrast": lambda: v2.ColorJitter(brightness=t.brightness, contrast=t.contrast),
        "gaussian_noise": lambda: v2.GaussianNoise(sigma=t.sigma, clip=True),
        "gaussian_blur": lambda: v2.GaussianBlur(kernel_size=t.kernel_size, sigma=t.sigma),
        "rotation": lambda: _RightAngle() if t.right_angles else v2.RandomRotation(t.degrees),
        "color_jitter": lambda: v2.ColorJitter(saturation=t.saturation, hue=t.hue),
        "random_erasing": lambda: v2.RandomErasing(p=1.0, scale=t.scale, value=0.5),
        "perspective": lambda: v2.RandomPerspective(distortion_scale=t.distortion, p=1.0),
        "elastic": lambda: v2.ElasticTransform(alpha=t.alpha),
        "channel_shuffle": lambda: v2.RandomChannelPermutation(),
        "invert": lambda: v2.RandomInvert(p=1.0),
    }
    if t.kind not in ops:
        return None
    return v2.RandomApply([ops[t.kind]()], p=t.p)


class _RightAngle(torch.nn.Module):
    """Rotate by a random multiple of 90 degrees (exact: no interpolation)."""

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        k = int(torch.randint(0, 4, (1,)).item())
        return torch.rot90(img, k, dims=(-2, -1))


def build_transforms(
    policy: AugmentPolicy | None,
    size: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> v2.Compose:
    """PIL/uint8 image -> normalised float tensor [3, size, size]; ``policy=None`` gives the eval pipeline."""
    steps: list[Any] = [v2.ToImage()]
    specs = [] if policy is None else [t for t in policy.transforms if t.kind not in BATCH_KINDS]
    crop = next((t for t in specs if isinstance(t, RandomResizedCrop)), None)
    if crop is not None:
        steps.append(v2.RandomResizedCrop(size, scale=crop.scale, ratio=crop.ratio, antialias=True))
    else:
        steps.append(v2.Resize((size, size), antialias=True))
    steps.append(v2.ToDtype(torch.float32, scale=True))
    steps += [op for op in (_op(t) for t in specs) if op is not None]
    steps.append(v2.Normalize(mean=list(mean), std=list(std)))
    return v2.Compose(steps)


def build_batch_transform(policy: AugmentPolicy | None, num_classes: int) -> Callable[..., Any] | None:
    """MixUp and/or CutMix of the policy as one batch transform ``(x, y) -> (x, soft_y)``, else ``None``."""
    if policy is None:
        return None
    batch = [t for t in policy.transforms if t.kind in BATCH_KINDS]
    if not batch:
        return None
    ops = [
        v2.MixUp(alpha=t.alpha, num_classes=num_classes)
        if t.kind == "mixup"
        else v2.CutMix(alpha=t.alpha, num_classes=num_classes)
        for t in batch
    ]
    p = max(t.p for t in batch)
    return _MaybeBatch(v2.RandomChoice(ops) if len(ops) > 1 else ops[0], p, num_classes)


class _MaybeBatch:
    """Apply a batch transform with probability ``p``; always return soft (one-hot) targets."""

    def __init__(self, op: Callable[..., Any], p: float, num_classes: int) -> None:
        self.op, self.p, self.num_classes = op, p, num_classes

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if float(torch.rand(1)) < self.p:
            return self.op(x, y)
        return x, torch.nn.functional.one_hot(y, self.num_classes).to(x.dtype)
