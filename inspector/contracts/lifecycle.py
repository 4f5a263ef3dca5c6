"""The model lifecycle: statuses, gate reports, line metrics and who may move a model along.

A model version moves through these statuses (stored in the registry, ``model_versions.status``)::

    candidate --gate--> gated_pass --approve--> approved --promote--> active --promote other--> retired
              \\------> gated_fail                                       \\--rollback------> rolled_back

* ``candidate``: registered, its gate has not run. It can never be promoted.
* ``gated_pass`` / ``gated_fail``: the gate ran on the fixed held-out set (and the recent labelled frames);
  its :class:`GateReport` is stored with the version and in the package's manifest.
* ``approved``: a person with the right role looked at every gate row and approved it. Promotion needs
  this unless ``jobs.auto_promote`` is on, and auto-promotion needs every gate row passed.
* ``active``: the one model the workers serve. ``retired``: an earlier active model. ``rolled_back``: an
  active model that was replaced by a rollback (so it is not rolled back to again).

A ``gated_fail`` version may be promoted only with ``--force --reason`` by the maintenance role; the
override is audited with the actor and the reason.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from inspector.contracts.statuses import ModelStatus

#: Statuses a version may be promoted from without ``--force`` (approval still applies to gated_pass).
PROMOTABLE = frozenset({ModelStatus.GATED_PASS, ModelStatus.APPROVED, ModelStatus.RETIRED, ModelStatus.ROLLED_BACK})


class Role(StrEnum):
    """Who acts. The CLI binds roles to the operating-system user (or a personal token) through
    ``identity.users`` / ``identity.tokens`` (see :mod:`inspector.identity`); the GUI through role PINs."""

    OPERATOR = "operator"
    QUALITY = "quality"
    MAINTENANCE = "maintenance"
    SYSTEM = "system"  # the station's own processes (retraining job, drift monitor)


class Action(StrEnum):
    APPROVE = "model.approve"
    PROMOTE = "model.promote"
    FORCE_PROMOTE = "model.force_promote"
    ROLLBACK = "model.rollback"
    RETRAIN = "retrain.request"
    MAINTENANCE = "maintenance"
    LABEL = "review.label"
    RELABEL = "review.relabel"
    EXPORT = "review.export"
    DISPUTE = "verdict.dispute"
    SHADOW = "model.shadow"  # start or stop judging live frames with a candidate, beside the active model
    CHANGEOVER = "product.switch"  # the line changes to another product (its model judges the frames from then on)


PERMISSIONS: dict[Action, frozenset[Role]] = {
    Action.APPROVE: frozenset({Role.QUALITY, Role.MAINTENANCE}),
    Action.PROMOTE: frozenset({Role.MAINTENANCE, Role.SYSTEM}),
    Action.FORCE_PROMOTE: frozenset({Role.MAINTENANCE}),
    Action.ROLLBACK: frozenset({Role.MAINTENANCE}),
    Action.RETRAIN: frozenset({Role.QUALITY, Role.MAINTENANCE, Role.SYSTEM}),
    Action.MAINTENANCE: frozenset({Role.MAINTENANCE}),
    Action.LABEL: frozenset({Role.QUALITY}),
    Action.RELABEL: frozenset({Role.QUALITY}),
    Action.EXPORT: frozenset({Role.QUALITY, Role.MAINTENANCE}),
    Action.DISPUTE: frozenset({Role.OPERATOR, Role.QUALITY, Role.MAINTENANCE}),
    Action.SHADOW: frozenset({Role.MAINTENANCE, Role.SYSTEM}),
    Action.CHANGEOVER: frozenset({Role.MAINTENANCE, Role.SYSTEM}),
}
"""The one table of who may do what: the CLI (``inspector.identity.authorize``) and the GUI (``gui.state``)."""


def may(role: Role | str, action: Action) -> bool:
    try:
        return Role(role) in PERMISSIONS[action]
    except ValueError:
        return False


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LineMetrics(Strict):
    """What the line would do with labelled frames (reject = anything but PASS)."""

    n: int = Field(ge=0)
    n_good: int = Field(ge=0)
    n_defect: int = Field(ge=0)
    false_reject_rate: float | None = Field(None, description="Share of good frames not passed.")
    recall: dict[str, float] = Field(default_factory=dict, description="Per defect class: share rejected.")
    n_per_class: dict[str, int] = Field(default_factory=dict, description="Frames per defect class.")
    recall_all: float | None = Field(None, description="Share of all defect frames rejected.")
    balanced_accuracy: float | None = None
    errors: int = Field(0, ge=0, description="Frames the model could not score (ERROR verdicts).")


class GateRow(Strict):
    """One check of a candidate: the metric on one frame set, candidate beside incumbent, against a limit."""

    gate: str = Field(description="enough_frames | false_reject_ceiling | recall_floor | no_regression | errors")
    metric: str = Field(description="e.g. false_reject_rate, recall:crack, recall_all, n_good")
    frame_set: str = Field(description="heldout | recent | confirmed")
    candidate: float | None
    incumbent: float | None = None
    limit: float | None = Field(None, description="The floor (>=) or ceiling (<=) the candidate had to meet.")
    passed: bool

    def line(self) -> str:
        def f(x: float | None) -> str:
            return "-" if x is None else f"{x:.4g}"

        verdict = "PASS" if self.passed else "FAIL"
        return (
            f"{verdict} {self.gate} {self.metric} on {self.frame_set}: candidate {f(self.candidate)}, "
            f"incumbent {f(self.incumbent)}, limit {f(self.limit)}"
        )


class GateReport(Strict):
    """The gate of one candidate. ``passed`` only when there is at least one row and every row passed."""

    passed: bool
    rows: list[GateRow]
    incumbent_version: str | None = None
    frame_sets: dict[str, int] = Field(default_factory=dict, description="Frames per set the gate ran on.")
    settings: dict[str, float | dict[str, float]] = Field(default_factory=dict, description="The gate settings used.")
    evaluated_at: float

    @property
    def failed(self) -> list[GateRow]:
        return [r for r in self.rows if not r.passed]


__all__ = [
    "PERMISSIONS",
    "PROMOTABLE",
    "Action",
    "GateReport",
    "GateRow",
    "LineMetrics",
    "ModelStatus",
    "Role",
    "Strict",
    "may",
]
