from __future__ import annotations

from pathlib import Path

import redis

from inspector.archive import Archive
from inspector.contracts.config import StationConfig
from inspector.contracts.messages import Decision, ReviewRequest
from inspector.contracts.names import STREAM_FIELD_MESSAGE, Names
from inspector.review.labelling import LabellingService
from inspector.review.router import ReviewRouter
from inspector.store import Store
from inspector.store.fakes import make_verdict


def router(cfg: StationConfig, client: redis.Redis, archive: Archive, store: Store) -> ReviewRouter:
    return ReviewRouter(cfg, client, Names(cfg.redis.prefix, cfg.station.id), archive, store)


def test_route_archives_queues_and_announces(
    station_config: StationConfig, redis_client: redis.Redis, store: Store, archive: Archive
) -> None:
    r = router(station_config, redis_client, archive, store)
    verdict = make_verdict(station_config.station.id, 1, Decision.REVIEW, class_probs={"good": 0.6, "dent": 0.4})
    req = r.route(verdict, b"\xff\xd8jpeg-bytes", "jpeg")
    assert (
        req is not None
        and req.reasons[0] == "review_verdict"
        and archive.get(req.image_sha256 or "") == b"\xff\xd8jpeg-bytes"
    )
    entries = redis_client.xrange(r.names.review)
    assert (
        len(entries) == 1 and ReviewRequest.from_json(entries[0][1][STREAM_FIELD_MESSAGE]).frame_id == verdict.frame_id
    )
    item = LabellingService(store, archive).lease_next("ann")
    assert item is not None and item.frame_id == verdict.frame_id and item.image_sha256 == req.image_sha256
    sure = make_verdict(
        station_config.station.id,
        2,
        Decision.PASS,
        class_probs={"good": 0.99, "dent": 0.01},
        anomaly_score=0.2,
        frame_id="a" * 32,
    )
    station_config.review.audit_pass_one_in = 0
    assert router(station_config, redis_client, archive, store).route(sure, b"x", "png") is None


def test_route_never_raises(
    station_config: StationConfig, redis_client: redis.Redis, store: Store, tmp_path: Path
) -> None:
    archive = Archive(tmp_path / "a")
    r = router(station_config, redis_client, archive, store)
    store.close()
    r.store = None  # type: ignore[assignment]  # a broken store
    verdict = make_verdict(station_config.station.id, 1, Decision.REVIEW)
    assert r.route(verdict, b"img", "png") is None
    assert r.stats["failed_deliver"] == 1


def test_background_submit(
    station_config: StationConfig, redis_client: redis.Redis, store: Store, archive: Archive
) -> None:
    r = router(station_config, redis_client, archive, store)
    r.start()
    verdicts = [make_verdict(station_config.station.id, i, Decision.REVIEW) for i in range(5)]
    assert all(r.submit(v, f"img{i}".encode(), "png") for i, v in enumerate(verdicts))
    r.stop()
    assert r.stats["routed"] == 5 and LabellingService(store, archive).queue_stats()["pending"] == 5
