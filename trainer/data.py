"""Data sets on disk: scanning two layouts, leak-free stratified splits, a torch Dataset, snapshot hashes.

Layouts:

- class folders: ``root/<class>/<image>``; classes are the sorted folder names.
- anomaly (MVTec AD): ``root/train/good``, ``root/test/good``, ``root/test/<defect>`` and
  ``root/ground_truth/<defect>/<stem>_mask.png``. Label 0 is good, 1 is defective.

Splits are stratified by class, deterministic for a seed, independent of scan order, and keep
byte-identical files (same sha256) in one split, so a duplicate can never leak from train to test.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from inspector.contracts.errors import DataError
from inspector.contracts.labels import GOOD_LABEL
from inspector.runtime.package import hash_file as file_sha256  # the one file hash; this module's name for it
from trainer.heldout import load_rgb  # the one image reader (an RGB array); imported from here by the trainer

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Sample:
    """One image: its file, integer label, label name, optional mask and content hash."""

    path: Path
    label: int
    label_name: str
    sha256: str
    mask: Path | None = None
    defect: str | None = None  # anomaly layout: the defect folder (None for good)


@dataclass
class AnomalyData:
    """The anomaly layout: ``train`` holds good images only; ``test`` good (0) and defective (1)."""

    train: list[Sample]
    test: list[Sample]
    defects: list[str] = field(default_factory=list)


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def scan_class_folders(root: str | Path) -> tuple[list[Sample], list[str]]:
    """Samples of ``root/<class>/*`` (sorted) and the sorted class names."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist", "pass a folder holding one sub-folder per class")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and list_images(d))
    if len(classes) < 2:
        raise DataError(
            f"{root} has {len(classes)} class folder(s) with images", "a classifier needs at least 2 classes"
        )
    samples = [Sample(p, i, name, file_sha256(p)) for i, name in enumerate(classes) for p in list_images(root / name)]
    return samples, classes


def _mask_for(root: Path, defect: str, image: Path) -> Path | None:
    mask = root / "ground_truth" / defect / f"{image.stem}_mask.png"
    return mask if mask.is_file() else None


def scan_anomaly(root: str | Path) -> AnomalyData:
    """Samples of the MVTec-AD-style anomaly layout."""
    root = Path(root)
    good_train = root / "train" / GOOD_LABEL
    if not good_train.is_dir():
        raise DataError(f"{good_train} does not exist", "the anomaly layout needs train/good, test/good, test/<defect>")
    train = [Sample(p, 0, GOOD_LABEL, file_sha256(p)) for p in list_images(good_train)]
    test: list[Sample] = []
    defects: list[str] = []
    test_dir = root / "test"
    for d in sorted(x for x in test_dir.iterdir() if x.is_dir()) if test_dir.is_dir() else []:
        is_good = d.name == GOOD_LABEL
        if not is_good:
            defects.append(d.name)
        for p in list_images(d):
            mask = None if is_good else _mask_for(root, d.name, p)
            test.append(
                Sample(
                    p,
                    0 if is_good else 1,
                    GOOD_LABEL if is_good else "defect",
                    file_sha256(p),
                    mask,
                    None if is_good else d.name,
                )
            )
    return AnomalyData(train, test, defects)


def _groups_by_hash(samples: Iterable[Sample]) -> dict[str, list[Sample]]:
    groups: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        groups[s.sha256].append(s)
    return groups


def _allocation(n: int, fractions: Sequence[float]) -> list[int]:
    """Split ``n`` items by ``fractions`` with the largest-remainder rule (sums to ``n``)."""
    raw = [n * f for f in fractions]
    counts = [int(x) for x in raw]
    order = sorted(range(len(raw)), key=lambda i: (raw[i] - counts[i], -i), reverse=True)
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def stratified_split(samples: Sequence[Sample], fractions: dict[str, float], seed: int = 0) -> dict[str, list[Sample]]:
    """Deterministic stratified split; samples sharing a sha256 stay together (no leakage).

    A group of identical files is stratified by its first sample's label; identical files with different
    labels are a labelling error and raise ``DataError``.
    """
    names = list(fractions)
    out: dict[str, list[Sample]] = {k: [] for k in names}
    by_label: dict[int, list[list[Sample]]] = defaultdict(list)
    for _sha, group in sorted(_groups_by_hash(samples).items()):
        labels = {s.label_name for s in group}
        if len(labels) > 1:
            paths = ", ".join(str(s.path) for s in group)
            raise DataError(
                f"identical files carry different labels {sorted(labels)}: {paths}",
                "fix the labels or delete the duplicate",
            )
        by_label[group[0].label].append(sorted(group, key=lambda s: str(s.path)))
    for label in sorted(by_label):
        groups = by_label[label]
        random.Random(f"{seed}:{label}").shuffle(groups)
        total = sum(len(g) for g in groups)
        targets = _allocation(total, [fractions[k] for k in names])
        _fill(groups, names, targets, out)
    return {k: sorted(v, key=lambda s: str(s.path)) for k, v in out.items()}


def _fill(groups: list[list[Sample]], names: list[str], targets: list[int], out: dict[str, list[Sample]]) -> None:
    """Place whole groups into the split furthest below its target."""
    filled = [0] * len(names)
    for g in groups:
        i = max(range(len(names)), key=lambda j: (targets[j] - filled[j], -j))
        out[names[i]].extend(g)
        filled[i] += len(g)


def snapshot_hash(samples: Iterable[Sample]) -> str:
    """Content hash of a data snapshot: sorted (file sha256, label name) pairs."""
    rows = sorted(f"{s.sha256}\t{s.label_name}" for s in samples)
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def split_summary(splits: dict[str, list[Sample]]) -> dict[str, Any]:
    """Counts per split and class plus the hash of each split (goes into the manifest)."""
    summary: dict[str, Any] = {}
    for name, items in splits.items():
        counts: dict[str, int] = defaultdict(int)
        for s in items:
            counts[s.label_name] += 1
        summary[name] = {"n": len(items), "per_class": dict(sorted(counts.items())), "hash": snapshot_hash(items)}
    return summary


class ImageDataset(Dataset[tuple[torch.Tensor, int]]):
    """Images -> (normalised tensor [3,H,W], label) through ``transform`` (see ``trainer.augment``).

    ``transform`` receives the RGB PIL image; build it with ``augment.build_transforms`` so that resizing
    and the backbone's mean/std come from one place.
    """

    def __init__(self, samples: Sequence[Sample], transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        s = self.samples[i]
        return self.transform(Image.fromarray(load_rgb(s.path))), s.label

    def labels(self) -> list[int]:
        return [s.label for s in self.samples]


def write_split_file(path: Path, splits: dict[str, list[Sample]], root: Path) -> None:
    """The split as JSON lists of paths relative to ``root`` (reproducible, human-readable)."""
    body = {k: [str(s.path.relative_to(root)) for s in v] for k, v in splits.items()}
    path.write_text(json.dumps(body, indent=1))
