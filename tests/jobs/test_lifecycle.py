"""The model lifecycle through the real CLI, a real store and real packages: gates are enforced.

A gated_fail version is refused with exit status 3 and one line per failed row, and the refusal is an
audit row; ``--force`` needs a reason and the maintenance role and is audited; approval needs a role that
may approve and a passed gate; promotion needs approval unless auto_promote; bad requests change nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from inspector.contracts.config import StationConfig
from inspector.contracts.lifecycle import GateReport, GateRow, ModelStatus
from inspector.identity import os_user
from inspector.runtime.package import load_package
from inspector.store.db import open_store
from inspector.store.records import active_model
from jobs import registry
from tests.runtime.tiny_models import write_tiny_package


def _report(passed: bool) -> GateReport:
    rows = [
        GateRow(
            gate="false_reject_ceiling",
            metric="false_reject_rate",
            frame_set="heldout",
            candidate=0.01,
            incumbent=0.015,
            limit=0.02,
            passed=True,
        ),
        GateRow(
            gate="recall_floor",
            metric="recall:crack",
            frame_set="heldout",
            candidate=0.9 if passed else 0.31,
            incumbent=0.6,
            limit=0.85,
            passed=passed,
        ),
    ]
    return GateReport(
        passed=passed, rows=rows, incumbent_version="v1", frame_sets={"heldout": 120}, evaluated_at=time.time()
    )


def _package(folder: Path, version: str) -> tuple[str, str]:
    path = write_tiny_package(folder / version, version=version)
    return str(path), load_package(path).package_sha256


def _cli(cfg_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args, "--config", str(cfg_file)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )


@pytest.fixture
def station(station_config: StationConfig, tmp_path: Path):  # type: ignore[no-untyped-def]
    cfg_file = tmp_path / "station.yaml"
    cfg_file.write_text(yaml.safe_dump(station_config.model_dump(mode="json")))
    store = open_store(station_config)
    yield station_config, cfg_file, store
    store.close()


def test_failed_gate_is_refused_with_exit_3_and_audited(station, redis_client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg, cfg_file, store = station
    path, sha = _package(tmp_path, "bad-1")
    assert registry.register_candidate(store, "bad-1", path, sha, _report(False), "job") is ModelStatus.GATED_FAIL
    out = _cli(cfg_file, "promote", "bad-1", "--role", "maintenance")
    assert out.returncode == 3, out.stderr
    assert "FAIL recall_floor recall:crack on heldout: candidate 0.31, incumbent 0.6, limit 0.85" in out.stderr
    assert "false_reject_ceiling" not in out.stderr  # only failed rows are listed
    assert active_model(store) is None and not redis_client.exists(
        f"{cfg.redis.prefix}:{{{cfg.station.id}}}:model:active"
    )
    refused = [e for e in store.audit.entries(limit=20) if e.action == "model.promote_refused"]
    assert refused and refused[0].actor == os_user() and refused[0].target == "bad-1"
    # approval of a failed gate is refused too, and so is --force without a reason
    assert _cli(cfg_file, "approve", "bad-1", "--role", "quality").returncode == 3
    assert _cli(cfg_file, "promote", "bad-1", "--role", "maintenance", "--force").returncode == 2
    # --force by a role that may not
    out = _cli(cfg_file, "promote", "bad-1", "--role", "quality", "--force", "--reason", "line stopped")
    assert out.returncode == 2 and "may not" in out.stderr
    # --force --reason by maintenance: promoted and audited with the overridden rows
    out = _cli(cfg_file, "promote", "bad-1", "--role", "maintenance", "--force", "--reason", "line stopped")
    assert out.returncode == 0, out.stderr
    row = active_model(store)
    assert row is not None and row.version == "bad-1"
    forced = [e for e in store.audit.entries(limit=20) if e.action == "model.force_promote"]
    assert forced[0].actor == os_user() and forced[0].details["reason"] == "line stopped"
    assert forced[0].details["overridden_rows"][0]["metric"] == "recall:crack"
    assert store.audit.verify().ok


def test_passed_gate_needs_approval_by_a_role_that_may(station, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg, cfg_file, store = station
    path, sha = _package(tmp_path, "good-1")
    registry.register_candidate(store, "good-1", path, sha, _report(True), "job")
    out = _cli(cfg_file, "promote", "good-1", "--role", "maintenance")
    assert out.returncode == 3 and "not approved" in out.stderr
    out = _cli(cfg_file, "approve", "good-1", "--role", "operator")
    assert out.returncode == 2 and "may not" in out.stderr
    assert registry.get_version(store, "good-1").status == ModelStatus.GATED_PASS  # nothing changed
    gate = _cli(cfg_file, "gate", "good-1")
    assert gate.returncode == 0 and "recall:crack" in gate.stdout and "PASSED" in gate.stdout
    assert _cli(cfg_file, "approve", "good-1", "--role", "quality").returncode == 0
    assert registry.get_version(store, "good-1").status == ModelStatus.APPROVED
    out = _cli(cfg_file, "promote", "good-1", "--role", "maintenance")
    assert out.returncode == 0, out.stderr
    assert active_model(store).version == "good-1"


def test_auto_promote_only_when_every_gate_passed(station, redis_client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg, _, store = station
    cfg = cfg.model_copy(update={"jobs": cfg.jobs.model_copy(update={"auto_promote": True})})
    for version, passed in (("a-fail", False), ("a-pass", True)):
        path, sha = _package(tmp_path, version)
        registry.register_candidate(store, version, path, sha, _report(passed), "job")
    assert not registry.auto_promote(cfg, redis_client, store, "a-fail", "job")
    assert active_model(store) is None
    assert registry.auto_promote(cfg, redis_client, store, "a-pass", "job")
    assert active_model(store).version == "a-pass"
    off = cfg.model_copy(update={"jobs": cfg.jobs.model_copy(update={"auto_promote": False})})
    path, sha = _package(tmp_path, "a-pass2")
    registry.register_candidate(store, "a-pass2", path, sha, _report(True), "job")
    assert not registry.auto_promote(off, redis_client, store, "a-pass2", "job")


def test_bad_requests_change_nothing(station, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg, cfg_file, store = station
    before = len(store.audit.entries(limit=1000))
    out = _cli(cfg_file, "promote", "no-such-version", "--role", "maintenance")
    assert out.returncode == 2 and "no-such-version is not registered" in out.stderr
    path, sha = _package(tmp_path, "edited-1")
    registry.register_candidate(store, "edited-1", path, sha, _report(True), "job")
    assert _cli(cfg_file, "approve", "edited-1", "--role", "quality").returncode == 0
    with open(Path(path) / "model.onnx", "ab") as fh:  # a file no longer matches its hash
        fh.write(b"\0")
    out = _cli(cfg_file, "promote", "edited-1", "--role", "maintenance")
    assert out.returncode == 2 and "model.onnx" in out.stderr, out.stderr
    assert active_model(store) is None
    assert registry.get_version(store, "edited-1").status == ModelStatus.APPROVED
    actions = [e.action for e in store.audit.entries(limit=1000)][: len(store.audit.entries(limit=1000)) - before]
    assert "model.promote" not in actions
