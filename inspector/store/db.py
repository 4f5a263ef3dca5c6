"""Open the station database (SQLite by default, PostgreSQL by URL) and migrate it to head.

SQLite runs in WAL mode with ``BEGIN IMMEDIATE`` transactions: writers queue on the database lock
(``busy_timeout``) instead of failing half-way, which is what makes the conditional-UPDATE lease of the
labelling queue safe. PostgreSQL runs at READ COMMITTED; the queue uses ``FOR UPDATE SKIP LOCKED`` and
the audit chain a transaction-scoped advisory lock.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from inspector.contracts.config import StationConfig, StoreSection
from inspector.contracts.errors import InspectorError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_MS = 30_000
_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
MIGRATION_LOCK_KEY = 0x1D5_0001


class StoreError(InspectorError):
    """The database cannot be opened, migrated or written."""


def default_url(data_dir: Path) -> str:
    path = Path(data_dir).resolve() / "station.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _sqlite_engine(url: str) -> Engine:
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_MS / 1000, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=FULL", f"busy_timeout={SQLITE_BUSY_MS}", "foreign_keys=ON"):
            cur.execute(f"PRAGMA {pragma}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _postgres_engine(url: str, schema: str | None) -> Engine:
    connect_args: dict[str, Any] = {}
    if schema:
        if not _SCHEMA_RE.match(schema):
            raise StoreError(f"invalid database schema name {schema!r}", "use lower-case letters, digits and _")
        connect_args["options"] = f"-csearch_path={schema}"
        bootstrap = create_engine(url, isolation_level="AUTOCOMMIT")
        with bootstrap.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        bootstrap.dispose()
    return create_engine(url, connect_args=connect_args, pool_pre_ping=True, pool_size=5, max_overflow=10)


def make_engine(url: str, schema: str | None = None) -> Engine:
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url)
    if backend == "postgresql":
        return _postgres_engine(url, schema)
    raise StoreError(f"unsupported database {backend!r} in {url!r}", "use sqlite:///path or postgresql+psycopg2://...")


def _alembic_config(conn: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


def head_revision() -> str | None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg).get_current_head()


def migrate(engine: Engine) -> None:
    """Upgrade to head; safe when several processes open a fresh database at once."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        if MigrationContext.configure(conn).get_current_revision() != head_revision():
            command.upgrade(_alembic_config(conn), "head")


class Store:
    """The database of one station: an engine, sessions, and the small write helpers around them."""

    def __init__(self, engine: Engine, url: str) -> None:
        self.engine = engine
        self.url = url
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        from inspector.store.audit import AuditLog  # local: audit imports Store types

        self.audit = AuditLog(self)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any exception."""
        with self._sessions() as s, s.begin():
            yield s

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def open_store(target: StationConfig | StoreSection | str | Path, schema: str | None = None) -> Store:
    """Open (and migrate to head) the station database.

    ``target``: a station config (``store.url``, else ``<data_dir>/station.db``), a store section with a
    URL, a SQLAlchemy URL, or the path of a SQLite file. ``schema``: PostgreSQL schema to use (created
    when missing); defaults to ``store.db_schema``.
    """
    url, schema = _resolve(target, schema)
    try:
        engine = make_engine(url, schema)
        migrate(engine)
    except StoreError:
        raise
    except Exception as err:
        raise StoreError(f"cannot open database {make_url(url).render_as_string(hide_password=True)}: {err}",
                         "check store.url, that the server runs, and the user's rights") from err
    return Store(engine, url)


def _resolve(target: StationConfig | StoreSection | str | Path, schema: str | None) -> tuple[str, str | None]:
    if isinstance(target, StationConfig):
        return target.store.url or default_url(target.station.data_dir), schema or target.store.db_schema
    if isinstance(target, StoreSection):
        if not target.url:
            raise StoreError("store.url is not set", "pass the station config, or set store.url")
        return target.url, schema or target.db_schema
    if isinstance(target, Path) or "://" not in str(target):
        path = Path(target).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}", schema
    return str(target), schema
