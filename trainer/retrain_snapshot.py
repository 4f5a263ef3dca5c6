"""The snapshot step of a retraining (``trainer.retrain``): what it learns from and is judged on, frozen.

The station's held-out set (never trained on), the base folder's material, every current label exported as a
dataset version; labels made since the incumbent's promotion split per label by sha256 order into training
(even positions) and the "recent" gate set (odd positions). Written to ``work/snapshot.json``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from inspector.archive import Archive
from inspector.contracts.config import StationConfig
from inspector.contracts.labels import GOOD_LABEL
from trainer.heldout import (
    HeldOutSet,
    LabelledImage,
    base_training_items,
    file_sha256,
    labelled_frames,
    load_heldout_set,
    load_images,
    without_heldout,
)
from trainer.retrain_staging import SNAPSHOT_FILE, Say, say_or_print, write_work_file

if TYPE_CHECKING:
    from inspector.review.label_records import DatasetVersion


def items_of(rows: list[dict[str, str]]) -> list[LabelledImage]:
    """The snapshot's JSON rows back as items."""
    return [LabelledImage(**r) for r in rows]


def evenly_spaced(items: list[Any], n: int | None) -> list[Any]:
    """At most ``n`` items, evenly spaced over the list (None: all)."""
    if n is None or n >= len(items):
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def _split_recent(recent: list[LabelledImage]) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """Per label, by sha256 order: even positions train, odd positions are the recent gate set."""
    train: list[LabelledImage] = []
    gate: list[LabelledImage] = []
    for label in sorted({i.label for i in recent}):
        same = sorted((i for i in recent if i.label == label), key=lambda i: i.sha256)
        train += same[0::2]
        gate += same[1::2]
    return train, gate


def _dedupe(items: list[LabelledImage]) -> list[LabelledImage]:
    """One item per image (sha256); a person's label wins over the base folder's."""
    out: dict[str, LabelledImage] = {}
    for i in items:
        if i.sha256 not in out or i.source == "label":
            out[i.sha256] = i
    return list(out.values())


def snapshot_digest(train: list[LabelledImage], recent: list[LabelledImage], heldout: list[LabelledImage]) -> str:
    import hashlib

    rows = [
        f"{role} {i.sha256} {i.label}"
        for role, items in (("train", train), ("recent", recent), ("heldout", heldout))
        for i in items
    ]
    return hashlib.sha256("\n".join(sorted(rows)).encode()).hexdigest()


def snapshot(
    cfg: StationConfig,
    store: Any,
    stage: str | Path,
    since: float = 0.0,
    condition_changed: bool = False,
    until: float | None = None,
    say: Say | None = None,
) -> dict[str, Any]:
    """Freeze what this retraining learns from and is judged on; writes ``work/snapshot.json``.

    ``since``: when the incumbent was promoted (0: no incumbent); labels made since then are the line's
    present condition. ``condition_changed``: the camera or lighting changed; the new condition's labelled
    frames JOIN the base material (they never replace it): the held-out set still shows the old condition and
    the gate's no-regression rows hold the candidate to it, and a line whose lamp is replaced back must not
    meet a model that forgot it. The gate's primary set and the drift reference become the new condition's."""
    say = say_or_print(say)
    stage = Path(stage)
    stage.mkdir(parents=True, exist_ok=True)
    base = cfg.jobs.base_data
    held_set = load_heldout_set(cfg.data_dir, base)
    heldout = evenly_spaced(held_set.items, cfg.jobs.heldout_limit)
    base_goods, base_defects = _base_material(cfg, held_set)
    archive = Archive.for_data_dir(cfg.data_dir)
    dv, exported = _export_labels(store, archive, stage / "labels")
    recent_shas = {i.sha256 for i in labelled_frames(store, archive, since, until)}
    recent = [i for i in exported if i.sha256 in recent_shas]
    older = [i for i in exported if i.sha256 not in recent_shas]
    recent_train, recent_gate = _split_recent(recent)
    use_base_goods = True  # see the docstring: a condition change adds material, it never forgets the old
    candidates = base_goods + base_defects + older + recent_train
    train, dropped = _training_items(candidates, recent_gate, held_set)
    counts = {"train": count_by_label(train), "recent": count_by_label(recent_gate), "heldout": count_by_label(heldout)}
    scorer_goods = [i.sha256 for i in train if i.label == GOOD_LABEL]
    body = {
        "train": [asdict(i) for i in train],
        "recent": [asdict(i) for i in recent_gate],
        "heldout": [asdict(i) for i in heldout],
        "hash": snapshot_digest(train, recent_gate, heldout),
        "dataset_version": dv.hash,
        "dataset_counts": dv.counts,
        "heldout_digest": held_set.digest,
        "heldout_source": held_set.source,
        "dropped_heldout": dropped,
        "counts": counts,
        "labels": {"current": len(exported), "since_incumbent": len(recent), "older": len(older)},
        "condition_changed": condition_changed,
        "base_goods_used": use_base_goods,
        "since": since,
        "scorer_goods": scorer_goods,
        "base_data": str(base) if base else None,
    }
    write_work_file(stage, SNAPSHOT_FILE, body)
    say(_summary_line(body))
    return {k: v for k, v in body.items() if k not in ("train", "recent", "heldout", "scorer_goods")}


