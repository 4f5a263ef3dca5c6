"""Contracts every part of the station shares: config, messages, names, manifest, errors.

Only the standard library, pydantic and PyYAML are imported here.
"""

from inspector.contracts.config import StationConfig, load_config, parse_config
from inspector.contracts.errors import (
    BackendUnavailable,
    ConfigError,
    DataError,
    FrameError,
    InspectorError,
    ModelPackageError,
    TransportError,
    UnsafeInputError,
)
from inspector.contracts.manifest import Manifest
from inspector.contracts.messages import Decision, Event, EventType, FrameMeta, ReviewRequest, Verdict
from inspector.contracts.names import Names

__all__ = [
    "BackendUnavailable",
    "ConfigError",
    "DataError",
    "Decision",
    "Event",
    "EventType",
    "FrameError",
    "FrameMeta",
    "InspectorError",
    "Manifest",
    "ModelPackageError",
    "Names",
    "ReviewRequest",
    "StationConfig",
    "TransportError",
    "UnsafeInputError",
    "Verdict",
    "load_config",
    "parse_config",
]
