"""Shared fixtures: a real Redis for every test (embedded redis-server, plus the one at REDIS_URL when set)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from inspector.bus.connection import EmbeddedRedis, client_for_url  # noqa: E402
from inspector.contracts.config import StationConfig, parse_config  # noqa: E402
from inspector.contracts.paths import dataset_dir  # noqa: E402

REDIS_BACKENDS = ["embedded"] + (["external"] if os.environ.get("REDIS_URL") else [])


@pytest.fixture(scope="session")
def embedded_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=REDIS_BACKENDS)
def redis_url(request: pytest.FixtureRequest, embedded_redis: EmbeddedRedis) -> str:
    return embedded_redis.url if request.param == "embedded" else os.environ["REDIS_URL"]


@pytest.fixture
def station_config(redis_url: str, tmp_path: Path) -> StationConfig:
    """A station config on a real Redis with a unique station id, so tests never see each other's keys."""
    return parse_config(
        {
            "station": {"id": f"t{uuid.uuid4().hex[:10]}", "data_dir": str(tmp_path / "station")},
            "redis": {"url": redis_url, "reconnect": {"give_up_s": 20}},
        },
        environ={},
    )


@pytest.fixture
def redis_client(station_config: StationConfig):  # type: ignore[no-untyped-def]
    client = client_for_url(station_config.redis.url or "", station_config.redis)
    yield client
    client.close()


def _require_dataset(name: str) -> Path:
    path = dataset_dir(name)
    if path is None:
        pytest.skip(
            f"real data set {name!r} not found: set INSPECTOR_SHARED_DATA to the folder holding it "
            f"(default ../shared/data beside the repository)"
        )
    return path


@pytest.fixture
def magnetic_tile() -> Path:
    return _require_dataset("magnetic_tile")


@pytest.fixture
def neu_surface_defects() -> Path:
    return _require_dataset("neu_surface_defects")


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.spine_helpers import make_tiny_package

    return make_tiny_package(tmp_path_factory.mktemp("tiny_pkg"))
