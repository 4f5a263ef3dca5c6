"""The system of record: the database, and what the station keeps for how long."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from inspector.contracts.config.base import Section

STORE_URL_RE = r"^(sqlite|postgresql)(\+[A-Za-z0-9_]+)?://"


class StoreSection(Section):
    url: str | None = Field(None, description="SQLAlchemy URL. Unset: SQLite in <data_dir>/station.db.")
    batch_size: int = Field(200, ge=1, le=100_000, description="Verdicts written per transaction.")
    flush_ms: float = Field(200, ge=1, le=60_000, description="Longest wait before a partial batch is written.")
    db_schema: str | None = Field(
        None,
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="PostgreSQL schema holding the tables (unset: the default).",
    )
    reclaim_idle_ms: int = Field(
        30_000,
        ge=100,
        le=3_600_000,
        description="Verdict entries pending this long with a dead recorder are reclaimed.",
    )
    connect_timeout_s: int = Field(
        5, ge=2, le=300, description="Longest wait to open a PostgreSQL connection (libpq connect_timeout)."
    )
    keepalive_idle_s: int = Field(
        10, ge=1, le=7200, description="TCP keepalive: idle seconds before the first probe of a database connection."
    )
    keepalive_interval_s: int = Field(3, ge=1, le=600, description="TCP keepalive: seconds between two probes.")
    keepalive_count: int = Field(
        3, ge=1, le=100, description="TCP keepalive: unanswered probes before the connection counts as dead."
    )
    statement_timeout_ms: int = Field(
        10_000, ge=100, le=3_600_000, description="PostgreSQL statement_timeout of station connections."
    )
    lock_timeout_ms: int = Field(
        5_000, ge=10, le=3_600_000, description="PostgreSQL lock_timeout of station connections."
    )
    stall_s: float = Field(
        15,
        ge=0.5,
        le=3600,
        description="A database call or a consumer (recorder, review router) without progress this long is reported unhealthy; the stuck call's connection is cut.",
    )
    stop_timeout_s: float = Field(
        10,
        gt=0,
        le=600,
        description="Longest wait at exit for the recorder and review router; what they hold stays pending for the next one.",
    )

    @field_validator("url")
    @classmethod
    def _store_scheme(cls, url: str | None) -> str | None:

        if url is not None and not re.match(STORE_URL_RE, url):
            raise ValueError(
                f"{url!r} is not a database URL: use sqlite:////abs/path/station.db or "
                "postgresql+psycopg2://user:password@host:5432/dbname (or leave store.url unset)"
            )
        return url


class RetentionSection(Section):
    """What the station keeps, and for how long. Applied by the verdict recorder (in every `inspector worker`
    that records), at most once per ``interval_s`` across the station (a Redis lock)."""

    interval_s: float = Field(60, ge=1, le=86_400, description="How often retention is applied.")
    stream_max_age_s: int = Field(
        600,
        ge=60,
        le=30 * 86_400,
        description="Verdict, event and review stream entries older than this are trimmed (XTRIM MINID, never past an "
        "entry the recorder or retrain trigger has not yet taken); the exactly-once done-keys expire after "
        "the same time (Redis memory is then flat: about 1.5 KB per verdict kept).",
    )
    verdict_rows_max_age_s: float = Field(
        90 * 86_400, ge=0, description="Verdict rows captured longer ago than this are deleted (0: keep forever)."
    )
    verdict_rows_max: int = Field(0, ge=0, description="Most verdict rows kept; the oldest go first (0: no limit).")
    archive_max_age_s: float = Field(
        0,
        ge=0,
        description="Archived images older than this are deleted (0: keep forever); images of labelled "
        "frames are kept (they are the training data).",
    )
    archive_max_bytes: int = Field(
        10 * 2**30,
        ge=0,
        description="Largest archive size in bytes; the oldest unlabelled images go first (0: no limit).",
    )
    delete_batch: int = Field(
        5000, ge=100, le=1_000_000, description="Rows deleted per transaction (short database locks)."
    )
