"""Alembic environment, run programmatically by ``inspector.store.db.migrate`` on an open connection."""

from __future__ import annotations

from alembic import context

from inspector.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only programmatic use is supported
    raise RuntimeError("run migrations through inspector.store.open_store / migrate(), not the alembic CLI")

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True, compare_type=True)
context.run_migrations()
