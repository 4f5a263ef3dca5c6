"""Fault battery settings: long variants only on request, and the embedded Redis only unless asked.

- ``@pytest.mark.slow`` variants run with ``-m slow`` (or ``INSPECTOR_SLOW=1``); the plain ``pytest`` run of
  CI gets the short variants only, keeping the battery under ~5 minutes on 2 cores.
- ``INSPECTOR_FAULTS_EXTERNAL=1`` also runs the battery against ``REDIS_URL``.
"""

from __future__ import annotations

import os

import pytest

from inspector.bus.connection import EmbeddedRedis


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "slow" in (config.getoption("-m") or "") or os.environ.get("INSPECTOR_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="long variant: run with -m slow (or INSPECTOR_SLOW=1)")
    for item in items:
        if "slow" in item.keywords and "/faults/" in str(item.fspath):
            item.add_marker(skip)


_BACKENDS = ["embedded"] + (
    ["external"] if os.environ.get("REDIS_URL") and os.environ.get("INSPECTOR_FAULTS_EXTERNAL") == "1" else []
)


@pytest.fixture(params=_BACKENDS)
def redis_url(request: pytest.FixtureRequest, embedded_redis: EmbeddedRedis) -> str:
    return embedded_redis.url if request.param == "embedded" else os.environ["REDIS_URL"]
