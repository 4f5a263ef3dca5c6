"""Model registry actions: register a gated candidate, approve, promote (gates enforced), rollback.

Lifecycle (``inspector.contracts.lifecycle.ModelStatus``): a retrained package is registered with its gate
report as ``gated_pass`` or ``gated_fail`` (``candidate`` when no gate ran). Promotion:

* refuses a version whose gate failed or never ran (:class:`GateRefused`: exit status 3 in the CLI, one
  line per failed gate row, and an audit row ``model.promote_refused``), unless ``force`` with a reason by
  the maintenance role, audited as ``model.force_promote`` with the actor and reason;
* needs approval (``approved``) unless ``jobs.auto_promote`` is on, and auto-promotion
  (:func:`auto_promote`) happens only when every gate row passed;
* verifies the package (every sha256, every graph) with ``load_package`` and that it is the package that
  was registered, then writes the ``model_versions`` row and its audit row (one transaction: the system of
  record), then the Redis hash ``active_model`` the workers hot-reload from.
"""

from __future__ import annotations

from typing import Any

import redis
from sqlalchemy import select

from inspector.bus.streams import StationBus
from inspector.contracts.config import StationConfig
from inspector.contracts.errors import InspectorError
from inspector.contracts.lifecycle import PROMOTABLE, Action, GateReport, GateRow, ModelStatus, Role, may
from inspector.contracts.messages import Event, EventType
from inspector.runtime.package import load_package
from inspector.store.db import Store
from inspector.store.models import ModelVersionRow
from inspector.store.records import active_model, promote_model, register_model, set_model_status


class GateRefused(InspectorError):
    """A promotion the gate (or the lifecycle) does not allow; ``rows`` are the failed gate rows."""

    exit_code = 3

    def __init__(self, message: str, hint: str, rows: list[GateRow] | None = None) -> None:
        super().__init__(message, hint)
        self.rows = rows or []


class RoleRefused(InspectorError):
    """The acting role may not do this."""


def check_role(role: Role | str, action: Action) -> Role:
    if not may(role, action):
        allowed = ", ".join(sorted(r.value for r in Role if may(r, action)))
        raise RoleRefused(f"role {role!r} may not {action.value}", f"this needs one of: {allowed}")
    return Role(role)


def gate_of(row: ModelVersionRow) -> GateReport | None:
    raw = (row.metrics or {}).get("gate")
    return GateReport.model_validate(raw) if raw else None


def register_candidate(
    store: Store,
    version: str,
    path: str,
    sha256: str,
    gate: GateReport | None,
    actor: str,
    metrics: dict[str, Any] | None = None,
) -> ModelStatus:
    """Register a new version with its gate report; its status says whether the gate passed."""
    status = (
        ModelStatus.CANDIDATE if gate is None else ModelStatus.GATED_PASS if gate.passed else ModelStatus.GATED_FAIL
    )
    body = {**(metrics or {}), "gate": gate.model_dump(mode="json") if gate else None}
    register_model(store, version, path, sha256, body, actor, status=status)
    return status


def get_version(store: Store, version: str) -> ModelVersionRow:
    with store.session() as s:
        row = s.get(ModelVersionRow, version)
    if row is None:
        raise InspectorError(f"model version {version} is not registered", "`inspector jobs status` lists versions")
    return row


def newest_candidate(store: Store) -> str | None:
    """The newest version waiting for promotion (approved, gated_pass or candidate)."""
    waiting = (ModelStatus.APPROVED, ModelStatus.GATED_PASS, ModelStatus.GATED_FAIL, ModelStatus.CANDIDATE)
    with store.session() as s:
        q = select(ModelVersionRow.version).where(ModelVersionRow.status.in_([w.value for w in waiting]))
        return s.scalar(q.order_by(ModelVersionRow.created_at.desc()).limit(1))


def _verified(row: ModelVersionRow) -> None:
    package = load_package(row.package_path)  # refuses a corrupt, edited or half-built package
    if package.package_sha256 != row.package_sha256:
        raise InspectorError(
            f"package of {row.version} changed since it was registered ({row.package_path})",
            "restore the registered package, or register the new one as a new version",
        )


