"""Where the real data sets and offline backbone weights are found.

``INSPECTOR_SHARED_DATA`` points at a folder holding ``magnetic_tile/``, ``neu_surface_defects/`` and
``weights/``; unset, ``../shared/data`` beside the repository is used when it exists.
``INSPECTOR_WEIGHTS_DIR`` overrides the weights folder alone.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path | None:
    env = os.environ.get("INSPECTOR_SHARED_DATA")
    if env:
        p = Path(env).expanduser()
        return p if p.is_dir() else None
    p = (REPO_ROOT / ".." / "shared" / "data").resolve()
    return p if p.is_dir() else None


def dataset_dir(name: str) -> Path | None:
    base = shared_data_dir()
    if base is None:
        return None
    p = base / name
    return p if p.is_dir() else None


def weights_dir() -> Path | None:
    env = os.environ.get("INSPECTOR_WEIGHTS_DIR")
    if env:
        p = Path(env).expanduser()
        return p if p.is_dir() else None
    return dataset_dir("weights")
