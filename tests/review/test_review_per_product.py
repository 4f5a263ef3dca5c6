"""Each product has its own review queue and training data: review items carry the frame's product, a
labeller working one product's queue never gets another's, and the export of one product holds only its frames."""

from __future__ import annotations

import pytest

from inspector.archive import Archive
from inspector.contracts.config import StationConfig, parse_config
from inspector.contracts.errors import InspectorError
from inspector.contracts.messages import Decision, ReviewRequest, Verdict
from inspector.review.labelling import LabellingService
from inspector.store.db import open_store
from inspector.store.records import add_review_item, record_verdicts


def test_review_queues_and_exports_are_per_product(station_config: StationConfig, tmp_path) -> None:  # type: ignore[no-untyped-def]
    doc = station_config.model_dump(mode="json", exclude_none=True)
    doc["products"] = {"bracket": {"package": str(tmp_path)}, "housing": {"package": str(tmp_path)}}
    cfg = parse_config(doc, environ={})
    store = open_store(cfg)
    archive = Archive.for_data_dir(cfg.data_dir)
    for i, product in enumerate(["bracket", "housing", "bracket", "housing"]):
        v = Verdict(
            station=cfg.station.id,
            frame_id=f"f{i}",
            camera="cam0",
            seq=i,
            part_id=f"p{i}",
            captured_at=i,
            decision=Decision.REVIEW,
            reject=True,
            model_version=f"{product}-v1",
            product=product,
        )
        record_verdicts(store, [v])
        sha = archive.put(bytes([i]) * 64, "png")
        add_review_item(
            store,
            ReviewRequest(
                station=cfg.station.id,
                frame_id=v.frame_id,
                part_id=v.part_id,
                camera="cam0",
                reasons=["unsure"],
                priority=50,
                decision=v.decision,
                image_sha256=sha,
                product=product,
            ),
            image_ext="png",
        )
    housing = LabellingService(store, archive, product="housing")
    leased = []
    while (item := housing.lease_next("qe-anna")) is not None:
        leased.append(item.frame_id)
        housing.label(item.id, "qe-anna", "scratch" if item.frame_id == "f1" else "good")
    assert leased == ["f1", "f3"]  # only the housing queue
    everyone = LabellingService(store, archive)
    assert everyone.lease_next("qe-ben").frame_id in {"f0", "f2"}  # type: ignore[union-attr]
    dv = housing.export_dataset(tmp_path / "housing-data", layout="classification")
    assert dv.files == 2 and dv.counts == {"scratch": 1, "good": 1}


def test_an_unknown_product_queue_is_refused_in_one_line(station_config: StationConfig) -> None:
    from inspector.review.cli import _service

    with pytest.raises(InspectorError, match="product 'gearbox' is not configured"):
        _service(station_config, open_store(station_config), "gearbox")
