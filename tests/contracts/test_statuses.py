"""The status enums are the strings the database stores: a status written as an enum reads back as the same
plain string (no migration), and every value the store writes is a member."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from inspector.archive import Archive
from inspector.contracts import lifecycle
from inspector.contracts.labels import GOOD_LABEL, UNSURE_LABEL
from inspector.contracts.messages import Decision, ReviewRequest
from inspector.contracts.statuses import FrameCollectionStatus, ModelStatus, RetrainRequestStatus, ReviewStatus
from inspector.review.labelling import LabellingService
from inspector.store import Store, open_store
from inspector.store import records as rec
from inspector.store.fakes import make_verdict
from inspector.store.testing import BACKENDS, temp_store_target


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with temp_store_target(request.param, tmp_path) as (url, schema):
        s = open_store(url, schema=schema)
        yield s
        s.close()


def raw_statuses(store: Store, table: str) -> list[object]:
    with store.session() as s:
        return list(s.execute(text(f"SELECT status FROM {table} ORDER BY 1")).scalars())


def test_values_are_the_stored_strings() -> None:
    assert [s.value for s in ReviewStatus] == ["pending", "leased", "labelled"]
    assert [s.value for s in ModelStatus] == [
        "candidate",
        "gated_pass",
        "gated_fail",
        "approved",
        "active",
        "retired",
        "rolled_back",
    ]
    assert [s.value for s in RetrainRequestStatus] == ["enqueued", "running", "deduped", "rejected"]
    assert [s.value for s in FrameCollectionStatus] == ["collecting", "awaiting_confirmation", "refitting", "done"]
    assert ReviewStatus.LEASED == "leased" and f"{ModelStatus.GATED_PASS}" == "gated_pass"
    assert lifecycle.ModelStatus is ModelStatus  # the old import path names the same enum
    assert (GOOD_LABEL, UNSURE_LABEL) == ("good", "unsure")


def test_review_status_round_trips_through_the_store(store: Store, tmp_path: Path) -> None:
    archive = Archive(tmp_path / "archive")
    for i in range(2):
        v = make_verdict("s1", i, Decision.REVIEW)
        rec.record_verdicts(store, [v])
        rec.add_review_item(
            store,
            ReviewRequest(
                station="s1",
                frame_id=v.frame_id,
                part_id=v.part_id,
                camera=v.camera,
                reasons=["review_verdict"],
                priority=50,
                image_sha256=archive.put(b"img", "png"),
                decision=v.decision,
            ),
            image_ext="png",
        )
    assert raw_statuses(store, "review_items") == ["pending", "pending"]
    svc = LabellingService(store, archive, lease_s=60)
    first = svc.lease_next("ann")
    assert first is not None and first.status == ReviewStatus.LEASED
    stored = raw_statuses(store, "review_items")
    assert stored == ["leased", "pending"] and all(type(v) is str for v in stored)
    svc.label(first.id, "ann", GOOD_LABEL)
    assert raw_statuses(store, "review_items") == ["labelled", "pending"]
    assert {ReviewStatus(v) for v in raw_statuses(store, "review_items")} == {
        ReviewStatus.LABELLED,
        ReviewStatus.PENDING,
    }
    stats = svc.queue_stats()
    assert (stats["pending"], stats["leased"], stats["labelled"]) == (1, 0, 1)


def test_model_status_round_trips_through_the_store(store: Store) -> None:
    rec.register_model(store, "v1", "/models/v1", "0" * 64, status=ModelStatus.GATED_PASS)
    assert raw_statuses(store, "model_versions") == ["gated_pass"]
    assert rec.set_model_status(store, "v1", ModelStatus.APPROVED, "qe", "model.approve") is ModelStatus.GATED_PASS
    stored = raw_statuses(store, "model_versions")
    assert stored == ["approved"] and type(stored[0]) is str and ModelStatus(stored[0]) is ModelStatus.APPROVED
