"""A ``store`` on SQLite, and on PostgreSQL too when DATABASE_URL is set (fresh schema per test)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from inspector.archive import Archive
from inspector.store import Store
from inspector.store.testing import BACKENDS, temp_store_target


@pytest.fixture(params=BACKENDS)
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    with temp_store_target(request.param, tmp_path) as target:
        yield target


@pytest.fixture
def store(store_target: tuple[str, str | None]) -> Iterator[Store]:
    from inspector.store import open_store

    s = open_store(store_target[0], schema=store_target[1])
    yield s
    s.close()


@pytest.fixture
def archive(tmp_path: Path) -> Archive:
    return Archive(tmp_path / "archive")
