"""Exporting the current labels as a dataset version (``LabellingService.export_dataset``): the archived images
in the trainer's folder layout, built beside the target and renamed into place, its content hash recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from sqlalchemy import select

from inspector.archive import Archive
from inspector.contracts.labels import GOOD_LABEL, UNSURE_LABEL
from inspector.contracts.messages import now
from inspector.review.label_records import DatasetVersion, LabelError
from inspector.store.db import Store
from inspector.store.models import DatasetVersionRow, LabelRow, ReviewItemRow, VerdictRow
from inspector.store.records import insert_ignore

LAYOUTS = ("classification", "anomaly")


def export_dataset(
    store: Store, archive: Archive, out_dir: str | Path, layout: str = "classification", product: str | None = None
) -> DatasetVersion:
    """Export current labels (not 'unsure') with archived images in the trainer's folder layout:
    ``classification``: ``<label>/<sha>.<ext>``; ``anomaly``: ``train/good/`` and ``test/<label>/``.
    ``out_dir`` must not exist or be empty; it is built beside it and renamed into place. The content
    hash (sha256 over the sorted relative paths, which name the image digests) is recorded in
    ``dataset_versions`` and written to ``dataset.json``. ``product``: that product's labelled frames only."""
    if layout not in LAYOUTS:
        raise LabelError(f"unknown dataset layout {layout!r}", f"use one of {', '.join(LAYOUTS)}")
    out = Path(out_dir).resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LabelError(f"export folder {out} is not empty", "export into a new folder")
    files, skipped = _export_plan(store, archive, layout, product)
    digest = hashlib.sha256("\n".join(sorted(files)).encode()).hexdigest()
    counts: dict[str, int] = {}
    for rel in files:
        counts[rel.rsplit("/", 1)[0]] = counts.get(rel.rsplit("/", 1)[0], 0) + 1
    dv = DatasetVersion(digest, counts, layout, str(out), len(files), skipped)
    _write_export(archive, out, files, dv)
    _record_dataset(store, dv)
    return dv


def dataset_versions(store: Store) -> list[DatasetVersion]:
    """Every recorded dataset version, newest first."""
    with store.session() as s:
        rows = s.scalars(select(DatasetVersionRow).order_by(DatasetVersionRow.created_at.desc())).all()
        return [DatasetVersion(r.hash, dict(r.counts), r.layout, r.path, sum(r.counts.values())) for r in rows]


def _export_plan(
    store: Store, archive: Archive, layout: str, product: str | None
) -> tuple[dict[str, str], dict[str, int]]:
    q = (
        select(LabelRow.label, ReviewItemRow.image_sha256)
        .outerjoin(ReviewItemRow, ReviewItemRow.frame_id == LabelRow.frame_id)
        .where(LabelRow.is_current.is_(True))
    )
    if product is not None:  # one product's training data: its frames' verdicts name it
        q = q.join(VerdictRow, VerdictRow.frame_id == LabelRow.frame_id).where(VerdictRow.product == product)
    files: dict[str, str] = {}
    skipped = {"unsure": 0, "no_image": 0}
    with store.session() as s:
        for label, sha in s.execute(q):
            if label == UNSURE_LABEL:
                skipped["unsure"] += 1
            elif sha is None or not archive.exists(sha):
                skipped["no_image"] += 1
            else:
                src = archive.path(sha)
                folder = (
                    label if layout == "classification" else ("train/good" if label == GOOD_LABEL else f"test/{label}")
                )
                files[f"{folder}/{src.name}"] = sha
    return files, skipped


def _write_export(archive: Archive, out: Path, files: dict[str, str], dv: DatasetVersion) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for rel, sha in files.items():
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(archive.path(sha), target)
        manifest = {**asdict(dv), "files": sorted(files)}
        (tmp / "dataset.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _record_dataset(store: Store, dv: DatasetVersion) -> None:
    with store.session() as s:
        s.execute(
            insert_ignore(s, DatasetVersionRow.__table__, "hash"),
            [{"hash": dv.hash, "layout": dv.layout, "counts": dv.counts, "path": dv.path, "created_at": now()}],
        )
