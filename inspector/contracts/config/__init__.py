"""Station configuration: typed models loaded from YAML with environment overrides.

Every field has a description and bounds; unknown keys are refused (``extra="forbid"``) and every
validation error is reported with its dotted key path and a hint. Environment overrides use the
prefix ``INSPECTOR_`` and ``__`` between levels, e.g. ``INSPECTOR_REDIS__URL=redis://host:6379/0``
or ``INSPECTOR_WORKER__MAX_BATCH=4``. Values from the environment are parsed as YAML scalars.

One module per concept; import from here (``inspector.contracts.config``), which exports every name:

- ``base``: the Section base model, masking of secrets in output.
- ``station``: the whole file (:class:`StationConfig`), the station section, products.
- ``transport``: Redis. ``camera``: cameras and parts. ``inference``: workers, runtime, model, decision policy.
- ``storage``: database and retention. ``monitoring``: review sampling and drift. ``retraining``: jobs.
- ``line``: line signals (MQTT, Modbus, OPC UA). ``identity``: users, tokens, GUI PINs.
- ``supervision``: shadow mode, the process supervisor, metrics ports.
- ``loading``: YAML and environment overrides into a validated :class:`StationConfig`; the schema table.
"""

from __future__ import annotations

from inspector.contracts.config.base import SECRET_KEYS, Section, masked_url, shown_value
from inspector.contracts.config.camera import VIEW_RE, CameraSection, CameraSourceSection, GenICamSection, PartsSection
from inspector.contracts.config.identity import SECRET_HASH_RE, GuiSection, IdentitySection, RoleSection, TokenEntry
from inspector.contracts.config.inference import ModelSection, PolicySection, RuntimeSection, WorkerSection
from inspector.contracts.config.line import OPCUA_NODE_SET, LineSection
from inspector.contracts.config.loading import ENV_PREFIX, NON_CONFIG_ENV, load_config, parse_config, schema_table
from inspector.contracts.config.monitoring import DriftSection, RateLimitSection, ReviewSection
from inspector.contracts.config.retraining import JobsSection
from inspector.contracts.config.station import PRODUCT_RE, ProductSection, StationConfig, StationSection
from inspector.contracts.config.storage import STORE_URL_RE, RetentionSection, StoreSection
from inspector.contracts.config.supervision import (
    METRICS_PORT_OFFSETS,
    METRICS_WORKER_OFFSET,
    MetricsSection,
    ShadowSection,
    SupervisorSection,
)
from inspector.contracts.config.transport import REDIS_URL_SCHEMES, ReconnectSection, RedisSection, SentinelSection

__all__ = [
    "ENV_PREFIX",
    "METRICS_PORT_OFFSETS",
    "METRICS_WORKER_OFFSET",
    "NON_CONFIG_ENV",
    "OPCUA_NODE_SET",
    "PRODUCT_RE",
    "REDIS_URL_SCHEMES",
    "SECRET_HASH_RE",
    "SECRET_KEYS",
    "STORE_URL_RE",
    "VIEW_RE",
    "CameraSection",
    "CameraSourceSection",
    "DriftSection",
    "GenICamSection",
    "GuiSection",
    "IdentitySection",
    "JobsSection",
    "LineSection",
    "MetricsSection",
    "ModelSection",
    "PartsSection",
    "PolicySection",
    "ProductSection",
    "RateLimitSection",
    "ReconnectSection",
    "RedisSection",
    "RetentionSection",
    "ReviewSection",
    "RoleSection",
    "RuntimeSection",
    "Section",
    "SentinelSection",
    "ShadowSection",
    "StationConfig",
    "StationSection",
    "StoreSection",
    "SupervisorSection",
    "TokenEntry",
    "WorkerSection",
    "load_config",
    "masked_url",
    "parse_config",
    "schema_table",
    "shown_value",
]
