from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import text

from inspector.archive import Archive
from inspector.contracts.errors import UnsafeInputError
from inspector.store import Store


def fill(store: Store, n: int = 5) -> list[int]:
    return [
        store.audit.record(
            "alice", "threshold.change", "policy.pass_confidence", 0.9, 0.9 + i / 100, {"why": f"step {i}"}
        ).id
        for i in range(n)
    ]


def test_chain_verifies(store: Store) -> None:
    ids = fill(store)
    report = store.audit.verify()
    assert report.ok and report.rows == len(ids) and report.head == store.audit.head()
    assert [e.id for e in store.audit.entries(limit=2)] == ids[::-1][:2]


def test_edited_row_is_detected(store: Store) -> None:
    ids = fill(store)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET actor = 'mallory' WHERE id = :i"), {"i": ids[2]})
    report = store.audit.verify()
    assert not report.ok and report.bad_ids == [ids[2]] and "edited" in report.problems[0]


def test_edited_row_with_recomputed_hash_breaks_the_next_link(store: Store) -> None:
    ids = fill(store)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET hash = :h WHERE id = :i"), {"h": "f" * 64, "i": ids[1]})
    assert ids[2] in store.audit.verify().bad_ids


def test_deleted_row_is_detected(store: Store) -> None:
    ids = fill(store)
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE id = :i"), {"i": ids[2]})
    report = store.audit.verify()
    assert not report.ok and report.first_bad_id == ids[3]
    assert any("deleted" in p for p in report.problems)


def test_concurrent_appends_never_fork(store: Store) -> None:
    import threading

    threads = [threading.Thread(target=fill, args=(store, 10)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = store.audit.verify()
    assert report.ok and report.rows == 40


@pytest.mark.parametrize(
    "bad",
    ["../" + "a" * 61, "/etc/passwd", "A" * 64, "g" * 64, "a" * 63, "", "..", "a" * 64 + "/..", "aa/../../" + "b" * 55],
)
def test_archive_refuses_unsafe_keys(tmp_path: Path, bad: str) -> None:
    archive = Archive(tmp_path / "root")
    with pytest.raises(UnsafeInputError):
        archive.get(bad)
    with pytest.raises(UnsafeInputError):
        archive.path(bad)


def test_archive_round_trip_atomic_sharded(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "root")
    sha = archive.put(b"hello", "jpeg")
    assert archive.put(b"hello", "jpeg") == sha
    p = archive.path(sha)
    assert p == tmp_path / "root" / sha[:2] / sha[2:4] / f"{sha}.jpg" and archive.get(sha) == b"hello"
    assert list(archive.keys()) == [sha]
    with pytest.raises(UnsafeInputError):
        archive.put(b"x", "../../sh")
    with pytest.raises(UnsafeInputError):
        archive.put(b"x", "/abs")
    stale = p.parent / ".tmp-dead"
    stale.write_bytes(b"partial")
    os.utime(stale, (0, 0))
    assert archive.sweep_temp() == 1 and not stale.exists()


def test_archive_refuses_symlinked_shard_escaping_root(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "root")
    outside = tmp_path / "outside"
    outside.mkdir()
    data = b"evil"
    import hashlib

    sha = hashlib.sha256(data).hexdigest()
    (tmp_path / "root" / sha[:2]).symlink_to(outside)
    with pytest.raises(UnsafeInputError):
        archive.put(data, "png")
    assert not any(outside.rglob("*"))
