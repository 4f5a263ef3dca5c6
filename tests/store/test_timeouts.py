"""Every database wait is bounded: connect, keepalive, statement and lock timeouts on PostgreSQL connections,
the store watchdog that cuts a silently dead connection, and a lazy store that opens while the database is down.

Runs against DATABASE_URL (PostgreSQL) through a pausable TCP proxy; skipped with the reason without it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from inspector.contracts.config import StoreSection
from inspector.store import open_store
from inspector.store.db import StoreError, describe
from inspector.store.testing import temp_store_target
from tests.faults.proxy import PausableProxy

pytestmark = pytest.mark.postgres
needs_pg = pytest.mark.skipif(not os.environ.get("DATABASE_URL"), reason="needs PostgreSQL at DATABASE_URL")


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[tuple[str, str]]:
    with temp_store_target("postgresql", tmp_path) as (url, schema):
        yield url, schema or ""


@pytest.fixture
def proxy() -> Iterator[PausableProxy]:
    p = PausableProxy.for_url(os.environ["DATABASE_URL"])
    yield p
    p.close()


def _section(url: str, schema: str, **over: object) -> StoreSection:
    base: dict[str, object] = {
        "url": url,
        "db_schema": schema,
        "connect_timeout_s": 2,
        "stall_s": 2.0,
        "statement_timeout_ms": 1500,
        "lock_timeout_ms": 700,
    }
    return StoreSection(**(base | over))


@needs_pg
def test_connections_carry_every_timeout(pg: tuple[str, str]) -> None:
    url, schema = pg
    store = open_store(_section(url, schema, keepalive_idle_s=7, keepalive_interval_s=2, keepalive_count=4))
    try:
        with store.session() as s:
            assert s.execute(text("SHOW statement_timeout")).scalar() == "1500ms"
            assert s.execute(text("SHOW lock_timeout")).scalar() == "700ms"
            dsn = s.connection().connection.dbapi_connection.get_dsn_parameters()  # type: ignore[union-attr]
        assert (dsn["connect_timeout"], dsn["keepalives"], dsn["keepalives_idle"]) == ("2", "1", "7")
        assert (dsn["keepalives_interval"], dsn["keepalives_count"], dsn["tcp_user_timeout"]) == ("2", "4", "15000")
        with pytest.raises(Exception, match="statement timeout"):  # the server gives up on a long statement
            with store.session() as s:
                s.execute(text("SELECT pg_sleep(5)"))
    finally:
        store.close()


@needs_pg
def test_silent_death_is_cut_within_the_stall_bound(pg: tuple[str, str], proxy: PausableProxy) -> None:
    url, schema = pg
    store = open_store(_section(proxy.url(url), schema))
    try:
        with store.session() as s:
            assert s.execute(text("SELECT 1")).scalar() == 1
        proxy.pause()  # the server never sees the next query, and the client's socket stays open
        outcome: list[object] = []

        def call() -> None:
            t0 = time.monotonic()
            try:
                with store.session() as s:
                    s.execute(text("SELECT 2"))
                outcome.append("returned")
            except Exception as err:  # noqa: BLE001 - the figure is the time to the error
                outcome.append(err)
            outcome.append(time.monotonic() - t0)

        t = threading.Thread(target=call, daemon=True)
        t.start()
        t.join(15)
        print(f"SILENT_DEATH cut after {outcome[-1] if outcome else 'never'} s (stall_s 2)")
        assert not t.is_alive(), "a query on a silently dead connection hung past the stall bound"
        assert isinstance(outcome[0], Exception) and float(outcome[1]) < 2.0 + 3.0  # type: ignore[arg-type]
        assert store.watchdog.cuts >= 1
        proxy.resume()
        with store.session() as s:  # a fresh connection once the path is back
            assert s.execute(text("SELECT 3")).scalar() == 3
    finally:
        store.close()


@needs_pg
def test_lazy_store_opens_while_the_database_is_down(pg: tuple[str, str], proxy: PausableProxy) -> None:
    url, schema = pg
    proxy.down()
    store = open_store(_section(proxy.url(url), schema), lazy=True)  # a worker starts: no connection yet
    try:
        t0 = time.monotonic()
        with pytest.raises(StoreError, match="cannot open the station database"):
            store.ensure_ready()
        assert time.monotonic() - t0 < 5
        proxy.resume()
        store.ensure_ready()  # migrates now
        with store.session() as s:
            assert s.execute(text("SELECT count(*) FROM verdicts")).scalar() == 0
    finally:
        store.close()


def test_disk_failures_are_named_with_the_path(tmp_path: Path) -> None:
    import sqlite3

    url = f"sqlite:///{tmp_path / 'station.db'}"
    full = describe(sqlite3.OperationalError("database or disk is full"), url)
    ro = describe(sqlite3.OperationalError("attempt to write a readonly database"), url)
    assert "full" in full and str(tmp_path / "station.db") in full
    assert "read-only" in ro and str(tmp_path / "station.db") in ro
