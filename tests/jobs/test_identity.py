"""Identity and roles on every state-changing CLI action, on a real SQLite store: the operating-system user is
mapped to roles in ``identity.users``; an unknown user, a user without the role, a claimed role beyond the
mapping and a name that is not the caller's are refused (exit 2, one error line) and each refusal is an
``auth.refused`` audit row. PINs are salted scrypt; the GUI login locks after N wrong PINs (counted in the store)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from inspector.contracts.config import IdentitySection, StationConfig, parse_config
from inspector.identity import PinLockout, check_secret, hash_secret, os_user
from inspector.review.cli import review_app
from inspector.store import Store, open_store
from jobs.cli import jobs_app

runner = CliRunner()
ME = os_user()

# every state-changing command (no Redis needed: refusals come before any connection)
ACTIONS = [
    (jobs_app, ["promote", "v1"]),
    (jobs_app, ["promote", "v1", "--force", "--reason", "x"]),
    (jobs_app, ["approve", "v1"]),
    (jobs_app, ["rollback", "{station}"]),
    (jobs_app, ["retrain", "{station}", "--reason", "x"]),
    (jobs_app, ["maintenance", "camera-changed"]),
    (jobs_app, ["maintenance", "confirm"]),
    (review_app, ["label", "1", "good"]),
    (review_app, ["next"]),
    (review_app, ["export", "{tmp}/ds"]),
]


def _station(tmp_path: Path, users: dict[str, list[str]]) -> tuple[StationConfig, Path, Store]:
    cfg = parse_config(
        {
            "station": {"id": "idt", "data_dir": str(tmp_path / "data")},
            "redis": {"url": "redis://127.0.0.1:1/0", "reconnect": {"give_up_s": 0.1}},
            "identity": {"users": users},
        },
        environ={},
    )
    cfg_file = tmp_path / "station.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return cfg, cfg_file, open_store(cfg)


def _run(app, args: list[str], cfg_file: Path, tmp_path: Path, **env: str):  # type: ignore[no-untyped-def]
    args = [a.format(station="idt", tmp=tmp_path) for a in args]
    return runner.invoke(app, [*args, "--config", str(cfg_file)], env={"COLUMNS": "250", **env})


def _refusals(store: Store) -> list:  # type: ignore[type-arg]
    return store.audit.entries(limit=1000, action="auth.refused")


@pytest.fixture(autouse=True)
def _no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("INSPECTOR_TOKEN", "INSPECTOR_TOKEN_FILE", "INSPECTOR_ROLE", "INSPECTOR_AUDIT_KEY"):
        monkeypatch.delenv(var, raising=False)


def test_unknown_user_is_refused_on_every_action_and_audited(tmp_path: Path) -> None:
    _, cfg_file, store = _station(tmp_path, {"somebody-else": ["maintenance"]})
    for app, args in ACTIONS:
        out = _run(app, args, cfg_file, tmp_path)
        assert out.exit_code == 2, (args, out.output)
        assert f"os user {ME!r} may not" in out.output and "holds no role" in out.output, out.output
    refused = _refusals(store)
    assert len(refused) == len(ACTIONS) and {e.actor for e in refused} == {ME}
    assert {e.details["action"] for e in refused} >= {
        "model.promote",
        "model.force_promote",
        "model.approve",
        "model.rollback",
        "retrain.request",
        "maintenance",
        "review.label",
        "review.export",
    }
    assert store.audit.verify().ok
    store.close()


def test_quality_user_cannot_promote_nor_claim_maintenance(tmp_path: Path) -> None:
    _, cfg_file, store = _station(tmp_path, {ME: ["quality"]})
    out = _run(jobs_app, ["promote", "v1"], cfg_file, tmp_path)
    print(out.output)
    assert out.exit_code == 2 and f"error: {ME} may not model.promote (holds: quality)" in out.output
    assert len([line for line in out.output.splitlines() if line.startswith("error:")]) == 1
    out = _run(jobs_app, ["promote", "v1", "--role", "maintenance"], cfg_file, tmp_path)
    print(out.output)
    assert out.exit_code == 2 and f"{ME} may not act as maintenance (holds: quality)" in out.output
    out = _run(jobs_app, ["rollback", "idt"], cfg_file, tmp_path, INSPECTOR_ROLE="maintenance")  # the env claim too
    assert out.exit_code == 2 and "may not act as maintenance" in out.output
    out = _run(jobs_app, ["approve", "v1", "--actor", "alice"], cfg_file, tmp_path)  # a name that is not mine
    assert out.exit_code == 2 and "may not act as 'alice'" in out.output
    refused = _refusals(store)[::-1]
    assert [e.details["claimed_role"] for e in refused] == [None, "maintenance", "maintenance", None]
    assert all(e.actor == ME and e.details["holds"] == ["quality"] for e in refused)
    assert refused[3].details["claimed_actor"] == "alice"
    # quality may approve: the role check passes and the registry answers (v1 is not registered)
    out = _run(jobs_app, ["approve", "v1"], cfg_file, tmp_path)
    assert out.exit_code == 2 and "not registered" in out.output and len(_refusals(store)) == 4, out.output
    store.close()


def test_commissioner_default_and_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from inspector.contracts.lifecycle import Action
    from inspector.identity import IdentityRefused, authorize, current_identity

    cfg, _, store = _station(tmp_path, {})  # nobody mapped: the owner of the data folder is its admin
    ident = current_identity(cfg)
    assert ident.name == ME and ident.holds() == "quality, maintenance"
    assert authorize(cfg, store, Action.PROMOTE)[1].value == "maintenance"
    assert authorize(cfg, store, Action.LABEL)[1].value == "quality"
    secret = "s3cret-token"
    cfg = cfg.model_copy(
        update={"identity": IdentitySection(tokens={"rita": {"roles": ["quality"], "hash": hash_secret(secret)}})}
    )
    ident = current_identity(cfg, {"INSPECTOR_TOKEN": f"rita:{secret}"})
    assert ident.name == "token:rita" and ident.holds() == "quality"
    with pytest.raises(IdentityRefused):
        authorize(cfg, store, Action.PROMOTE, environ={"INSPECTOR_TOKEN": f"rita:{secret}"})
    with pytest.raises(IdentityRefused, match="not valid"):
        authorize(cfg, store, Action.LABEL, environ={"INSPECTOR_TOKEN": "rita:guess"})
    assert [e.details["source"] for e in _refusals(store)] == ["token", "token"]
    store.close()


def test_pin_hashes_are_salted_scrypt() -> None:
    a, b = hash_secret("123456"), hash_secret("123456")
    assert a != b and a.startswith("scrypt$16384$8$1$") and b.startswith("scrypt$")
    assert check_secret("123456", a) and check_secret("123456", b) and not check_secret("123457", a)
    with pytest.raises(Exception, match="unsalted"):
        parse_config({"gui": {"quality": {"pin_sha256": "0" * 64}}}, environ={})


def test_gui_login_locks_after_n_wrong_pins_counted_in_the_store(tmp_path: Path) -> None:
    state = pytest.importorskip("gui.state")
    cfg = parse_config(
        {
            "gui": {"maintenance": {"pin_hash": hash_secret("4711")}},
            "identity": {"lockout_failures": 3, "lockout_s": 600},
        },
        environ={},
    )
    store = open_store(tmp_path / "station.db")
    policy = state.RolePolicy(cfg.gui, cfg.identity, store)
    assert policy.login("max", "maintenance", "4711").role.value == "maintenance"  # the right PIN works
    for _ in range(3):
        with pytest.raises(state.LoginError, match="wrong PIN"):
            policy.login("eve", "maintenance", "0000")
    # locked now, for every GUI on this store (a fresh policy: another instance, or after a restart)
    again = state.RolePolicy(cfg.gui, cfg.identity, store)
    with pytest.raises(state.LoginError, match="locked after 3 wrong PINs"):
        again.login("max", "maintenance", "4711")
    actions = [e.action for e in store.audit.entries(limit=50)][::-1]
    assert actions == ["auth.login"] + ["auth.pin_failed"] * 3 + ["auth.locked_out"]
    assert policy.login("olga", "operator").role.value == "operator"  # a role without a PIN is not locked
    lock = PinLockout(IdentitySection(lockout_failures=2, lockout_s=0.2))  # memory-only, expires
    lock.failed("gui:x", "eve")
    lock.failed("gui:x", "eve")
    with pytest.raises(Exception, match="locked"):
        lock.check("gui:x")
    __import__("time").sleep(0.25)
    lock.check("gui:x")
    store.close()
