"""Drift monitoring: pure statistics, the drift-reference schema, and the verdict-stream monitor."""

from inspector.drift.monitor import (
    DriftAlarm,
    DriftDetector,
    DriftMonitor,
    DriftRecord,
    load_reference,
    suppression_key,
)
from inspector.drift.reference import DriftReference, parse_reference, reference_from_samples, reference_from_verdicts

__all__ = [
    "DriftAlarm",
    "DriftDetector",
    "DriftMonitor",
    "DriftRecord",
    "DriftReference",
    "load_reference",
    "parse_reference",
    "reference_from_samples",
    "reference_from_verdicts",
    "suppression_key",
]
