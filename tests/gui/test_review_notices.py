"""The quality view's queue follows the review stream: a notice the real review router writes refreshes the
queue within 1 s (the SQL poll is only a 10 s fallback), read off the GUI thread by ``gui.workers.ReviewNotices``."""

from __future__ import annotations

import time

import redis
from pytestqt.qtbot import QtBot

from gui.app import MainWindow
from gui.services import Services
from gui.state import Role
from gui.views.quality import QUEUE_POLL_MS
from inspector.contracts.config import StationConfig
from inspector.contracts.messages import Decision
from inspector.contracts.names import Names
from inspector.review.router import ReviewRouter
from inspector.store.fakes import make_verdict
from tests.gui.conftest import session


def test_a_router_notice_refreshes_the_queue_within_a_second(
    qtbot: QtBot, station_config: StationConfig, redis_client: redis.Redis, services: Services
) -> None:
    cfg = station_config
    win = MainWindow(cfg, session(Role.QUALITY, "Quinn Quality"), services, start_feed=True)
    qtbot.addWidget(win)
    view = win.quality
    try:
        qtbot.waitUntil(lambda: win.review_notices.ready, timeout=5000)
        qtbot.waitUntil(lambda: "0 open" in view.queue_title.text(), timeout=5000)  # the first poll is done
        assert QUEUE_POLL_MS >= 10_000  # the poll cannot be what refreshes it below
        router = ReviewRouter(
            cfg, redis_client, Names(cfg.redis.prefix, cfg.station.id), services.archive, services.store
        )
        routed = []
        for seq in (1, 2):
            verdict = make_verdict(cfg.station.id, seq, Decision.REVIEW, class_probs={"good": 0.6, "scratch": 0.4})
            t0 = time.monotonic()
            assert router.route(verdict, b"\xff\xd8jpeg-bytes", "jpeg") is not None
            routed.append(verdict.frame_id)
            qtbot.waitUntil(lambda n=len(routed): view.queue_model.rowCount() == n, timeout=1000)
            print(f"\nreview notice {seq}: queue refreshed {1000 * (time.monotonic() - t0):.0f} ms after routing")
    finally:
        win.shutdown()
    assert not win.review_notices.isRunning()
