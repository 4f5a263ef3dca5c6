"""The station's system of record: verdicts, review queue, labels, model registry, audit trail, drift alarms.

``open_store(cfg_or_url)`` opens SQLite (``<data_dir>/station.db``, WAL) or PostgreSQL and migrates it to
head with the Alembic migrations shipped in ``inspector/store/migrations``.
"""

from inspector.store.audit import AuditEntry, AuditLog, VerifyReport
from inspector.store.db import Store, StoreError, open_store

__all__ = ["AuditEntry", "AuditLog", "Store", "StoreError", "VerifyReport", "open_store"]