def _refuse(store: Store, row: ModelVersionRow, actor: str, why: str, hint: str, rows: list[GateRow]) -> GateRefused:
    store.audit.record(
        actor,
        "model.promote_refused",
        row.version,
        {"status": row.status},
        None,
        {"why": why, "failed_rows": [r.model_dump(mode="json") for r in rows]},
    )
    return GateRefused(f"promotion of {row.version} refused: {why}", hint, rows)


def _shadow_period(cfg: StationConfig, store: Store, row: ModelVersionRow, actor: str) -> None:
    """With ``shadow.required_frames`` set, a new version is promoted only after that many live frames judged in
    shadow agreed with the active model's line outcome at least ``shadow.min_agreement`` of the time."""
    need = cfg.shadow.required_frames
    if need <= 0:
        return
    from inspector.store.shadow import shadow_report

    rep = shadow_report(store, row.version, max_differences=0)
    hint = f"run it in shadow first: `inspector shadow start {row.version}`, then `inspector jobs shadow-report {row.version}`"
    if rep.compared < need:
        raise _refuse(
            store,
            row,
            actor,
            f"its shadow period is not over: {rep.compared} of the {need} live frames "
            "(shadow.required_frames) compared with the active model",
            hint,
            [],
        )
    agreement = rep.line_agreement or 0.0
    if agreement < cfg.shadow.min_agreement:
        raise _refuse(
            store,
            row,
            actor,
            f"in shadow it agreed with the active model's line outcome on "
            f"{100 * agreement:.2f} % of {rep.compared} frames, below shadow.min_agreement "
            f"{100 * cfg.shadow.min_agreement:.2f} %",
            f"read the differing parts: `inspector jobs shadow-report {row.version}`; override with --force "
            "--reason (maintenance role, audited)",
            [],
        )


def approve(store: Store, version: str, actor: str, role: Role | str) -> ModelStatus:
    """A person who read every gate row approves a gated_pass version for promotion."""
    check_role(role, Action.APPROVE)
    row = get_version(store, version)
    if row.status != ModelStatus.GATED_PASS:
        gate = gate_of(row)
        raise _refuse(
            store,
            row,
            actor,
            f"it is {row.status}, only a gated_pass version can be approved",
            "a failed gate can only be overridden by `promote --force --reason` (maintenance)",
            gate.failed if gate else [],
        )
    set_model_status(store, version, ModelStatus.APPROVED, actor, Action.APPROVE.value, {"role": str(role)})
    return ModelStatus.APPROVED


def promote(
    cfg: StationConfig,
    client: redis.Redis,
    store: Store,
    version: str | None,
    actor: str,
    role: Role | str = Role.MAINTENANCE,
    force: bool = False,
    reason: str = "",
    action: str = "model.promote",
    details: dict[str, Any] | None = None,
) -> str:
    """Verify and activate ``version`` (default: the newest waiting one) under the lifecycle's rules."""
    check_role(role, Action.FORCE_PROMOTE if force else Action.PROMOTE)
    version = version or newest_candidate(store)
    if version is None:
        raise InspectorError("no model version waits for promotion", "run `inspector jobs retrain` first")
    row = get_version(store, version)
    if row.status == ModelStatus.ACTIVE:
        raise InspectorError(f"{version} is already the active model", "nothing to do")
    gate = gate_of(row)
    extra: dict[str, Any] = {"path": row.package_path, "role": str(role), **(details or {})}
    if force:
        if not reason.strip():
            raise InspectorError("--force needs --reason", "say why the gate is overridden; it is audited")
        action = Action.FORCE_PROMOTE.value
        extra.update(
            reason=reason,
            overridden_rows=[r.model_dump(mode="json") for r in (gate.failed if gate else [])],
            status_before=row.status,
        )
    else:
        _refuse_unless_promotable(cfg, store, row, gate, actor, action)
    if not force and action == "model.promote" and row.status in (ModelStatus.GATED_PASS, ModelStatus.APPROVED):
        _shadow_period(cfg, store, row, actor)
    _verified(row)
    previous = promote_model(store, version, actor, action, extra)
    _activate(cfg, client, version, row, action, previous, actor)
    return version


