"""The station's fixed held-out set, and the labelled images a retraining may learn from.

One definition: the held-out set is a list of image files *by sha256*, frozen once when the station is
commissioned (``trainer heldout freeze``, or the first retraining / validation that needs it) and stored with
the station at ``<data_dir>/heldout.json``. It is never trained on: every training item whose sha256 is in
the set is dropped (and counted). It never changes: a file that no longer matches its hash is an error.

Selection from a base data folder in the anomaly layout (``train/good``, ``test/<class>``): half of every
``test/<class>`` folder, ``test/good`` included (images ordered by sha256, even positions). The other half of
every defect class is labelled material a station can learn from, and the other half of ``test/good`` joins
``train/good`` as good material: on magnetic_tile test/good scores higher than train/good even for the good-only
model (median log score 2.85 vs 2.74, measured by ``trainer learning-curve``), so a threshold set drawn from
train/good alone under-rejects nothing and over-rejects test-like parts (3.1 % false rejects for a 2 % target);
threshold goods drawn from both populations describe the parts the line will judge.

Import cost: the standard library, numpy and PIL only (no torch), so the station's jobs can read it.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy import select

from inspector.archive import Archive
from inspector.contracts.errors import DataError
from inspector.contracts.labels import GOOD_LABEL, UNSURE_LABEL
from inspector.runtime.package import hash_file as file_sha256  # the one file hash; this module's name for it
from inspector.store.db import Store
from inspector.store.models import LabelRow, ReviewItemRow

HELDOUT_FILE = "heldout.json"
FORMAT = 1
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True)
class LabelledImage:
    """An image file, its label (``good`` or a defect class), its sha256 and where it came from."""

    path: str
    label: str
    sha256: str
    source: str  # heldout | base | label


@dataclass(frozen=True)
class HeldOutSet:
    items: list[LabelledImage]
    source: str
    created_at: float
    digest: str

    @property
    def hashes(self) -> frozenset[str]:
        return frozenset(i.sha256 for i in self.items)

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for i in self.items:
            out[i.label] = out.get(i.label, 0) + 1
        return dict(sorted(out.items()))


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []


def _require_layout(base: Path | None) -> Path:
    if base is None or not (Path(base) / "train" / GOOD_LABEL).is_dir() or not (Path(base) / "test").is_dir():
        raise DataError(
            f"base data {base} is not an anomaly-layout folder (train/good, test/<class>)",
            "set jobs.base_data to such a folder, e.g. ../shared/data/magnetic_tile",
        )
    return Path(base).resolve()


def _digest(items: list[LabelledImage]) -> str:
    return hashlib.sha256("\n".join(sorted(f"{i.sha256} {i.label}" for i in items)).encode()).hexdigest()


def heldout_path(data_dir: str | Path) -> Path:
    return Path(data_dir).resolve() / HELDOUT_FILE


def select_heldout(base: str | Path) -> list[LabelledImage]:
    """The held-out selection of a base data folder (see the module docstring)."""
    root = _require_layout(Path(base))
    items: list[LabelledImage] = []
    for folder in sorted(p for p in (root / "test").iterdir() if p.is_dir()):
        hashed = sorted((file_sha256(p), p) for p in _images(folder))
        picked = hashed[0::2]
        items += [LabelledImage(str(p.relative_to(root)), folder.name, sha, "heldout") for sha, p in picked]
    return items


def freeze_heldout(base: str | Path, data_dir: str | Path, frozen_by: str = "system") -> HeldOutSet:
    """Freeze the station's held-out set from ``base`` into ``<data_dir>/heldout.json`` (refused if one exists)."""
    target = heldout_path(data_dir)
    if target.exists():
        raise DataError(
            f"the held-out set of this station is already frozen ({target})",
            "it never changes; delete the file only when re-commissioning the station",
        )
    root = _require_layout(Path(base))
    items = select_heldout(root)
    body = {
        "format": FORMAT,
        "source": str(root),
        "created_at": time.time(),
        "frozen_by": frozen_by,
        "digest": _digest(items),
        "items": [asdict(i) for i in items],
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=1))
    tmp.replace(target)
    return _parse(body)


