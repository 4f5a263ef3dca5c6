"""GUI state without Qt: roles and login, the line's counters and banner, the labelling session, drift series,
the typed rows of the tables.

Views only render these objects and forward user input to them; every rule lives here and is tested without
a display (``import gui.state`` never imports PySide6).
"""

from __future__ import annotations

from gui.state.drift import (
    BAND_QUANTILES,
    DRIFT_STATS,
    DRIFT_TITLES,
    REFERENCE_STATS,
    Band,
    DriftSeries,
    band_of,
    bands_from_reference,
)
from gui.state.labelling import (
    KeyAction,
    KeyKind,
    LabellingSession,
    LabelProgress,
    Loaded,
    Step,
    defect_classes_for,
    label_keymap,
)
from gui.state.line import Banner, LiveStatus, RateMeter, ShiftCounters
from gui.state.roles import (
    GUI_ACTIONS,
    PERMISSIONS,
    ROLE_TITLES,
    VIEWS,
    LoginError,
    Role,
    RolePolicy,
    UserSession,
    pin_hash,
)
from inspector.contracts.labels import GOOD_LABEL, UNSURE_LABEL

__all__ = [
    "BAND_QUANTILES",
    "DRIFT_STATS",
    "DRIFT_TITLES",
    "GOOD_LABEL",
    "GUI_ACTIONS",
    "PERMISSIONS",
    "REFERENCE_STATS",
    "ROLE_TITLES",
    "UNSURE_LABEL",
    "VIEWS",
    "Band",
    "Banner",
    "DriftSeries",
    "KeyAction",
    "KeyKind",
    "LabelProgress",
    "LabellingSession",
    "LiveStatus",
    "Loaded",
    "LoginError",
    "RateMeter",
    "Role",
    "RolePolicy",
    "ShiftCounters",
    "Step",
    "UserSession",
    "band_of",
    "bands_from_reference",
    "defect_classes_for",
    "label_keymap",
    "pin_hash",
]
