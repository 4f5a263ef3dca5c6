"""Bad model packages are refused through the real hot-reload path (Redis ``active_model`` hash ->
``Worker.maybe_reload``) while the old model keeps serving; a valid reload under load fails no frame.

The bad packages are registered as active in the registry directly (``inspector.store.records``: a package
damaged after it was promoted), so the worker's own load-time checks are what refuses them; an unregistered
pointer is refused before any load (``tests/faults/test_trust.py``)."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest

from inspector.bus.streams import StationBus, decode_message
from inspector.contracts.messages import Decision, Event
from inspector.contracts.names import Names
from inspector.runtime.package import load_package, write_manifest
from inspector.store.db import open_store
from inspector.store.records import promote_model, register_model
from tests.faults.harness import (
    Camera,
    frame_pool,
    promote_through_registry,
    spawn_worker,
    station,
    stop_all,
    wait_for,
    wait_settled,
    write_config,
)
from tests.faults.harness import (
    renamed_package as _rename_version,
)
from tests.faults.reconcile import read_verdict_entries, reconcile
from tests.spine_helpers import make_tiny_package

pytestmark = pytest.mark.faults


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _corrupt(pkg: Path) -> Path:
    """Garbage ONNX bytes, manifest re-hashed: only the ONNX check can catch it."""
    (pkg / "model.onnx").write_bytes(b"\x08\x07garbage-not-a-graph" * 100)
    write_manifest(pkg, load_manifest(pkg))
    return pkg


def _truncated(pkg: Path) -> Path:
    data = (pkg / "model.onnx").read_bytes()
    (pkg / "model.onnx").write_bytes(data[: len(data) // 2])
    write_manifest(pkg, load_manifest(pkg))
    return pkg


def _hash_mismatch(pkg: Path) -> Path:
    data = bytearray((pkg / "model.onnx").read_bytes())
    data[-10] ^= 0xFF  # one bit flipped after packaging
    (pkg / "model.onnx").write_bytes(bytes(data))
    return pkg


def _escaping(pkg: Path) -> Path:
    m = json.loads((pkg / "manifest.json").read_text())
    m["model"]["fp32"] = "../model.onnx"
    m["files"]["../model.onnx"] = m["files"].pop("model.onnx")
    (pkg / "manifest.json").write_text(json.dumps(m))
    shutil.copy(pkg / "model.onnx", pkg.parent / "model.onnx")
    return pkg


def load_manifest(pkg: Path):  # type: ignore[no-untyped-def]
    from inspector.contracts.manifest import Manifest

    return Manifest.model_validate_json((pkg / "manifest.json").read_text())


BAD = {"corrupt": _corrupt, "truncated": _truncated, "hash_mismatch": _hash_mismatch, "path_escape": _escaping}


def _refusals(client, names: Names) -> list[Event]:  # type: ignore[no-untyped-def]
    out = []
    for _eid, fields in client.xrange(names.events):
        e = decode_message(fields[b"m"])
        if isinstance(e, Event) and e.type.value == "model_refused":
            out.append(e)
    return out


def test_bad_packages_refused_old_model_serves_then_valid_reload(
    redis_url, redis_client, tiny_package, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    cfg = station(redis_url, tmp_path / "st", tiny_package, worker={"reload_poll_s": 0.2, "expire_ms": 0})
    names = Names(cfg.redis.prefix, cfg.station.id)
    StationBus(redis_client, cfg).ensure_group(names.frames, cfg.worker.group)
    old_version = load_package(tiny_package).version
    new_pkg = make_tiny_package(tmp_path / "pkgB")
    new_pkg = _rename_version(new_pkg, "tiny-demo-B")
    workers = [spawn_worker(write_config(cfg, tmp_path), n, tmp_path / "logs", idle_exit=60) for n in ("a", "b")]
    cam = Camera(cfg, frame_pool(), 30)
    try:
        assert wait_for(lambda: len(redis_client.keys(names.heartbeat_pattern)) >= 2, 60), workers[0].tail()
        cam.start(duration_s=16)
        store = open_store(cfg)
        for kind, make_bad in BAD.items():
            bad = make_bad(_copy(tiny_package, tmp_path / "bad" / kind / "pkg"))
            version = f"bad-{kind}"
            sha = hashlib.sha256((bad / "manifest.json").read_bytes()).hexdigest()
            register_model(store, version, str(bad), sha, {"gate": {"passed": True}}, "test")
            promote_model(store, version, "test")  # damaged after promotion: the load is what must refuse it
            redis_client.hset(names.active_model, mapping={"version": version, "path": str(bad), "sha256": sha})
            assert wait_for(
                lambda v=version: all(
                    redis_client.hget(names.active_model, f"refused_by_{n}") == v.encode() for n in ("a", "b")
                ),
                20,
            ), [w.tail() for w in workers]
        t_switch = time.time()
        promote_through_registry(cfg, redis_client, store, new_pkg)
        cam.join(60)
        assert wait_settled(redis_client, cfg, timeout=60)
    finally:
        cam.stop()
        stop_all(workers)
    entries = read_verdict_entries(redis_client, names)
    refusals = _refusals(redis_client, names)
    versions = {v.model_version for v, _ in entries}
    new_version = load_package(new_pkg).version
    print(
        f"MODEL refused={sorted(BAD)} refusal_events={len(refusals)} versions={sorted(map(str, versions))} "
        f"verdicts={len(entries)} errors={sum(v.decision is Decision.ERROR for v, _ in entries)}"
    )
    for e in refusals[:4]:
        print("  refusal:", e.message[:160])
    reconcile(redis_client, names, cam.ledger, deadline_s=cfg.line.deadline_ms / 1000)
    assert versions == {old_version, new_version}, versions
    assert all(v.decision is not Decision.ERROR for v, _ in entries), "a frame failed during the reloads"
    late = [v for v, t in entries if t > t_switch + 3]
    assert late and all(v.model_version == new_version for v in late)


def test_refused_package_is_not_retried_every_poll(redis_url, redis_client, tiny_package, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from inspector.worker import Worker, load_model

    cfg = station(redis_url, tmp_path / "st", tiny_package, worker={"reload_poll_s": 0.1})
    names = Names(cfg.redis.prefix, cfg.station.id)
    w = Worker(cfg, redis_client, load_model(cfg, tiny_package), name="r")
    bad = _hash_mismatch(_copy(tiny_package, tmp_path / "bad"))
    redis_client.hset(names.active_model, mapping={"version": "bad-1", "path": str(bad)})
    for _ in range(10):
        w.maybe_reload()
    assert len(_refusals(redis_client, names)) == 1, "one refusal event per refused version, not one per poll"
