"""The learning curve's configuration (``trainer.learning_curve``), below the modules that read it
(``learning_curve_folds``, ``learning_curve_features``) so that none of them imports the experiment's module."""

from __future__ import annotations

from dataclasses import dataclass, field

from trainer.anomaly import AnomalyConfig
from trainer.anomaly_config import FUSED_WKNN
from trainer.fusion import FusionConfig


@dataclass(frozen=True)
class CurveConfig:
    """The experiment's fixed choices (the README documents them; none is tuned on the scored images)."""

    fractions: tuple[float, ...] = (0.0, 0.05, 0.10, 0.25, 0.50)
    good_folds: int = 5
    inner_good_folds: int = 4
    rotations: int = 4  # labelled folds per fraction (all of them when there are fewer, e.g. 2 at 50 %)
    good_rotations: int = 2  # test/good halves (sha256 order, as trainer.heldout): one scored, one thresholds
    target_false_reject: float = 0.02
    #: "upper_bound_per_population": the stricter of the Clopper-Pearson thresholds of each good population among
    #: the threshold goods (held-out train/good, the test/good half); "upper_bound": that rule on them pooled;
    #: "quantile": the plain (1 - target) quantile of the pooled threshold goods.
    threshold_rule: str = "upper_bound_per_population"
    seed: int = 0
    anomaly: AnomalyConfig = field(default_factory=lambda: AnomalyConfig(**FUSED_WKNN))  # type: ignore[arg-type]  # the fused score's wknn
    fusion: FusionConfig = field(default_factory=FusionConfig)


__all__ = ["CurveConfig"]
