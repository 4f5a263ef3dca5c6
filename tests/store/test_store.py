from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select, text

from inspector.store import Store, open_store
from inspector.store import records as rec
from inspector.store.db import head_revision
from inspector.store.fakes import make_verdict
from inspector.store.models import Base, VerdictRow


def test_migrations_match_models(store: Store) -> None:
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn)
        assert ctx.get_current_revision() == head_revision()
        diff = [
            d
            for d in compare_metadata(ctx, Base.metadata)
            if not (isinstance(d, tuple) and d[0] == "remove_table" and d[1].name == "alembic_version")
        ]
    assert diff == []


def test_reopen_is_noop_and_sqlite_is_wal(store_target: tuple[str, str | None]) -> None:
    a = open_store(store_target[0], schema=store_target[1])
    b = open_store(store_target[0], schema=store_target[1])
    if a.dialect == "sqlite":
        with a.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    a.close()
    b.close()


def test_verdict_insert_is_idempotent_by_frame_id(store: Store) -> None:
    vs = [make_verdict("s1", i) for i in range(10)]
    assert rec.record_verdicts(store, vs) == 10
    rec.record_verdicts(store, vs[:5] + [make_verdict("s1", 99)])
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(VerdictRow)) == 11
    row = rec.get_verdict(store, vs[3].frame_id)
    assert row is not None and row.class_probs == vs[3].class_probs and row.part_id == vs[3].part_id


def test_model_registry_promotion_is_audited(store: Store) -> None:
    rec.register_model(store, "m1", "/pk/m1", "a" * 64, {"auroc": 0.97})
    rec.register_model(store, "m2", "/pk/m2", "b" * 64, {"auroc": 0.98})
    assert rec.promote_model(store, "m1", "alice") is None
    assert rec.promote_model(store, "m2", "alice") == "m1"
    active = rec.active_model(store)
    assert active is not None and active.version == "m2"
    assert {m.version: m.status for m in rec.list_models(store)} == {"m1": "retired", "m2": "active"}
    actions = [e.action for e in store.audit.entries()]
    assert actions.count("model.promote") == 2 and store.audit.verify().ok
    rec.record_drift_alarm(store, "s1", "psi_brightness", 0.4, 0.25, {"window": 100})
    with store.session() as s:
        assert s.execute(text("SELECT count(*) FROM drift_alarms")).scalar() == 1
