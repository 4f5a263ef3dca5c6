"""Shadow mode on a real Redis and a real store: a candidate judges the live frames beside the active model,
its verdicts are stored and never reach the line, the report matches a recount from the store, and the
promotion gate can require a shadow period."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from inspector.archive import Archive
from inspector.bus.heartbeat import process_rows
from inspector.bus.streams import StationBus
from inspector.camera.synthetic import PartFactory
from inspector.contracts.config import StationConfig
from inspector.contracts.lifecycle import GateReport, ModelStatus
from inspector.contracts.messages import FrameMeta
from inspector.models.decode import encode_image
from inspector.models.tiny_package import build_tiny_package
from inspector.runtime.package import load_package
from inspector.shadow import ShadowRefused, ShadowRunner
from inspector.shadow_cli import start_shadow
from inspector.station_sinks import start_recorder
from inspector.store.db import open_store
from inspector.store.models import ShadowVerdictRow, VerdictRow
from inspector.store.records import register_model
from inspector.store.shadow import shadow_report
from inspector.worker import Worker, load_model
from jobs import registry
from tests.spine_helpers import publish_parts, wait_for_verdicts


def _candidate(folder: Path) -> Path:
    """Another tiny package, fitted on other parts with a looser false-reject target: it disagrees sometimes."""
    f = PartFactory(seed=21)
    good = [f.make("good") for _ in range(40)]
    bad = [f.make(k) for k in ("scratch", "spot") for _ in range(10)]
    return build_tiny_package(folder, good, bad, name="tiny-candidate", target_false_reject=0.25)


def _register(store, path: Path, status: ModelStatus = ModelStatus.GATED_PASS) -> str:  # type: ignore[no-untyped-def]
    package = load_package(path)
    gate = GateReport(passed=True, rows=[], evaluated_at=time.time())
    register_model(
        store,
        package.version,
        str(path),
        package.package_sha256,
        {"gate": gate.model_dump(mode="json")},
        "test",
        status=status,
    )
    return package.version


def _cfg(station_config: StationConfig, tiny_package: Path, **shadow: object) -> StationConfig:
    """The station with the tiny package and a shadow that judges every frame: these tests count judged frames,
    and on a loaded CI machine the shadow fell more than the default 2 s behind and skipped some (the skip rule
    is tested where it is set: ``max_lag_ms`` passed explicitly)."""
    model = station_config.model.model_copy(update={"package": tiny_package})
    over = {"nice": 0, "max_lag_ms": 60_000, **shadow}
    return station_config.model_copy(update={"model": model, "shadow": station_config.shadow.model_copy(update=over)})


def _thread(target, *args):  # type: ignore[no-untyped-def]
    t = threading.Thread(target=target, args=args, daemon=True)
    t.start()
    return t


def _wait(cond, timeout: float = 60.0, why=lambda: "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out {why()}"
        time.sleep(0.05)


def test_shadow_judges_live_frames_off_the_line_and_its_report_matches_the_store(
    station_config: StationConfig, redis_client, tiny_package: Path, tmp_path: Path
) -> None:
    cfg = _cfg(station_config, tiny_package)
    store = open_store(cfg)
    candidate = _register(store, _candidate(tmp_path / "cand"))
    bus = StationBus(redis_client, cfg)
    worker = Worker(cfg, redis_client, model=load_model(cfg, tiny_package), name="w1")
    stop_recorder = start_recorder(cfg, redis_client, "w1")
    shadow = ShadowRunner(cfg, redis_client, store, "shadow-1")
    threads = [_thread(worker.run), _thread(shadow.run)]
    try:
        start_shadow(cfg, redis_client, store, candidate, "tester", "maintenance")
        _wait(lambda: shadow.model is not None)
        # the shadow is listed with the station's other processes (`inspector status`)
        assert ("shadow", "shadow-1", "ok") in _processes(redis_client, bus)
        n = 120
        metas = []
        for i in range(0, n, 20):  # 20 fps, like a camera
            metas += publish_parts(bus, 20, seed=100 + i)
            time.sleep(1.0)
        verdicts = wait_for_verdicts(redis_client, bus, n)
        _wait(lambda: shadow.counts["judged"] >= n)
        _wait(lambda: len(store_rows(store, VerdictRow)) >= n)
        time.sleep(1.5)  # one more pass of the shadow's image saving after the last rows landed
    finally:
        worker.stop()
        shadow.stop()
        for t in threads:
            t.join(15)
        stop_recorder()
    assert not [p for p in _processes(redis_client, bus) if p[0] == "shadow"]  # a clean stop leaves the registry

    # the line's stream holds exactly one verdict per frame, every one from the active model
    assert len(verdicts) == n and {v.frame_id for v in verdicts} == {m.id for m in metas}
    assert {v.model_version for v in verdicts} == {worker.model.version} != {candidate}
    # the candidate judged every live frame, in the store only
    report = shadow_report(store, candidate)
    assert report.judged == n and report.compared == n

    # recount from the store, independently of the report's query
    active = {r.frame_id: r for r in store_rows(store, VerdictRow)}
    rows = [r for r in store_rows(store, ShadowVerdictRow) if r.version == candidate]
    pairs = [(active[r.frame_id], r) for r in rows if r.frame_id in active]
    assert len(pairs) == report.compared
    same_line = sum(a.reject == s.reject for a, s in pairs)
    same_decision = sum(a.decision == s.decision for a, s in pairs)
    assert report.line_agreement == round(same_line / len(pairs), 6)
    assert report.decision_agreement == round(same_decision / len(pairs), 6)
    confusion = Counter((a.decision, s.decision) for a, s in pairs)
    assert {(a, c): k for a, row in report.confusion.items() for c, k in row.items()} == dict(confusion)
    differing = {s.frame_id for a, s in pairs if a.decision != s.decision or a.reject != s.reject}
    assert report.differing == len(differing) == len(report.differences) and differing  # the two do differ
    # the images of the differing frames were archived for the report
    saved = [d for d in report.differences if d.image_sha256]
    assert saved and len(saved) >= len(differing) // 2
    archive = Archive.for_data_dir(cfg.data_dir)
    assert all(archive.exists(d.image_sha256) for d in saved)  # type: ignore[arg-type]
    print(
        f"\nshadow: {report.compared} frames compared, line agreement {report.line_agreement}, "
        f"{report.differing} differ ({len(saved)} images), candidate infer p50 {report.candidate_infer_ms}"
    )


def _processes(client: object, bus: StationBus) -> list[tuple[object, object, object]]:
    return [(p["role"], p["name"], p["health"]) for p in process_rows(client, bus.names)]


def store_rows(store, table):  # type: ignore[no-untyped-def]
    with store.session() as s:
        return list(s.scalars(select(table)))


def test_a_pointer_the_registry_does_not_back_is_refused_and_nothing_is_judged(
    station_config: StationConfig, redis_client, tiny_package: Path, tmp_path: Path
) -> None:
    cfg = _cfg(station_config, tiny_package)
    store = open_store(cfg)
    bus = StationBus(redis_client, cfg)
    with pytest.raises(ShadowRefused, match="not registered"):
        start_shadow(cfg, redis_client, store, "nobody-1", "tester", "maintenance")
    candidate = _register(store, _candidate(tmp_path / "cand"))
    # one HSET by whoever can write to Redis, with a hash that is not the registered one
    redis_client.hset(bus.names.shadow_model, mapping={"version": candidate, "sha256": "0" * 64})
    shadow = ShadowRunner(cfg, redis_client, store, "shadow-1")
    shadow.poll_pointer()
    assert shadow.model is None
    # the active model cannot be shadowed
    active = _register(store, tiny_package, ModelStatus.ACTIVE)
    with pytest.raises(ShadowRefused, match="is the active model"):
        start_shadow(cfg, redis_client, store, active, "tester", "maintenance")


def test_a_frame_published_as_soon_as_the_shadow_has_its_model_is_judged(
    station_config: StationConfig, redis_client, tiny_package: Path, tmp_path: Path
) -> None:
    """`model` is set only once the shadow judges from the live end: a frame published the moment it is set is
    judged, not skipped with the backlog (set before the skip, the promotion test below saw 39 of its 40)."""
    cfg = _cfg(station_config, tiny_package, pace="batch")
    store = open_store(cfg)
    candidate = _register(store, _candidate(tmp_path / "cand"))
    bus = StationBus(redis_client, cfg)
    shadow = ShadowRunner(cfg, redis_client, store, "shadow-1")
    start_shadow(cfg, redis_client, store, candidate, "tester", "maintenance")

    image = encode_image(PartFactory(seed=9).make("good"), "jpeg", 90)  # ready before: publishing is one XADD

    def publish_once_loaded() -> None:
        while shadow.model is None:
            pass  # spin: publish within microseconds of the assignment
        meta = FrameMeta(station=cfg.station.id, camera="cam0", seq=0, part_id="p0", captured_at=time.time())
        bus.publish_frame(meta, image)

    publisher = _thread(publish_once_loaded)
    shadow.poll_pointer()
    publisher.join(30)
    deadline = time.monotonic() + 10
    while shadow.counts["judged"] < 1 and time.monotonic() < deadline:
        shadow.step()
    shadow.flush(force=True)
    assert shadow.counts["judged"] == 1, shadow.counts


def test_promotion_waits_for_the_shadow_period(
    station_config: StationConfig, redis_client, tiny_package: Path, tmp_path: Path
) -> None:
    cfg = _cfg(station_config, tiny_package, required_frames=30, min_agreement=0.9)
    cfg = cfg.model_copy(update={"jobs": cfg.jobs.model_copy(update={"auto_promote": True})})
    store = open_store(cfg)
    candidate = _register(store, _candidate(tmp_path / "cand"))
    with pytest.raises(registry.GateRefused, match=r"shadow period is not over: 0 of the 30"):
        registry.promote(cfg, redis_client, store, candidate, "tester")
    assert any(e.action == "model.promote_refused" for e in store.audit.entries(limit=10))

    bus = StationBus(redis_client, cfg)
    worker = Worker(cfg, redis_client, model=load_model(cfg, tiny_package), name="w1")
    stop_recorder = start_recorder(cfg, redis_client, "w1")
    shadow = ShadowRunner(cfg, redis_client, store, "shadow-1")
    threads = [_thread(worker.run), _thread(shadow.run)]
    try:
        start_shadow(cfg, redis_client, store, candidate, "tester", "maintenance")
        _wait(lambda: shadow.model is not None)
        publish_parts(bus, 40, seed=5)
        wait_for_verdicts(redis_client, bus, 40)
        # timed out in full runs (sessions 10-12: 39 of 40 judged) while `shadow.model` was set before the shadow
        # skipped its backlog; if it times out again, say what the shadow saw
        _wait(
            lambda: shadow.counts["judged"] >= 40,
            why=lambda: f"shadow {shadow.counts}, line idle {shadow._line_idle()}",
        )
        _wait(lambda: len(store_rows(store, VerdictRow)) >= 40)
    finally:
        worker.stop()
        shadow.stop()
        for t in threads:
            t.join(15)
        stop_recorder()
    report = shadow_report(store, candidate)
    assert report.compared == 40 and report.differing > 0
    strict = cfg.model_copy(update={"shadow": cfg.shadow.model_copy(update={"min_agreement": 1.0})})
    with pytest.raises(registry.GateRefused, match="agreed with the active model's line outcome"):
        registry.promote(strict, redis_client, store, candidate, "tester")
    assert report.line_agreement is not None and report.line_agreement >= 0.5
    lenient = cfg.model_copy(update={"shadow": cfg.shadow.model_copy(update={"min_agreement": 0.5})})
    assert registry.promote(lenient, redis_client, store, candidate, "tester") == candidate
