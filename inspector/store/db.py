"""Open the station database (SQLite by default, PostgreSQL by URL) and migrate it to head.

SQLite runs in WAL mode with ``BEGIN IMMEDIATE`` transactions: writers queue on the database lock
(``busy_timeout``) instead of failing half-way, which is what makes the conditional-UPDATE lease of the
labelling queue safe. PostgreSQL runs at READ COMMITTED; the queue uses ``FOR UPDATE SKIP LOCKED`` and
the audit chain a transaction-scoped advisory lock.

Every wait is bounded (``store.*`` keys): PostgreSQL connections carry libpq's ``connect_timeout``, TCP
keepalives and ``tcp_user_timeout`` (a dead peer is found), and ``statement_timeout`` / ``lock_timeout``
(the server gives up). A connection that dies silently behind something that still accepts bytes (a
proxy, a failover without reset) answers none of these; the store's watchdog cuts the sockets of a
transaction older than ``store.stall_s``, so the stuck call raises instead of hanging. ``open_store(...,
lazy=True)`` connects (and migrates) on first use, so a process starts while the database is down.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
import weakref
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
from inspector.contracts.errors import STORAGE_ERRNOS, InspectorError, storage_error
from inspector.store.audit import AuditLog

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_MS = 30_000
_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
MIGRATION_LOCK_KEY = 0x1D5_0001


class StoreError(InspectorError):
    """The database cannot be opened, migrated or written."""


def default_url(data_dir: Path) -> str:
    path = Path(data_dir).resolve() / "station.db"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:  # full or read-only disk: SQLite names the failure on first use (a lazy store retries)
        pass
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


def _postgres_engine(url: str, schema: str | None, section: StoreSection) -> Engine:
    options = f"-c statement_timeout={section.statement_timeout_ms} -c lock_timeout={section.lock_timeout_ms}"
    if schema:
        if not _SCHEMA_RE.match(schema):
            raise StoreError(f"invalid database schema name {schema!r}", "use lower-case letters, digits and _")
        options += f" -c search_path={schema}"
    dead_after_ms = (section.keepalive_idle_s + section.keepalive_interval_s * section.keepalive_count) * 1000
    connect_args: dict[str, Any] = {
        "connect_timeout": section.connect_timeout_s,
        "keepalives": 1,
        "keepalives_idle": section.keepalive_idle_s,
        "keepalives_interval": section.keepalive_interval_s,
        "keepalives_count": section.keepalive_count,
        "tcp_user_timeout": dead_after_ms,
        "options": options,
        "application_name": "inspector",
    }
    return create_engine(
        url,
        connect_args=connect_args,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=10,
        pool_timeout=section.connect_timeout_s,
    )


def make_engine(url: str, schema: str | None = None, section: StoreSection | None = None) -> Engine:
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url)
    if backend == "postgresql":
        return _postgres_engine(url, schema, section or StoreSection())
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


def migrate(engine: Engine, schema: str | None = None) -> None:
    """Upgrade to head; safe when several processes open a fresh database at once."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            if schema:
                conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        if MigrationContext.configure(conn).get_current_revision() != head_revision():
            command.upgrade(_alembic_config(conn), "head")


def describe(err: BaseException, url: str) -> str:
    """One line for a database failure: a full or read-only disk is named with its path, else the driver's
    first line with the (password-free) URL."""
    where = make_url(url)
    if isinstance(err, InspectorError):
        return err.message
    if isinstance(err, OSError) and err.errno in STORAGE_ERRNOS:
        return storage_error(err).message
    lines = str(getattr(err, "orig", None) or err).strip().splitlines()
    first = lines[0] if lines else type(err).__name__
    if where.get_backend_name() == "sqlite":
        low = first.lower()
        if "disk is full" in low:
            return f"the disk holding {where.database} is full (no space left): {first}"
        if "readonly" in low or "read-only" in low:
            return f"{where.database} is on a read-only file system or not writable: {first}"
        if "disk i/o" in low:
            return f"the disk holding {where.database} fails (I/O error): {first}"
    return f"database {where.render_as_string(hide_password=True)}: {first}"


