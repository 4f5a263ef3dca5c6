from __future__ import annotations

import threading
from pathlib import Path

import pytest

from inspector.archive import Archive
from inspector.contracts.messages import Decision, ReviewRequest
from inspector.review.labelling import LabelError, LabellingService
from inspector.store import Store
from inspector.store import records as rec
from inspector.store.fakes import make_verdict


def add_items(store: Store, archive: Archive, n: int, priority: int = 50, station: str = "s1") -> list[str]:
    frames = []
    for i in range(n):
        v = make_verdict(station, i, Decision.REVIEW)
        rec.record_verdicts(store, [v])
        sha = archive.put(f"img-{v.frame_id}".encode(), "png")
        req = ReviewRequest(
            station=station,
            frame_id=v.frame_id,
            part_id=v.part_id,
            camera=v.camera,
            reasons=["review_verdict"],
            priority=priority,
            image_sha256=sha,
            decision=v.decision,
            model_version="m1",
            class_probs=v.class_probs,
            anomaly_score=v.anomaly_score,
        )
        rec.add_review_item(store, req, image_ext="png")
        frames.append(v.frame_id)
    return frames


def test_lease_label_flow_priority_and_history(store: Store, archive: Archive) -> None:
    add_items(store, archive, 2, priority=20)
    hi = add_items(store, archive, 1, priority=80)[0]
    svc = LabellingService(store, archive, lease_s=60)
    item = svc.lease_next("ann")
    assert item is not None and item.frame_id == hi and item.priority == 80 and item.image_sha256
    assert svc.lease_next("ann") == item  # a live lease is handed back, not a second item
    assert svc.image(item) == f"img-{hi}".encode()
    with pytest.raises(LabelError):
        svc.label(item.id, "bob", "good")  # not the lease holder
    with pytest.raises(LabelError):
        svc.label(item.id, "ann", "../etc")
    rec1 = svc.label(item.id, "ann", "scratch", note="clear")
    assert rec1.current and rec1.label == "scratch"
    rec2 = svc.relabel(hi, "bob", "good")
    assert rec2.supersedes_id == rec1.id and svc.current_label(hi) == rec2
    hist = svc.history(limit=10)
    assert [h.label for h in hist] == ["good", "scratch"] and not hist[1].current
    assert [h.label for h in svc.history(user="ann")] == ["scratch"]
    stats = svc.queue_stats()
    assert stats["labelled"] == 1 and stats["pending"] == 2 and stats["labels"] == {"good": 1}
    assert store.audit.verify().ok and {e.action for e in store.audit.entries()} >= {"label", "relabel"}


def test_undo_skip_and_expiry(store: Store, archive: Archive) -> None:
    add_items(store, archive, 2)
    svc = LabellingService(store, archive, lease_s=60)
    a = svc.lease_next("ann")
    assert a is not None
    svc.label(a.id, "ann", "good")
    undone = svc.undo_last("ann")
    assert undone is not None and undone.undone and svc.current_label(a.frame_id) is None
    again = svc.lease_next("ann")
    assert again is not None and again.id == a.id  # undo hands the item back to its labeller
    svc.skip(a.id, "ann")
    b = svc.lease_next("ann")
    assert b is not None and b.id != a.id  # skipped items are not offered to the same user
    assert svc.lease_next("bob") is not None and svc.lease_next("bob").id == a.id
    short = LabellingService(store, archive, lease_s=0.001)
    add_items(store, archive, 1, priority=99)
    c = short.lease_next("cat")
    assert c is not None
    import time

    time.sleep(0.01)
    d = short.lease_next("dan")
    assert d is not None and d.id == c.id  # an expired lease goes back to the queue
    with pytest.raises(LabelError):
        short.label(c.id, "cat", "good")
    assert svc.undo_last("nobody") is None


def test_request_review_and_export(store: Store, archive: Archive, tmp_path: Path) -> None:
    frames = add_items(store, archive, 3)
    v = make_verdict("s1", 500, Decision.PASS)
    rec.record_verdicts(store, [v])
    svc = LabellingService(store, archive, lease_s=60)
    item_id = svc.request_review(v.frame_id, "operator: scratch missed", "op", image=b"frame-bytes", encoding="jpeg")
    assert svc.item(item_id).priority == 90 and svc.item(item_id).image_sha256
    labels = {frames[0]: "good", frames[1]: "scratch", frames[2]: "unsure", v.frame_id: "dent"}
    while (it := svc.lease_next("ann")) is not None:
        svc.label(it.id, "ann", labels[it.frame_id])
    assert svc.request_review(frames[0], "second look", "op") is not None
    assert svc.item(svc.request_review(frames[0], "x", "op")).status == "pending"
    with pytest.raises(LabelError):
        svc.request_review("nope", "x", "op")
    dv = svc.export_dataset(tmp_path / "ds", "classification")
    assert dv.counts == {"good": 1, "scratch": 1, "dent": 1} and dv.skipped["unsure"] == 1
    assert (tmp_path / "ds" / "dataset.json").is_file() and len(list((tmp_path / "ds" / "good").iterdir())) == 1
    again = svc.export_dataset(tmp_path / "ds2", "classification")
    assert again.hash == dv.hash
    an = svc.export_dataset(tmp_path / "an", "anomaly")
    assert an.counts == {"train/good": 1, "test/scratch": 1, "test/dent": 1}
    assert {d.hash for d in svc.dataset_versions()} == {dv.hash, an.hash}
    with pytest.raises(LabelError):
        svc.export_dataset(tmp_path / "ds", "classification")  # not empty


def test_two_labellers_concurrently_never_share_an_item(store_target: tuple[str, str | None], tmp_path: Path) -> None:
    from inspector.store import open_store

    archive = Archive(tmp_path / "archive")
    setup = open_store(store_target[0], schema=store_target[1])
    frames = add_items(setup, archive, 40)
    seen: dict[str, list[int]] = {"ann": [], "bob": []}
    errors: list[BaseException] = []

    def work(user: str) -> None:
        st = open_store(store_target[0], schema=store_target[1])
        svc = LabellingService(st, archive, lease_s=60)
        try:
            while (it := svc.lease_next(user)) is not None:
                seen[user].append(it.id)
                svc.label(it.id, user, "good")
        except BaseException as err:  # noqa: BLE001
            errors.append(err)
        finally:
            st.close()

    threads = [threading.Thread(target=work, args=(u,)) for u in seen]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    everything = seen["ann"] + seen["bob"]
    assert len(everything) == len(set(everything)) == len(frames)  # none twice, none lost
    svc = LabellingService(setup, archive)
    assert svc.queue_stats()["labelled"] == 40 and setup.audit.verify().ok
    setup.close()
