"""Training recipes: one validated YAML file says what to train, on which split, with which policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from inspector.contracts.errors import ConfigError
from trainer.augment import DomainFacts


class SplitSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = Field(0, ge=0, description="Seed of the stratified split (fixed: the test set must not move).")
    train: float = Field(0.6, gt=0, lt=1, description="Share of each class in the training split.")
    val: float = Field(0.2, gt=0, lt=1, description="Share in the validation split (early stopping, temperature).")
    test: float = Field(0.2, gt=0, lt=1, description="Share in the held-out test split.")

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitSpec:
        if abs(self.train + self.val + self.test - 1.0) > 1e-6:
            raise ValueError(f"train+val+test must be 1.0, got {self.train + self.val + self.test:.3f}")
        return self

    def fractions(self) -> dict[str, float]:
        return {"train": self.train, "val": self.val, "test": self.test}


class ClassifierRecipe(BaseModel):
    """Architecture and training fields; the augmentation policy is referenced by name and kept apart."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Recipe name (goes into run ids).")
    task: Literal["classification"] = Field("classification", description="Only classification here.")
    layout: Literal["class_folders"] = Field("class_folders", description="Data layout: one folder per class.")
    backbone: str = Field("tf_efficientnet_lite0", description="timm backbone name.")
    weights: str | None = Field(None, description="Weight file; unset: the known offline file.")
    head: Literal["linear", "mlp"] = Field("linear", description="Head on the pooled stride-32 map.")
    train_blocks: int = Field(
        2, ge=0, le=4, description="Last backbone blocks fine-tuned (the stride-32 ones); 0: head only."
    )
    image_size: int = Field(224, ge=32, le=1024, description="Square network input size.")
    epochs: int = Field(
        40, ge=1, le=1000, description="Most epochs of the linear-probe stage (cached features: cheap)."
    )
    finetune_epochs: int = Field(3, ge=0, le=100, description="Most epochs fine-tuning the last blocks with the head.")
    patience: int = Field(6, ge=1, le=100, description="Epochs without val-loss improvement before stopping.")
    lr: float = Field(1e-3, gt=0, le=1.0, description="AdamW learning rate of the head.")
    backbone_lr: float = Field(3e-4, gt=0, le=1.0, description="AdamW learning rate of the fine-tuned blocks.")
    weight_decay: float = Field(1e-4, ge=0, le=1.0, description="AdamW weight decay.")
    batch_size: int = Field(32, ge=1, le=1024, description="Batch size.")
    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout before the linear layer.")
    views: int = Field(2, ge=1, le=16, description="Augmented views of each training image cached per run.")
    class_weights: bool = Field(True, description="Inverse-frequency class weights in the loss.")
    policy: str = Field("safe-default", description="Augmentation policy name (configs/augment/<name>.yaml).")
    facts: DomainFacts = Field(default_factory=DomainFacts, description="Domain facts the policy is checked against.")
    split: SplitSpec = Field(default_factory=SplitSpec)
    threads: int = Field(2, ge=1, le=256, description="torch CPU threads.")

    @model_validator(mode="after")
    def _backbone_takes_size(self) -> ClassifierRecipe:
        from inspector.contracts.errors import DataError
        from trainer.backbone import check_backbone_name, check_image_size

        try:
            check_backbone_name(self.backbone)
            check_image_size(self.backbone, self.image_size)
        except DataError as err:
            raise ValueError(f"{err.message} ({err.hint})") from None
        return self


def load_recipe(path: str | Path) -> ClassifierRecipe:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"recipe {p} does not exist", "pass e.g. configs/recipes/neu.yaml")
    data: Any = yaml.safe_load(p.read_text()) or {}
    try:
        return ClassifierRecipe.model_validate(data)
    except ValidationError as err:
        keys = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"recipe {p} is invalid: {keys}", "fix the named key (unknown keys are refused)") from None


def override_recipe(
    recipe: ClassifierRecipe, backbone: str | None = None, image_size: int | None = None
) -> ClassifierRecipe:
    """The recipe with the command line's ``--backbone`` / ``--image-size`` (validated like the YAML's)."""
    changes = {k: v for k, v in (("backbone", backbone), ("image_size", image_size)) if v}
    if not changes:
        return recipe
    try:
        return ClassifierRecipe.model_validate({**recipe.model_dump(), **changes})
    except ValidationError as err:
        keys = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in err.errors())
        raise ConfigError(
            f"--backbone/--image-size: {keys}",
            "pick a backbone with offline weights and a side that is a multiple of 32",
        ) from None
