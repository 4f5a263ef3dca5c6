"""Review tests use the store tests' fixtures: a ``store`` on SQLite, and on PostgreSQL when DATABASE_URL is set."""

from tests.store.conftest import archive, store, store_target  # noqa: F401 - fixtures shared by name