def _parse(body: dict[str, Any]) -> HeldOutSet:
    root = Path(body["source"])
    items = [LabelledImage(str(root / i["path"]), i["label"], i["sha256"], "heldout") for i in body["items"]]
    if _digest(items) != body["digest"]:
        raise DataError(
            "the held-out list does not match its digest (edited?)",
            "restore heldout.json from the station's backup; it must never change",
        )
    return HeldOutSet(items, str(root), float(body["created_at"]), body["digest"])


def load_heldout_set(data_dir: str | Path, base: str | Path | None = None, verify: bool = True) -> HeldOutSet:
    """The station's frozen held-out set; frozen now from ``base`` when the station has none yet.

    ``verify``: every file is re-hashed (about 1 s for 400 images); a changed or missing file is an error."""
    target = heldout_path(data_dir)
    if not target.exists():
        if base is None:
            raise DataError(
                f"this station has no frozen held-out set ({target})",
                "set jobs.base_data and run `trainer heldout freeze` (or any retraining)",
            )
        return freeze_heldout(base, data_dir)
    held = _parse(json.loads(target.read_text()))
    if verify:
        for item in held.items:
            p = Path(item.path)
            if not p.is_file() or file_sha256(p) != item.sha256:
                raise DataError(
                    f"held-out image {p} is missing or changed since the set was frozen",
                    "restore the base data folder; the held-out set never changes",
                )
    return held


def base_training_items(base: str | Path, heldout: HeldOutSet) -> list[LabelledImage]:
    """Labelled training material of the base folder: train/good and every test image not held out."""
    root = _require_layout(Path(base))
    out = [LabelledImage(str(p), GOOD_LABEL, file_sha256(p), "base") for p in _images(root / "train" / GOOD_LABEL)]
    for folder in sorted(p for p in (root / "test").iterdir() if p.is_dir()):
        for p in _images(folder):
            sha = file_sha256(p)
            if sha not in heldout.hashes:
                out.append(LabelledImage(str(p), folder.name, sha, "base"))
    return out


def labelled_frames(
    store: Store, archive: Archive, since: float = 0.0, until: float | None = None
) -> list[LabelledImage]:
    """Frames a person labelled (current, not undone, not 'unsure') in ``[since, until)``, with their archived image."""
    q = (
        select(LabelRow.label, ReviewItemRow.image_sha256, LabelRow.created_at)
        .join(ReviewItemRow, ReviewItemRow.frame_id == LabelRow.frame_id)
        .where(
            LabelRow.is_current.is_(True),
            LabelRow.undone.is_(False),
            LabelRow.label != UNSURE_LABEL,
            LabelRow.created_at >= since,
            ReviewItemRow.image_sha256.is_not(None),
        )
        .order_by(LabelRow.created_at)
    )
    if until is not None:
        q = q.where(LabelRow.created_at < until)
    with store.session() as s:
        rows = s.execute(q).all()
    return [
        LabelledImage(str(archive.path(r.image_sha256)), r.label, r.image_sha256, "label")
        for r in rows
        if archive.exists(r.image_sha256)
    ]


def without_heldout(items: list[LabelledImage], heldout: HeldOutSet) -> tuple[list[LabelledImage], int]:
    """``items`` minus every image of the held-out set (by sha256), and how many were dropped."""
    keep = [i for i in items if i.sha256 not in heldout.hashes]
    return keep, len(items) - len(keep)


def load_rgb(path: str | Path) -> np.ndarray:
    """uint8 RGB array (H, W, 3) of an image file (grey and palette images are converted); one clear error naming
    the file when it cannot be read. The one image reader of the trainer: ``trainer.data`` imports it."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as err:
        raise DataError(f"cannot read image {path}: {err}", "replace or remove the file") from None


def load_images(items: list[LabelledImage]) -> list[np.ndarray]:
    return [load_rgb(i.path) for i in items]
