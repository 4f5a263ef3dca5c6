"""The keyed audit trail against each kind of tampering, through ``inspector audit verify`` on a real SQLite
station and a real (embedded) Redis anchor: an edited row, a chain rewritten from an edited row with valid
unkeyed hashes, a deleted tail, and the database file replaced by an older copy are each named."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select, text
from typer.testing import CliRunner

from inspector.contracts.config import StationConfig
from inspector.contracts.names import Names
from inspector.store import Store, open_store
from inspector.store.audit import GENESIS, key_path, row_hash
from inspector.store.cli import audit_app
from inspector.store.models import AuditRow

runner = CliRunner()


@pytest.fixture
def station(station_config: StationConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.delenv("INSPECTOR_AUDIT_KEY", raising=False)
    monkeypatch.setenv("COLUMNS", "250")
    cfg_file = tmp_path / "station.yaml"
    cfg_file.write_text(yaml.safe_dump(station_config.model_dump(mode="json")))
    store = open_store(station_config)
    for i in range(6):
        store.audit.record("alice", "threshold.change", "policy.pass_confidence", 0.9, 0.9 + i / 100, {"step": i})
    yield station_config, cfg_file, store
    store.close()


def _verify(cfg_file: Path) -> tuple[int, list[str]]:
    out = runner.invoke(audit_app, ["verify", "--config", str(cfg_file)])
    return out.exit_code, [line for line in out.output.splitlines() if line.strip()]


def _tampered(cfg_file: Path, kind: str) -> list[str]:
    """``inspector audit verify`` exits 1 and names exactly ``kind``; its lines."""
    rc, lines = _verify(cfg_file)
    print("\n".join(lines))
    assert rc == 1 and lines[-1].endswith(f"tampered: {kind}"), lines
    return lines


def _rows(store: Store) -> list[AuditRow]:
    with store.session() as s:
        return list(s.scalars(select(AuditRow).order_by(AuditRow.seq)))


def test_intact_chain_is_keyed_and_anchored(station, redis_client) -> None:  # type: ignore[no-untyped-def]
    cfg, cfg_file, store = station
    rc, lines = _verify(cfg_file)
    assert rc == 0 and "intact" in lines[-1], lines
    key = key_path(cfg.station.data_dir)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert all(r.mac for r in _rows(store))
    anchor = redis_client.get(Names(cfg.redis.prefix, cfg.station.id).audit_head)
    assert anchor and b'"seq":6' in anchor
    assert (cfg.station.data_dir / "secrets" / "audit-head.json").exists()


def test_removed_key_is_named(station) -> None:  # type: ignore[no-untyped-def]
    cfg, cfg_file, _ = station
    key_path(cfg.station.data_dir).unlink()
    _tampered(cfg_file, "key_missing")


def test_edited_row_is_named(station) -> None:  # type: ignore[no-untyped-def]
    _, cfg_file, store = station
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET actor = 'mallory' WHERE seq = 3"))
    lines = _tampered(cfg_file, "edited")
    assert any("row 3" in line and "edited" in line for line in lines)


def test_chain_rewritten_with_unkeyed_hashes_is_named(station) -> None:  # type: ignore[no-untyped-def]
    _, cfg_file, store = station
    rows = _rows(store)
    prev = rows[2].prev_hash
    with store.engine.begin() as conn:  # edit seq 3, then recompute every hash and link after it (no key)
        for r in rows[2:]:
            actor = "mallory" if r.seq == 3 else r.actor
            h = row_hash(prev, r.seq, r.ts, actor, r.action, r.target, r.old, r.new, r.details)
            conn.execute(
                text("UPDATE audit_log SET actor = :a, prev_hash = :p, hash = :h, mac = :m WHERE seq = :s"),
                {"a": actor, "p": prev, "h": h, "m": None if r.seq % 2 else "0" * 64, "s": r.seq},
            )
            prev = h
        conn.execute(text("UPDATE audit_head SET hash = :h"), {"h": prev})
    assert store.audit.verify(batch=2).kinds == {"rewritten"}  # hashes and links are consistent again
    lines = _tampered(cfg_file, "rewritten")
    assert any("rewritten from row" in line and "seq 3" in line for line in lines)


def test_deleted_tail_is_named(station) -> None:  # type: ignore[no-untyped-def]
    _, cfg_file, store = station
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq > 4"))
    _tampered(cfg_file, "tail_deleted")
    # also when the database's own head record is set back to the last remaining row (it cannot be signed)
    with store.engine.begin() as conn:
        h4 = conn.execute(text("SELECT hash FROM audit_log WHERE seq = 4")).scalar_one()
        conn.execute(text("UPDATE audit_head SET seq = 4, hash = :h"), {"h": h4})
    _tampered(cfg_file, "tail_deleted")


def test_database_replaced_by_an_older_copy_is_named(station, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg, cfg_file, store = station
    db = cfg.station.data_dir / "station.db"
    store.close()  # checkpoint the WAL into the file, then copy it
    shutil.copy(db, tmp_path / "old.db")
    with open_store(cfg) as again:
        again.audit.record("bob", "model.promote", "v2", "v1", "v2")
    for extra in ("-wal", "-shm"):
        Path(f"{db}{extra}").unlink(missing_ok=True)
    shutil.copy(tmp_path / "old.db", db)
    lines = _tampered(cfg_file, "replaced")
    assert any("older copy" in line and "seq 6" in line and "seq 7" in line for line in lines)


def test_legacy_rows_keep_verifying_and_are_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows written before the key (mac NULL, as migration 0002 leaves them) verify; the first keyed row signs them."""
    monkeypatch.delenv("INSPECTOR_AUDIT_KEY", raising=False)
    store = open_store(tmp_path / "legacy" / "station.db")
    with store.engine.begin() as conn:  # two rows as the unkeyed code wrote them
        prev = GENESIS
        for seq in (1, 2):
            h = row_hash(prev, seq, 1.0, "old", "x", "t", None, None, {})
            conn.execute(
                text(
                    "INSERT INTO audit_log (seq, ts, actor, action, target, old, new, details, prev_hash, hash)"
                    " VALUES (:s, 1.0, 'old', 'x', 't', NULL, NULL, '{}', :p, :h)"
                ),
                {"s": seq, "p": prev, "h": h},
            )
            prev = h
        conn.execute(text("UPDATE audit_head SET seq = 2, hash = :h"), {"h": prev})
    store.audit.record("new", "y", "t")
    report = store.audit.verify()
    assert report.ok and report.legacy_rows == 2 and "signed by the first keyed row" in report.notes[0], report
    with store.engine.begin() as conn:  # rewriting a legacy row breaks the keyed row after it
        conn.execute(text("UPDATE audit_log SET actor = 'mallory' WHERE seq = 1"))
    assert not store.audit.verify().ok
    store.close()
