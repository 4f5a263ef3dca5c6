"""Data of a retraining job: the base data set, the fixed held-out set, recent labels, the snapshot.

Base data uses the anomaly layout (``train/good``, ``test/<class>``). The FIXED held-out set is every
second frame of each ``test/<class>`` folder in name order (positions 0, 2, 4, ...); the other half of the
defect frames is labelled training material for the classifier. Recent labels come from the station's
review queue: current, not undone labels joined with the archived frame of their review item.

A snapshot is a JSON-able list of items ``{path, label, source, condition}`` plus its sha256: what a job
trained on is recorded with the package and can be rebuilt.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy import select

from inspector.archive import Archive
from inspector.contracts.errors import DataError
from inspector.store.db import Store
from inspector.store.models import LabelRow, ReviewItemRow

GOOD = "good"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True)
class Item:
    path: str
    label: str
    source: str  # base | heldout | label | collected
    condition: str = "base"  # base | current (frames of the line's present condition)

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "label": self.label, "source": self.source, "condition": self.condition}


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []


def _require(base: Path | None) -> Path:
    if base is None or not (base / "train" / GOOD).is_dir():
        raise DataError(f"base data {base} is not an anomaly-layout folder (train/good, test/<class>)",
                        "set jobs.base_data to e.g. ../shared/data/magnetic_tile")
    return base


def _spaced(items: list[Any], n: int | None) -> list[Any]:
    if n is None or n >= len(items):
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def heldout_items(base: Path | None, limit: int | None = None) -> list[Item]:
    """The fixed held-out set: even positions of every test/<class> folder (optionally evenly thinned)."""
    root = _require(base) / "test"
    items = [Item(str(p), c.name, "heldout") for c in sorted(root.iterdir()) if c.is_dir()
             for p in _images(c)[0::2]]
    return _spaced(items, limit)


def base_train_items(base: Path | None, n_good: int, n_defect: int) -> list[Item]:
    """Evenly spaced train/good frames, and labelled defects from the odd positions of test/<class>."""
    root = _require(base)
    good = [Item(str(p), GOOD, "base") for p in _spaced(_images(root / "train" / GOOD), n_good)]
    defects = [Item(str(p), c.name, "base") for c in sorted((root / "test").iterdir())
               if c.is_dir() and c.name != GOOD for p in _images(c)[1::2]]
    return good + _spaced(defects, n_defect)


def recent_labels(store: Store, archive: Archive, since: float) -> list[Item]:
    """Frames labelled since ``since`` whose image is in the archive (the line's present condition)."""
    q = (select(LabelRow.label, ReviewItemRow.image_sha256, LabelRow.created_at)
         .join(ReviewItemRow, ReviewItemRow.frame_id == LabelRow.frame_id)
         .where(LabelRow.is_current.is_(True), LabelRow.undone.is_(False), LabelRow.created_at >= since,
                ReviewItemRow.image_sha256.is_not(None))
         .order_by(LabelRow.created_at))
    with store.session() as s:
        rows = s.execute(q).all()
    return [Item(str(archive.path(r.image_sha256)), r.label, "label", "current") for r in rows
            if archive.exists(r.image_sha256)]


def snapshot_hash(items: list[Item]) -> str:
    body = json.dumps(sorted(json.dumps(i.as_dict(), sort_keys=True) for i in items)).encode()
    return hashlib.sha256(body).hexdigest()


def split_current(items: list[Item]) -> tuple[list[Item], list[Item]]:
    """Current-condition items split per label into (train, evaluation): even / odd positions."""
    train: list[Item] = []
    evaluation: list[Item] = []
    for label in sorted({i.label for i in items}):
        same = [i for i in items if i.label == label]
        train += same[0::2]
        evaluation += same[1::2]
    return train, evaluation


def load_rgb(path: str | Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as err:
        raise DataError(f"cannot read image {path}: {err}", "replace or remove the file") from None


def load_images(items: list[Item]) -> list[np.ndarray]:
    return [load_rgb(i.path) for i in items]


def items_from_dicts(rows: list[dict[str, str]]) -> list[Item]:
    return [Item(**r) for r in rows]
