"""Which model an inspection worker may serve: load a package (verify, warm up, canary frames) and the registry
check behind every swap. The Redis ``active_model`` hash only says *that* the model changed; a worker loads a
version only if the station's registry (the SQL store) holds it as the active version with its gate report
(or an audited forced promotion) and the package hash matches (:func:`registered_active`)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import redis

from inspector import telemetry
from inspector.bus.streams import StationBus
from inspector.contracts.config import StationConfig
from inspector.contracts.errors import FrameError, InspectorError, ModelPackageError
from inspector.contracts.messages import EventType
from inspector.decision import decide
from inspector.models.decode import decode_image
from inspector.models.inference import InspectionModel
from inspector.runtime.package import load_package
from inspector.store.db import Store
from inspector.store.models import ModelVersionRow
from inspector.store.records import active_model

log = logging.getLogger(__name__)


def load_model(cfg: StationConfig, path: str | Path) -> InspectionModel:
    """Verify, load and warm up a package; run its canary frames. Raises ModelPackageError when refused."""
    t0 = time.perf_counter()
    package = load_package(path)
    model = InspectionModel(
        package, cfg.runtime, cfg.runtime.engine_cache_dir or cfg.data_dir / "engines", max_batch=cfg.worker.max_batch
    )
    model.warmup()
    for canary in package.manifest.canaries:
        data = package.file(canary.file).read_bytes()
        out = model.infer([decode_image(data, "png" if canary.file.endswith(".png") else "jpeg")])[0]
        if isinstance(out, FrameError):
            raise ModelPackageError(f"canary {canary.file} of {package.version} failed: {out}", "rebuild the package")
        if canary.expected not in ("ANY",):
            got = decide(out.class_probs, out.anomaly_score, cfg.policy, out.classifier_decides).decision.value
            if got != canary.expected:
                raise ModelPackageError(
                    f"canary {canary.file} of {package.version} gave {got}, expected {canary.expected}",
                    "the package does not behave as when it was validated; rebuild it",
                )
    telemetry.model_loaded(package.version, time.perf_counter() - t0)
    return model


def active_model_path(client: redis.Redis, bus: StationBus) -> tuple[str, str] | None:
    pointer = active_pointer(client, bus)
    return None if pointer is None else (pointer[0], pointer[1])


def active_pointer(client: redis.Redis, bus: StationBus) -> tuple[str, str, str] | None:
    """(version, path, sha256) of the Redis ``active_model`` hash: a notice that the model changed, not a proof."""
    raw = client.hgetall(bus.names.active_model)
    if not raw or b"version" not in raw:
        return None
    return raw[b"version"].decode(), raw.get(b"path", b"").decode(), raw.get(b"sha256", b"").decode()


class SwapRefused(InspectorError):
    """The registry does not back the model the Redis pointer names."""


def registered_active(store: Store, version: str, sha256: str) -> ModelVersionRow:
    """The registry row that lets a worker load ``version``: the active one, with this package hash and its
    gate report (or an audited forced promotion). Raises :class:`SwapRefused` saying what is missing."""
    row = active_model(store)
    hint = "promote it through the registry: inspector jobs promote VERSION (or rollback)"
    if row is None or row.version != version:
        held = (
            f"the registry's active version is {row.version}"
            if row is not None
            else "the registry has no active version"
        )
        raise SwapRefused(f"{version} is not the registry's active model ({held})", hint)
    if not sha256 or sha256 != row.package_sha256:
        raise SwapRefused(
            f"the pointer's package hash {sha256[:12] or '(none)'} is not the registered "
            f"{row.package_sha256[:12]} of {version}",
            hint,
        )
    if not (row.metrics or {}).get("gate") and not _forced(store, version):
        raise SwapRefused(f"{version} has no gate report in the registry", "run it through the gate, then promote it")
    return row


def _forced(store: Store, version: str) -> bool:
    return any(e.target == version for e in store.audit.entries(limit=1000, action="model.force_promote"))


class ModelSwapping:
    """The worker's hot swap: follow the registry's active model, refuse what it does not back (audited)."""

    cfg: StationConfig
    bus: StationBus
    model: InspectionModel
    name: str
    store: Store
    _unsure: tuple[str, str, str] | None  # last pointer the registry could not be asked about
    _refused: set[tuple[str, str, str]]

    def _event(self, etype: EventType, severity: str, message: str, version: str | None = None) -> None:
        raise NotImplementedError

    def maybe_reload(self) -> bool:
        """Swap to the model the registry holds as active when the Redis pointer changed; keep the old one on any
        refusal or failure. Every swap and every refusal is audited."""
        active = active_pointer(self.bus.r, self.bus)
        if active is None or active[0] == self.model.version or active in self._refused:
            return False
        version = active[0]
        try:
            row = registered_active(self.store, version, active[2])
            new = load_model(self.cfg, row.package_path)
            if new.package.package_sha256 != row.package_sha256:
                new.close()
                raise SwapRefused(
                    f"the package at {row.package_path} is not the one registered as {version}",
                    "restore the registered package, or register and promote it as a new version",
                )
        except InspectorError as err:
            self._refuse(active, err)
            return False
        except Exception as err:  # noqa: BLE001 - the registry did not answer: keep serving, ask again next poll
            if self._unsure != active:
                log.error(
                    "worker %s: cannot check model %s with the registry, still serving %s: %s",
                    self.name,
                    version,
                    self.model.version,
                    self.store.describe(err),
                )
                self._unsure = active
            return False
        try:
            self.store.audit.record(
                f"worker:{self.name}",
                "model.swap",
                version,
                {"version": self.model.version},
                {"version": version, "package_sha256": row.package_sha256},
                {"worker": self.name, "path": row.package_path},
            )
        except Exception as err:  # noqa: BLE001 - no swap without its audit row
            new.close()
            if self._unsure != active:
                log.error(
                    "worker %s: swap to %s not audited (%s); still serving %s",
                    self.name,
                    version,
                    self.store.describe(err),
                    self.model.version,
                )
                self._unsure = active
            return False
        old, self.model = self.model, new  # atomic swap: one reference assignment between batches
        old.close()
        self._unsure = None
        self._event(EventType.MODEL_RELOADED, "info", f"worker {self.name} now serves {version}", version)
        return True

    def _refuse(self, active: tuple[str, str, str], err: InspectorError) -> None:
        """One log line, one event, one audit row per refused pointer; it is not retried on every poll."""
        version = active[0]
        log.error(
            "worker %s refused model %s, still serving %s: %s", self.name, version, self.model.version, err.message
        )
        self._event(
            EventType.MODEL_REFUSED,
            "critical",
            f"model {version} refused, still serving {self.model.version}: {err.message}",
            version,
        )
        self.bus.r.hset(self.bus.names.active_model, "refused_by_" + self.name, version)
        self._refused.add(active)
        try:
            self.store.audit.record(
                f"worker:{self.name}",
                "model.swap_refused",
                version,
                {"version": self.model.version},
                {"version": version, "path": active[1], "sha256": active[2]},
                {"worker": self.name, "why": err.message},
            )
        except Exception:  # noqa: BLE001 - refused whether or not the row could be written
            log.exception("worker %s could not audit the refusal of %s", self.name, version)
