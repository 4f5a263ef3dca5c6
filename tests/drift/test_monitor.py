"""DriftDetector hysteresis, cooldown, suppression; DriftMonitor on a real Redis stream and store."""

from __future__ import annotations

import json

import numpy as np

from inspector.bus.streams import StationBus
from inspector.contracts.config import DriftSection
from inspector.contracts.messages import Decision, ImageStats, Verdict
from inspector.contracts.names import Names
from inspector.drift.monitor import DriftDetector, DriftMonitor, DriftRecord, suppression_key
from inspector.drift.reference import parse_reference, reference_from_samples
from inspector.store.db import open_store
from inspector.store.records import register_model

STAT_KEYS = ("brightness", "contrast", "sharpness", "mean_r", "mean_g", "mean_b")


def _stats(rng: np.random.Generator, scale: float = 1.0) -> dict[str, float]:
    b = float(rng.normal(120, 8)) * scale
    return {
        "brightness": b,
        "contrast": float(rng.normal(30, 3)) * scale,
        "sharpness": float(rng.normal(50, 5)),
        "mean_r": b,
        "mean_g": b,
        "mean_b": b,
    }


def _reference(rng: np.random.Generator) -> dict:
    return reference_from_samples([_stats(rng) for _ in range(400)], decisions=["PASS"] * 400)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _detector(cfg: DriftSection, clock: Clock) -> tuple[DriftDetector, np.random.Generator]:
    rng = np.random.default_rng(1)
    return DriftDetector(parse_reference(_reference(rng)), cfg, clock), rng


def _feed(det: DriftDetector, rng: np.random.Generator, n: int, scale: float = 1.0) -> list:
    return [a for a in (det.add(DriftRecord(_stats(rng, scale))) for _ in range(n)) if a is not None]


def test_hysteresis_needs_consecutive_tripped_checks() -> None:
    clock = Clock()
    det, rng = _detector(DriftSection(window=100, check_every=10, hysteresis=3, cooldown_s=0), clock)
    assert _feed(det, rng, 500) == []
    alarms = _feed(det, rng, 100, scale=0.7)
    assert alarms, "a 30 % darker image never alarmed"
    first = alarms[0]
    assert first.statistic in STAT_KEYS and first.value > first.threshold and "brightness" in first.details
    assert det.checks >= 3


def test_cooldown_silences_repeats_then_allows_again() -> None:
    clock = Clock()
    det, rng = _detector(DriftSection(window=100, check_every=10, hysteresis=1, cooldown_s=60), clock)
    _feed(det, rng, 100)
    assert len(_feed(det, rng, 200, scale=0.7)) == 1
    clock.t += 61
    assert len(_feed(det, rng, 10, scale=0.7)) == 1


def test_suppression_counts_but_does_not_alarm() -> None:
    det, rng = _detector(DriftSection(window=100, check_every=10, hysteresis=1, cooldown_s=0), Clock())
    det.suppressed = True
    assert _feed(det, rng, 200, scale=0.7) == [] and det.suppressed_alarms > 0


def _write_package(folder, ref: dict, created_at: float) -> None:
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(
        json.dumps(
            {
                "name": "t",
                "version": folder.name,
                "created_at": created_at,
                "task": "anomaly",
                "model": {},
                "preprocess": {"size": [8, 8]},
                "drift_reference": ref,
            }
        )
    )


def _verdict(station: str, version: str, seq: int, stats: dict[str, float]) -> Verdict:
    return Verdict(
        station=station,
        frame_id=f"f{seq}",
        camera="c",
        seq=seq,
        part_id=f"p{seq}",
        captured_at=0,
        decision=Decision.PASS,
        reject=False,
        model_version=version,
        image_stats=ImageStats(**stats),
    )


