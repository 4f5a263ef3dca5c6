"""A labeller process SIGKILLed in the middle of a label submit leaves no partial label and no orphan file."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

from sqlalchemy import func, select

from inspector.archive import Archive
from inspector.review.labelling import LabellingService
from inspector.store import open_store
from inspector.store.audit import AuditLog
from inspector.store.models import LabelRow, ReviewItemRow

from .test_labelling import add_items


def _label_then_hang(
    url: str, schema: str | None, archive_root: str, item_id: int, ready: mp.synchronize.Event
) -> None:
    try:
        store = open_store(url, schema=schema)
        original = AuditLog._append

        def hang(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            entry = original(self, *args, **kwargs)  # label row and audit row written, not committed
            ready.set()
            time.sleep(60)
            return entry

        AuditLog._append = hang  # type: ignore[method-assign]
        LabellingService(store, Archive(archive_root), lease_s=60).label(item_id, "ann", "scratch", note="x")
    finally:
        os._exit(3)


def test_sigkill_during_label_submit(store_target: tuple[str, str | None], tmp_path: Path) -> None:
    url, schema = store_target
    archive = Archive(tmp_path / "archive")
    store = open_store(url, schema=schema)
    add_items(store, archive, 3)
    svc = LabellingService(store, archive, lease_s=60)
    item = svc.lease_next("ann")
    assert item is not None
    audit_rows = store.audit.verify().rows
    files_before = sorted(p.relative_to(archive.root) for p in archive.root.rglob("*") if p.is_file())

    ctx = mp.get_context("fork")
    ready = ctx.Event()
    child = ctx.Process(target=_label_then_hang, args=(url, schema, str(archive.root), item.id, ready))
    child.start()
    assert ready.wait(30), "child never reached the middle of the submit"
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    assert child.exitcode == -signal.SIGKILL

    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(LabelRow)) == 0
        row = s.get_one(ReviewItemRow, item.id)
        assert row.status == "leased" and row.leased_by == "ann"
    report = store.audit.verify()
    assert report.ok and report.rows == audit_rows
    files_after = sorted(p.relative_to(archive.root) for p in archive.root.rglob("*") if p.is_file())
    assert files_after == files_before
    with store.session() as s:
        referenced = set(s.scalars(select(ReviewItemRow.image_sha256)))
    assert set(archive.keys()) == referenced  # no orphan image
    done = svc.label(item.id, "ann", "good")  # the labeller simply submits again
    assert done.current and store.audit.verify().ok
    store.close()