class _Watchdog:
    """Cuts the sockets of a store's PostgreSQL connections when a transaction outlives ``limit_s``."""

    def __init__(self, engine: Engine, limit_s: float, url: str) -> None:
        self.limit_s, self.url = limit_s, url
        self.conns: weakref.WeakSet[Any] = weakref.WeakSet()
        self.inflight: dict[int, float] = {}
        self.cuts = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.active = engine.dialect.name == "postgresql"  # SQLite waits are bounded by its busy timeout
        if self.active:
            event.listen(engine, "connect", lambda dbapi_conn, _rec: self.conns.add(dbapi_conn))

    @contextmanager
    def guard(self) -> Iterator[None]:
        key = threading.get_ident()
        with self._lock:
            outer = key in self.inflight
            if not outer:
                self.inflight[key] = time.monotonic()
            if self._thread is None and self.active:
                self._thread = threading.Thread(target=self._loop, name="store-watchdog", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            if not outer:
                with self._lock:
                    self.inflight.pop(key, None)

    def _loop(self) -> None:
        while True:
            time.sleep(min(1.0, self.limit_s / 4))
            with self._lock:
                oldest = min(self.inflight.values(), default=None)
            if oldest is not None and time.monotonic() - oldest > self.limit_s:
                self.cut(time.monotonic() - oldest)

    def cut(self, age_s: float) -> int:
        """Shut down the socket of every live connection: a call blocked on one raises at once."""
        n = 0
        for conn in list(self.conns):
            try:
                if conn.closed:
                    continue
                with socket.socket(fileno=socket.dup(conn.fileno())) as sock:
                    sock.shutdown(socket.SHUT_RDWR)
                n += 1
            except (OSError, ValueError, AttributeError):  # closed meanwhile
                continue
        with self._lock:  # the cut transactions raise now; give the next attempt its own full bound
            now = time.monotonic()
            self.inflight = {k: now for k in self.inflight}
        self.cuts += 1
        log.error(
            "database %s: a transaction has waited %.0f s (store.stall_s %.0f s): cut %d connection(s)",
            make_url(self.url).render_as_string(hide_password=True),
            age_s,
            self.limit_s,
            n,
        )
        return n


class Store:
    """The database of one station: an engine, sessions, and the small write helpers around them."""

    def __init__(
        self,
        engine: Engine,
        url: str,
        schema: str | None = None,
        ready: bool = True,
        section: StoreSection | None = None,
    ) -> None:
        self.engine = engine
        self.url = url
        self.schema = schema
        self.section = section or StoreSection()
        self._ready = ready
        self._ready_lock = threading.Lock()
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self.watchdog = _Watchdog(engine, self.section.stall_s, url)
        self.cfg: StationConfig | None = None  # set by open_store(cfg): the audit trail's Redis anchor
        sqlite_file = make_url(url).database if engine.dialect.name == "sqlite" else None
        #: where the audit key and anchors live (the station's data folder; else the SQLite file's folder)
        self.data_dir: Path | None = (
            Path(sqlite_file).resolve().parent if sqlite_file and sqlite_file != ":memory:" else None
        )
        self.audit = AuditLog(self)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def ensure_ready(self) -> None:
        """Migrate on first use (a lazily opened store); raises StoreError while the database cannot be reached."""
        if self._ready:
            return
        with self._ready_lock, self.watchdog.guard():
            if self._ready:
                return
            try:
                migrate(self.engine, self.schema)
            except Exception as err:
                line = describe(err, self.url)
                disk = self.dialect == "sqlite" and ("disk" in line or "read-only" in line)
                raise StoreError(
                    f"cannot open the station database: {line}",
                    "free disk space there (or make it writable), or move station.data_dir"
                    if disk
                    else "check store.url, that the server runs, and the user's rights",
                ) from err
            self._ready = True

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any exception; cut after ``store.stall_s``."""
        self.ensure_ready()
        with self.watchdog.guard(), self._sessions() as s, s.begin():
            yield s

    def describe(self, err: BaseException) -> str:
        return describe(err, self.url)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def open_store(
    target: StationConfig | StoreSection | str | Path, schema: str | None = None, lazy: bool = False
) -> Store:
    """Open (and migrate to head) the station database.

    ``target``: a station config (``store.url``, else ``<data_dir>/station.db``), a store section with a
    URL, a SQLAlchemy URL, or the path of a SQLite file. ``schema``: PostgreSQL schema to use (created
    when missing); defaults to ``store.db_schema``. ``lazy``: connect and migrate on first use instead,
    so that a process can start while the database is down (a bad URL still fails here).
    """
    url, schema = _resolve(target, schema)
    section = (
        target.store if isinstance(target, StationConfig) else target if isinstance(target, StoreSection) else None
    )
    try:
        engine = make_engine(url, schema, section)
    except StoreError:
        raise
    except Exception as err:
        raise StoreError(f"cannot open database {url!r}: {err}", "check store.url") from err
    store = Store(engine, url, schema, ready=False, section=section)
    if isinstance(target, StationConfig):
        store.cfg, store.data_dir = target, Path(target.station.data_dir).resolve()
    if not lazy:
        store.ensure_ready()
    return store


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
