"""Throw-away stores for tests and benchmarks: SQLite in a folder, or a fresh PostgreSQL schema.

``DATABASE_URL`` (e.g. ``postgresql+psycopg2://postgres@127.0.0.1:5432/test``) enables the PostgreSQL
variant; each store gets its own schema ``t_<random>``, dropped afterwards, so runs never collide.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text

from inspector.store.db import Store, open_store

BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get("DATABASE_URL") else [])


def drop_schema(url: str, schema: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


@contextmanager
def temp_store_target(kind: str, folder: Path) -> Iterator[tuple[str, str | None]]:
    """(url, schema) of an empty database of ``kind``; the schema is dropped on exit."""
    if kind == "sqlite":
        yield f"sqlite:///{Path(folder).resolve() / 'station.db'}", None
        return
    url = os.environ["DATABASE_URL"]
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        yield url, schema
    finally:
        drop_schema(url, schema)


@contextmanager
def temp_store(kind: str, folder: Path) -> Iterator[Store]:
    with temp_store_target(kind, folder) as (url, schema):
        store = open_store(url, schema=schema)
        try:
            yield store
        finally:
            store.close()
