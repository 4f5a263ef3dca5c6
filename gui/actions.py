"""What the maintenance view reads and does in the GUI process, on the DB worker thread: model versions and their
gates (read from the store), the active drift reference, the product on the line, shadow mode.

Retraining, camera changes, approval, promotion and rollback are jobs of the jobs package: the view asks for them
through its ``gui.submitter.JobSubmitter`` (RQ, by dotted path), never from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from gui.state.rows import ModelRow
from inspector.contracts.config import StationConfig
from inspector.contracts.errors import InspectorError
from inspector.contracts.lifecycle import GateReport
from inspector.store import Store


def _client(cfg: StationConfig) -> redis.Redis:
    from inspector.bus.connection import resolve_url
    from inspector.bus.fast import fast_client

    return fast_client(cfg, resolve_url(cfg, start_embedded=False), timeout_s=5.0)


# --------------------------------------------------------------------------- models


def list_models(store: Store) -> list[ModelRow]:
    from inspector.store import records

    return [ModelRow.of(r) for r in records.list_models(store)]


@dataclass(frozen=True)
class GateView:
    version: str
    status: str
    report: GateReport | None


def gate_of(store: Store, version: str) -> GateView:
    """The gate report of a version, for the maintenance view to show before anyone can approve."""
    from inspector.store.models import ModelVersionRow

    with store.session() as s:
        row = s.get(ModelVersionRow, version)
    if row is None:
        raise InspectorError(f"model version {version} is not registered", "`inspector jobs status` lists versions")
    raw = (row.metrics or {}).get("gate")
    return GateView(version, str(row.status), GateReport.model_validate(raw) if raw else None)


# --------------------------------------------------------------------------- drift reference


@dataclass(frozen=True)
class ActiveReference:
    """The active model's version and parsed drift reference (None: no active model, or no reference)."""

    version: str | None
    reference: Any  # inspector.drift.reference.DriftReference | None
    note: str = ""


def active_reference(cfg: StationConfig, store: Store | None = None) -> ActiveReference:
    """The drift reference of the package the workers serve (DbWorker thread: Redis + disk I/O).

    Source: the ``active_model`` hash, exactly as ``DriftMonitor.refresh_model`` reads it, so the chart's bands
    are the reference the alarms are raised on; the store's active row is the fallback while Redis has no hash
    (a station that has not served yet)."""
    from inspector.drift.monitor import load_reference
    from inspector.store.records import active_model

    version = path = None
    client = _client(cfg)
    try:
        from inspector.contracts.names import Names

        raw: dict[bytes, bytes] = client.hgetall(Names(cfg.redis.prefix, cfg.station.id).active_model)  # type: ignore[assignment]  # redis types sync and async replies as one
    finally:
        client.close()
    if raw.get(b"version") and raw.get(b"path"):
        version, path = raw[b"version"].decode(), raw[b"path"].decode()
    elif store is not None and (row := active_model(store)) is not None:
        version, path = row.version, row.package_path
    if path is None:
        return ActiveReference(None, None, "no active model")
    _manifest, ref = load_reference(path)
    if ref.empty:
        return ActiveReference(version, None, f"package {version} has no drift reference")
    return ActiveReference(version, ref)


# --------------------------------------------------------------------------- products and shadow mode


def line_product(cfg: StationConfig) -> str | None:
    """The product on the line now (None: the station makes one product)."""
    from inspector.products import current_product

    client = _client(cfg)
    try:
        return current_product(client, cfg)
    finally:
        client.close()


def change_over(cfg: StationConfig, store: Store, actor: str, product: str, role: str = "maintenance") -> str:
    """Switch the line to ``product`` (refused for a product the station does not make); audited."""
    from inspector.products import switch_product

    client = _client(cfg)
    try:
        previous = switch_product(cfg, client, store, product, actor, role, source="gui")
    finally:
        client.close()
    return f"{previous} -> {product}"


def start_shadow(cfg: StationConfig, store: Store, actor: str, version: str, role: str = "maintenance") -> str:
    """Judge live frames with ``version`` in shadow (registered, hash checked, never the active one); audited."""
    from inspector.shadow_cli import start_shadow as start

    client = _client(cfg)
    try:
        start(cfg, client, store, version, actor, role)
    finally:
        client.close()
    return version


def shadow_report(store: Store, version: str) -> Any:
    """How ``version`` judged live frames in shadow beside the active model (inspector.store.shadow.ShadowReport)."""
    from inspector.store.shadow import shadow_report as report

    return report(store, version, max_differences=20)
