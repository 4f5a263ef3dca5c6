from __future__ import annotations

from pathlib import Path

import pytest
import torch

from inspector.contracts.errors import DataError
from trainer.augment import build_transforms, load_policy
from trainer.data import (
    ImageDataset,
    scan_anomaly,
    scan_class_folders,
    snapshot_hash,
    split_summary,
    stratified_split,
)
from trainer.data_report import build_report

FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


def test_scan_class_folders(class_data: Path) -> None:
    samples, classes = scan_class_folders(class_data)
    assert classes == ["a", "b", "c"]
    assert len(samples) == 34
    assert {s.label for s in samples if s.label_name == "b"} == {1}


def test_split_is_deterministic_stratified_and_leak_free(class_data: Path) -> None:
    samples, _ = scan_class_folders(class_data)
    a = stratified_split(samples, FRACTIONS, seed=3)
    b = stratified_split(list(reversed(samples)), FRACTIONS, seed=3)  # scan order must not matter
    assert {k: [s.path for s in v] for k, v in a.items()} == {k: [s.path for s in v] for k, v in b.items()}
    paths = [s.path for v in a.values() for s in v]
    assert len(paths) == len(set(paths)) == len(samples)
    hashes = {k: {s.sha256 for s in v} for k, v in a.items()}
    assert not (hashes["train"] & hashes["test"]) and not (hashes["train"] & hashes["val"])
    assert not (hashes["val"] & hashes["test"])
    dup = [k for k, v in a.items() if any(s.path.name in ("a_0.png", "a_dup.png") for s in v)]
    assert len(dup) == 1  # the duplicate pair sits in one split
    counts = split_summary(a)
    assert counts["train"]["per_class"]["c"] == 5 and counts["test"]["per_class"]["c"] == 2
    other = stratified_split(samples, FRACTIONS, seed=4)
    assert [s.path for s in other["test"]] != [s.path for s in a["test"]]


def test_conflicting_duplicate_labels_raise(class_data: Path) -> None:
    (class_data / "b" / "copy_of_a0.png").write_bytes((class_data / "a" / "a_0.png").read_bytes())
    samples, _ = scan_class_folders(class_data)
    with pytest.raises(DataError, match="different labels"):
        stratified_split(samples, FRACTIONS)


def test_snapshot_hash_depends_on_content_and_labels(class_data: Path) -> None:
    samples, _ = scan_class_folders(class_data)
    h = snapshot_hash(samples)
    assert h == snapshot_hash(list(reversed(samples)))
    relabelled = [
        s.__class__(s.path, s.label, "x" if i == 0 else s.label_name, s.sha256) for i, s in enumerate(samples)
    ]
    assert snapshot_hash(relabelled) != h


def test_dataset_grey_to_rgb_normalised(class_data: Path) -> None:
    samples, _ = scan_class_folders(class_data)
    ds = ImageDataset(samples[:2], build_transforms(load_policy("safe-default"), 24, (0.5,) * 3, (0.5,) * 3))
    x, y = ds[0]
    assert x.shape == (3, 24, 24) and x.dtype == torch.float32 and y == 0
    assert -1.01 <= float(x.min()) and float(x.max()) <= 1.01


def test_scan_anomaly_layout(anomaly_data: Path) -> None:
    data = scan_anomaly(anomaly_data)
    assert len(data.train) == 6 and all(s.label == 0 for s in data.train)
    assert data.defects == ["crack"]
    defects = [s for s in data.test if s.label == 1]
    assert len(defects) == 2 and defects[0].mask is not None and defects[1].mask is None


def test_data_report_warns_and_finds_duplicates(class_data: Path, anomaly_data: Path) -> None:
    rep = build_report(class_data, "classification")
    assert rep["need"]["low"] == 1000
    assert any("class c has 9 images, below the 1,000 minimum" in w for w in rep["warnings"])
    assert len(rep["duplicates"]) == 1
    assert rep["classes"][0]["min_scratch"] == 5000
    anom = build_report(anomaly_data, "anomaly")
    assert any("train/good has 6 images, below the 200 minimum" in w for w in anom["warnings"])