def _base_material(cfg: StationConfig, held_set: HeldOutSet) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """The base folder's goods (at most ``jobs.train_images``, evenly spaced) and defects, held-out set excluded."""
    base = cfg.jobs.base_data
    base_items = base_training_items(base, held_set) if base is not None else []
    base_goods = evenly_spaced([i for i in base_items if i.label == GOOD_LABEL], cfg.jobs.train_images)
    base_defects = [i for i in base_items if i.label != GOOD_LABEL]
    return base_goods, base_defects


def _export_labels(store: Any, archive: Archive, labels_dir: Path) -> tuple[DatasetVersion, list[LabelledImage]]:
    """Every current label exported as a dataset version into ``labels_dir`` (replaced), and its images as items."""
    from inspector.review.labelling import LabellingService

    if labels_dir.exists():
        shutil.rmtree(labels_dir)
    dv = LabellingService(store, archive).export_dataset(labels_dir, layout="classification")
    exported = [
        LabelledImage(str(labels_dir / rel), rel.split("/", 1)[0], file_sha256(labels_dir / rel), "label")
        for rel in json.loads((labels_dir / "dataset.json").read_text())["files"]
    ]
    return dv, exported


def _training_items(
    candidates: list[LabelledImage], recent_gate: list[LabelledImage], held_set: HeldOutSet
) -> tuple[list[LabelledImage], int]:
    """The training items: candidates not in the recent gate set, one per image, held-out images dropped
    (sorted by label then sha256), and how many held-out images were dropped."""
    gate_shas = {i.sha256 for i in recent_gate}
    train, dropped = without_heldout(_dedupe([i for i in candidates if i.sha256 not in gate_shas]), held_set)
    train.sort(key=lambda i: (i.label, i.sha256))
    return train, dropped


def _summary_line(body: dict[str, Any]) -> str:
    """The snapshot in one line for the job log."""
    counts = body["counts"]
    return (
        f"snapshot {body['hash'][:12]}: train {sum(counts['train'].values())} {counts['train']}, recent gate "
        f"{sum(counts['recent'].values())}, held-out {len(body['heldout'])}; dataset version "
        f"{body['dataset_version'][:12]} ({body['labels']['current']} labels); {body['dropped_heldout']} held-out "
        "images dropped from training"
    )


def count_by_label(items: list[LabelledImage]) -> dict[str, int]:
    """Frames per label, sorted by label."""
    out: dict[str, int] = {}
    for i in items:
        out[i.label] = out.get(i.label, 0) + 1
    return dict(sorted(out.items()))


def heldout_eval_set(items: list[LabelledImage]) -> Any:
    """The snapshot's held-out items loaded as a ``trainer.evaluate.EvalSet``."""
    from trainer.evaluate import EvalSet

    return EvalSet(load_images(items), [i.label for i in items], [None] * len(items), "station held-out set")