def _refuse_unless_promotable(
    cfg: StationConfig, store: Store, row: ModelVersionRow, gate: GateReport | None, actor: str, action: str
) -> None:
    """Raise (audited) :class:`GateRefused` when the lifecycle does not let ``row`` be promoted without force:
    a failed gate, no gate, not approved (unless ``jobs.auto_promote`` or another action than a plain promote),
    or a status that is not promotable."""
    if row.status == ModelStatus.GATED_FAIL:
        assert gate is not None
        raise _refuse(
            store,
            row,
            actor,
            f"{len(gate.failed)} gate row(s) failed",
            "retrain with more labels, or override with --force --reason (maintenance role, audited)",
            gate.failed,
        )
    if row.status == ModelStatus.CANDIDATE:
        raise _refuse(store, row, actor, "its gate never ran", "evaluate it through the retraining job's gate", [])
    if row.status == ModelStatus.GATED_PASS and not cfg.jobs.auto_promote and action == "model.promote":
        raise _refuse(
            store,
            row,
            actor,
            "it is not approved (jobs.auto_promote is off)",
            "review its gate rows and `inspector jobs approve VERSION` first",
            [],
        )
    if ModelStatus(row.status) not in PROMOTABLE:
        raise _refuse(store, row, actor, f"a {row.status} version cannot be promoted", "", [])


def _activate(
    cfg: StationConfig,
    client: redis.Redis,
    version: str,
    row: ModelVersionRow,
    action: str,
    previous: str | None,
    actor: str,
) -> None:
    """Point the station's ``active_model`` hash at the promoted package and publish the JOB event."""
    bus = StationBus(client, cfg)
    pipe = client.pipeline(transaction=True)
    pipe.delete(bus.names.active_model)
    pipe.hset(
        bus.names.active_model, mapping={"version": version, "path": row.package_path, "sha256": row.package_sha256}
    )
    pipe.execute()  # no pub/sub notice: workers poll this hash every worker.reload_poll_s (a missed message cannot
    # strand a worker on the old model), the drift monitor reads it every step, and the JOB event below is the record
    bus.publish_event(
        Event(
            station=cfg.station.id,
            type=EventType.JOB,
            model_version=version,
            message=f"{action}: {previous} -> {version} by {actor}",
            data={"action": action, "previous": previous, "version": version},
        )
    )


def auto_promote(
    cfg: StationConfig,
    client: redis.Redis,
    store: Store,
    version: str,
    actor: str,
    details: dict[str, Any] | None = None,
) -> bool:
    """Promote ``version`` without a person only when ``jobs.auto_promote`` is on and its gate passed."""
    if not cfg.jobs.auto_promote:
        return False
    row = get_version(store, version)
    gate = gate_of(row)
    if row.status != ModelStatus.GATED_PASS or gate is None or not gate.passed:
        return False
    promote(cfg, client, store, version, actor, role=Role.SYSTEM, action="model.auto_promote", details=details)
    return True


def previous_version(store: Store) -> str | None:
    """The version that was active before the current one (the newest retired one that was ever promoted)."""
    with store.session() as s:
        q = select(ModelVersionRow.version).where(
            ModelVersionRow.status == ModelStatus.RETIRED.value, ModelVersionRow.promoted_at.is_not(None)
        )
        return s.scalar(q.order_by(ModelVersionRow.promoted_at.desc()).limit(1))


def rollback(
    cfg: StationConfig,
    client: redis.Redis,
    store: Store,
    actor: str,
    reason: str = "",
    role: Role | str = Role.MAINTENANCE,
) -> str:
    """Re-activate the previously active version; the replaced one becomes ``rolled_back``."""
    check_role(role, Action.ROLLBACK)
    target = previous_version(store)
    current = active_model(store)
    if target is None:
        raise InspectorError("there is no previous model version to roll back to", "promote a version instead")
    done = promote(
        cfg,
        client,
        store,
        target,
        actor,
        role=role,
        action="model.rollback",
        details={"from": current.version if current else None, "reason": reason},
    )
    if current is not None:
        set_model_status(
            store,
            current.version,
            ModelStatus.ROLLED_BACK,
            actor,
            "model.rolled_back",
            {"reason": reason, "replaced_by": done},
        )
    return done