def test_monitor_on_stream_raises_event_and_store_row_and_respects_suppression(
    station_config, redis_client, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    cfg = station_config.model_copy(deep=True)
    cfg.drift = DriftSection(window=100, check_every=10, hysteresis=2, cooldown_s=0)
    names = Names(cfg.redis.prefix, cfg.station.id)
    rng = np.random.default_rng(2)
    _write_package(tmp_path / "v1", _reference(rng), created_at=1.0)
    redis_client.hset(names.active_model, mapping={"version": "v1", "path": str(tmp_path / "v1")})
    store = open_store(cfg)
    mon = DriftMonitor(cfg, redis_client, store)
    seen = mon.alarms  # the monitor only publishes; the retrain trigger consumes the events
    bus = StationBus(redis_client, cfg)
    for i in range(300):
        bus.r.xadd(
            names.verdicts, {b"m": _verdict(cfg.station.id, "v1", i, _stats(rng, 0.7 if i >= 150 else 1)).to_json()}
        )
    while mon.step(block_ms=None):
        pass
    assert seen and seen[0].frames_seen - 150 <= 60
    events = [json.loads(f[b"m"]) for _, f in redis_client.xrange(names.events)]
    assert any(e["type"] == "drift_alarm" and e["data"]["tripped"] and e["data"]["source"] == "drift" for e in events)
    from sqlalchemy import select

    from inspector.store.models import DriftAlarmRow

    with store.session() as s:
        rows = s.scalars(select(DriftAlarmRow)).all()
    assert len(rows) == len(seen) and rows[0].value > rows[0].threshold
    # a planned change suppresses alarms until a package fitted after it is active
    redis_client.set(suppression_key(names), json.dumps({"since": 5.0}))
    n_before = len(seen)
    for i in range(300, 400):
        bus.r.xadd(names.verdicts, {b"m": _verdict(cfg.station.id, "v1", i, _stats(rng, 0.7)).to_json()})
    while mon.step(block_ms=None):
        pass
    assert len(seen) == n_before
    _write_package(tmp_path / "v2", _reference(rng), created_at=10.0)
    register_model(store, "v2", str(tmp_path / "v2"), "0" * 64)
    redis_client.hset(names.active_model, mapping={"version": "v2", "path": str(tmp_path / "v2")})
    mon.refresh_model()
    assert redis_client.get(suppression_key(names)) is None and mon.version == "v2"
    store.close()


def test_operator_reports_count_per_window_with_their_own_threshold() -> None:
    cfg = DriftSection(
        window=100, check_every=10, hysteresis=1, cooldown_s=0, operator_report_rate=0.05, operator_report_min=3
    )
    det, rng = _detector(cfg, Clock())
    recs = [DriftRecord(_stats(rng), frame_id=f"f{i}") for i in range(100)]
    for r in recs[:-1]:
        assert det.add(r) is None
    det.note_reports(["f10", "f11"])  # 2 reports: under operator_report_min
    assert det.add(recs[-1]) is None and det.operator_reports() == (2, 100)
    det.note_reports(["f12", "f13", "f14", "f15"])  # 6 of 100 > 5 %
    alarms = [a for a in (det.add(DriftRecord(_stats(rng), frame_id=f"g{i}")) for i in range(10)) if a is not None]
    assert len(alarms) == 1 and alarms[0].statistic == "operator_reports" and alarms[0].source == "operator_reports"
    assert alarms[0].details["operator_reports"]["reports"] == 6


def test_wrong_verdict_reports_raise_an_operator_alarm_the_trigger_acts_on(
    station_config, redis_client, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    from inspector.archive import Archive
    from inspector.review.labelling import LabellingService
    from inspector.store.records import record_verdicts
    from jobs.queues import station_queue
    from jobs.trigger import RetrainTrigger

    cfg = station_config.model_copy(deep=True)
    cfg.drift = DriftSection(window=100, check_every=10, hysteresis=2, cooldown_s=0)
    names = Names(cfg.redis.prefix, cfg.station.id)
    rng = np.random.default_rng(4)
    _write_package(tmp_path / "v1", _reference(rng), created_at=1.0)
    redis_client.hset(names.active_model, mapping={"version": "v1", "path": str(tmp_path / "v1")})
    store = open_store(cfg)
    trigger = RetrainTrigger(cfg, redis_client)
    mon = DriftMonitor(cfg, redis_client, store)
    verdicts = [_verdict(cfg.station.id, "v1", i, _stats(rng)) for i in range(130)]
    record_verdicts(store, verdicts)
    svc = LabellingService(store, Archive.for_data_dir(cfg.data_dir))
    for v in verdicts[60:68]:  # the operator presses "wrong verdict" on 8 parts (the GUI's dispute path)
        svc.request_review(v.frame_id, "operator disputes PASS", "olga", priority=90)
    for v in verdicts:
        redis_client.xadd(names.verdicts, {b"m": v.to_json()})
    while mon.step(block_ms=None):
        pass
    assert [a.source for a in mon.alarms] == ["operator_reports"] * len(mon.alarms) and mon.alarms
    events = [json.loads(f[b"m"]) for _, f in redis_client.xrange(names.events)]
    assert [e["data"]["source"] for e in events if e["type"] == "drift_alarm"] == ["operator_reports"] * len(mon.alarms)
    outcomes = trigger.step(block_ms=None)
    assert outcomes[0].status == "enqueued" and outcomes[0].source == "operator_reports"
    job = station_queue(cfg, redis_client).jobs[0]
    assert job.args[2] == "operator_reports" and job.args[4] is False  # no condition change: the model is wrong
    store.close()


def test_each_product_is_watched_against_its_own_reference(station_config, redis_client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Two products whose parts look different: alternating between them is no drift (each window holds one
    product's frames, against that product's package), and a real change of one product alarms for it alone."""
    from inspector.contracts.config import parse_config

    rng = np.random.default_rng(3)
    dark = [{**_stats(rng), "brightness": b, "mean_r": b, "mean_g": b, "mean_b": b} for b in rng.normal(60, 4, 400)]
    _write_package(tmp_path / "bright-v1", _reference(rng), created_at=1.0)
    _write_package(tmp_path / "dark-v1", reference_from_samples(dark, decisions=["PASS"] * 400), created_at=1.0)
    doc = station_config.model_dump(mode="json", exclude_none=True)
    doc["drift"] = {"window": 100, "check_every": 10, "hysteresis": 2, "cooldown_s": 0}
    doc["products"] = {
        "bright": {"package": str(tmp_path / "bright-v1")},
        "dark": {"package": str(tmp_path / "dark-v1")},
    }
    cfg = parse_config(doc, environ={})
    names = Names(cfg.redis.prefix, cfg.station.id)
    mon = DriftMonitor(cfg, redis_client)
    assert set(mon.products) == {"bright", "dark"}

    def verdict(i: int, product: str, stats: dict[str, float]) -> bytes:
        v = _verdict(cfg.station.id, f"{product}-v1", i, stats).model_copy(update={"product": product})
        return v.to_json()

    i = 0
    for block in range(6):  # changeovers every 80 parts: bright, dark, bright, ...
        product = "bright" if block % 2 == 0 else "dark"
        for _ in range(80):
            stats = (
                _stats(rng)
                if product == "bright"
                else {
                    **_stats(rng),
                    **dict.fromkeys(("brightness", "mean_r", "mean_g", "mean_b"), float(rng.normal(60, 4))),
                }
            )
            redis_client.xadd(names.verdicts, {b"m": verdict(i, product, stats)})
            i += 1
    while mon.step(block_ms=None):
        pass
    assert mon.alarms == [], [a.as_dict() for a in mon.alarms]  # a changeover is not drift
    for _ in range(200):  # the bright product's parts get 30 % darker
        redis_client.xadd(names.verdicts, {b"m": verdict(i, "bright", _stats(rng, 0.7))})
        i += 1
    while mon.step(block_ms=None):
        pass
    assert mon.alarms and {a.product for a in mon.alarms} == {"bright"}
    events = [json.loads(f[b"m"]) for _, f in redis_client.xrange(names.events)]
    alarm = next(e for e in events if e["type"] == "drift_alarm")
    assert alarm["data"]["product"] == "bright" and alarm["model_version"] == "bright-v1"
    assert "of product bright" in alarm["message"]
