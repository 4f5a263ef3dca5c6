"""Parts seen by several views (parts.views): one part verdict per part, on a real Redis with a real worker."""

from __future__ import annotations

import threading
import time

import pytest
import redis
import yaml
from typer.testing import CliRunner

from inspector.bus.streams import StationBus
from inspector.camera.publisher import CameraPublisher, part_id_of
from inspector.camera.sources import Capture, FrameSource
from inspector.camera.synthetic import PartFactory
from inspector.cli import app
from inspector.contracts.config import StationConfig, parse_config
from inspector.contracts.errors import ConfigError
from inspector.contracts.messages import Decision, FrameMeta, Verdict
from inspector.contracts.names import Names
from inspector.decision import decide
from inspector.line import LineRunner, MemoryOutput, Reason, Signal
from inspector.line.parts import PartDecider, read_part_verdicts
from inspector.models.decode import encode_image
from inspector.recording.part_recorder import PartRecorder
from inspector.store import open_store
from inspector.store.models import PartVerdictRow
from inspector.worker import Worker, load_model

VIEWS = ["top", "side"]


def views_cfg(
    cfg: StationConfig, deadline_ms: float = 2000, camera: str = "top", **camera_keys: object
) -> StationConfig:
    data = cfg.model_dump(mode="json")
    data["parts"] = {"views": VIEWS}
    data["line"]["deadline_ms"] = deadline_ms
    data["camera"].update({"id": camera, **camera_keys})
    return parse_config(data, environ={})


# ----------------------------------------------------------------------------------------------- config
def test_config_views_default_and_refusals(station_config: StationConfig) -> None:
    cfg = views_cfg(station_config, camera="side")
    assert cfg.camera.view_of(7) == "side"  # default: the camera id
    one = views_cfg(station_config, camera="cam1", views=["top", "side"])
    assert [one.camera.view_of(i) for i in range(3)] == ["top", "side", "top"]
    with pytest.raises(ConfigError) as err:
        views_cfg(station_config, camera="cam1", view="bottom")
    assert "camera.view: view 'bottom' is not one of parts.views (top, side)" in str(err.value)
    with pytest.raises(ConfigError, match="camera.id: view 'cam0' is not one of parts.views"):
        views_cfg(station_config, camera="cam0")
    with pytest.raises(ConfigError, match="camera.views: view 'front'"):
        views_cfg(station_config, camera="cam1", views=["top", "front"])
    with pytest.raises(ConfigError, match="camera.view/camera.views need parts.views"):
        parse_config({"camera": {"view": "top"}}, environ={})


# ----------------------------------------------------------------------------------------------- decider
class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _verdict(part: str, view: str | None, decision: Decision, t: float, defect: str | None = None) -> Verdict:
    return Verdict(
        station="s",
        frame_id=f"{part}-{view}",
        camera=str(view),
        seq=0,
        part_id=part,
        captured_at=t,
        decision=decision,
        reject=decision is not Decision.PASS,
        defect_class=defect,
        view=view,
        model_version="m1",
    )


def test_decider_rules() -> None:
    clock = Clock()
    d = PartDecider(VIEWS, 0.5, "s", clock=clock)
    t0 = clock.t
    # every view passed in time: ACCEPT, only after the last view
    assert d.on_verdict(_verdict("p1", "top", Decision.PASS, t0)) is None
    ok = d.on_verdict(_verdict("p1", "side", Decision.PASS, t0))
    assert ok is not None and ok.signal is Signal.ACCEPT and ok.verdict.decision is Decision.PASS
    assert set(ok.verdict.views) == {"top", "side"} and not ok.verdict.missing
    # one view fails, one is unsure: FAIL naming the failed view and its defect
    d.on_verdict(_verdict("p2", "top", Decision.REVIEW, t0))
    bad = d.on_verdict(_verdict("p2", "side", Decision.FAIL, t0, "scratch"))
    assert bad.signal is Signal.REJECT and bad.reason is Reason.FAIL
    assert (bad.verdict.decision, bad.verdict.failed_view, bad.verdict.defect_class) == (
        Decision.FAIL,
        "side",
        "scratch",
    )
    assert "view side: FAIL (scratch)" in bad.verdict.reasons
    assert {k: bad.payload()[k] for k in ("part_id", "signal", "failed_view", "defect_class", "views")} == {
        "part_id": "p2",
        "signal": "REJECT",
        "failed_view": "side",
        "defect_class": "scratch",
        "views": {"top": "REVIEW", "side": "FAIL"},
    }  # the part's MQTT decision message
    # REVIEW when one is unsure and none failed; ERROR rejects
    d.on_verdict(_verdict("p3", "top", Decision.PASS, t0))
    rv = d.on_verdict(_verdict("p3", "side", Decision.REVIEW, t0))
    assert (rv.signal, rv.verdict.decision, rv.verdict.failed_view) == (Signal.REJECT, Decision.REVIEW, "side")
    d.on_verdict(_verdict("p4", "top", Decision.ERROR, t0))
    er = d.on_verdict(_verdict("p4", "side", Decision.PASS, t0))
    assert (er.signal, er.reason, er.verdict.failed_view) == (Signal.REJECT, Reason.ERROR, "top")
    # a missing view rejects at the deadline, not before; its late verdict is ignored
    d.register(FrameMeta(station="s", camera="top", seq=5, part_id="p5", captured_at=t0, view="top"))
    assert d.on_verdict(_verdict("p5", "top", Decision.PASS, t0)) is None
    clock.t = t0 + 0.49
    assert d.expire() == []
    clock.t = t0 + 0.51
    [gone] = d.expire()
    assert (gone.signal, gone.reason, gone.verdict.missing) == (Signal.REJECT, Reason.TIMEOUT, ["side"])
    assert "no verdict by the deadline from view(s): side" in gone.verdict.reasons
    assert d.on_verdict(_verdict("p5", "side", Decision.PASS, t0)) is None
    # all views in, but after the deadline: late, rejected
    t1 = clock.t
    d.on_verdict(_verdict("p6", "top", Decision.PASS, t1))
    clock.t = t1 + 0.6
    late = d.on_verdict(_verdict("p6", "side", Decision.PASS, t1))
    assert (late.signal, late.reason) == (Signal.REJECT, Reason.LATE)
    # a view not in parts.views: ERROR at once, one clear reason, never a PASS
    t2 = clock.t
    d.on_verdict(_verdict("p7", "top", Decision.PASS, t2))
    odd = d.on_verdict(_verdict("p7", "bottom", Decision.PASS, t2))
    assert (odd.signal, odd.verdict.decision, odd.verdict.failed_view) == (Signal.REJECT, Decision.ERROR, "bottom")
    assert odd.verdict.reasons[0] == "view 'bottom' is not one of parts.views (top, side)"
    assert d.pending == 0


# ----------------------------------------------------------------------------------------------- real station
class _Frames(FrameSource):
    def __init__(self, frames: list[tuple[str, bytes]]) -> None:
        self.frames = list(frames)

    def read(self) -> Capture | None:
        if not self.frames:
            return None
        truth, data = self.frames.pop(0)
        return Capture(encoded=data, encoding="png", truth=truth)


def _judged(cfg: StationConfig, package, want: Decision, kinds: tuple[str, ...]) -> tuple[str, bytes]:  # type: ignore[no-untyped-def]
    """A synthetic frame the tiny package judges ``want`` (so the test knows which view fails)."""
    model, f = load_model(cfg, package), PartFactory(seed=21)
    for _ in range(60):
        kind = kinds[int(f.rng.integers(len(kinds)))]
        img = f.make(kind)
        out = model.infer([img])[0]
        if decide(out.class_probs, out.anomaly_score, cfg.policy, out.classifier_decides).decision is want:
            return kind, encode_image(img, "png")
    raise AssertionError(f"no synthetic {kinds} frame judged {want}")


def _publisher(
    cfg: StationConfig, client: redis.Redis, camera: str, frames: list[tuple[str, bytes]]
) -> CameraPublisher:
    data = cfg.model_dump(mode="json")
    data["camera"]["id"] = camera
    return CameraPublisher(StationBus(client, parse_config(data, environ={})), _Frames(frames))


class Line:
    def __init__(self, cfg: StationConfig) -> None:
        self.out = MemoryOutput()
        self.runner = LineRunner(cfg, outputs=[self.out])
        self.thread = threading.Thread(target=self.runner.run, daemon=True)

    def __enter__(self) -> Line:
        self.runner._ensure_groups()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.runner.stop()
        self.thread.join(5)


def _wait(cond, timeout: float = 20) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_one_failing_view_fails_the_part_and_is_recorded_once(
    station_config,
    redis_client,
    tiny_package,  # type: ignore[no-untyped-def]
    tmp_path,
) -> None:  # type: ignore[no-untyped-def]
    cfg = views_cfg(station_config)
    names = Names(cfg.redis.prefix, cfg.station.id)
    good = _judged(cfg, tiny_package, Decision.PASS, ("good",))
    bad = _judged(cfg, tiny_package, Decision.FAIL, ("scratch", "spot", "chip"))
    top = _publisher(cfg, redis_client, "top", [good, good])
    side = _publisher(cfg, redis_client, "side", [good, bad])
    worker = Worker(cfg, redis_client, load_model(cfg, tiny_package), name="w1")
    with Line(cfg) as line:
        metas = [
            top.publish(top.source.read()),
            side.publish(side.source.read()),  # part 1: both good
            top.publish(top.source.read()),
            side.publish(side.source.read()),
        ]  # part 2: the side fails
        assert [m.part_id for m in metas] == [part_id_of(1)] * 2 + [part_id_of(2)] * 2
        assert [m.view for m in metas] == ["top", "side", "top", "side"]
        worker.run(max_frames=4, idle_exit_s=3)
        assert _wait(lambda: len(line.out.outcomes) == 2)
        time.sleep(0.3)
    parts = read_part_verdicts(redis_client, names)
    assert [p.part_id for p in parts] == [part_id_of(1), part_id_of(2)], "one part verdict per part"
    ok, failed = parts
    assert (ok.decision, ok.signal, sorted(ok.views)) == (Decision.PASS, "ACCEPT", ["side", "top"])
    assert (failed.decision, failed.signal, failed.failed_view) == (Decision.FAIL, "REJECT", "side")
    assert failed.views["side"].frame_id == metas[3].frame_id and failed.views["top"].decision is Decision.PASS
    assert [(o.part.part_id, o.signal) for o in line.out.outcomes] == [
        (part_id_of(1), Signal.ACCEPT),
        (part_id_of(2), Signal.REJECT),
    ]
    # a line process restarted over the same verdicts never gives a part a second verdict
    redis_client.xgroup_setid(names.verdicts, names.line_group, id="0")
    redis_client.xgroup_setid(names.frames, names.line_group, id="0")
    with Line(cfg) as again:
        assert _wait(lambda: len(again.runner.decider._decided) == 2, 5), "the restarted line re-decided both parts"
        time.sleep(0.3)
    assert again.out.outcomes == [] and len(read_part_verdicts(redis_client, names)) == 2
    # one part record with its per-view results
    store = open_store(cfg)
    rec = PartRecorder(cfg, redis_client, store, "rec1")
    assert rec.drain() == 2
    with store.session() as s:
        rows = {r.part_id: r for r in s.query(PartVerdictRow)}
    assert rows[part_id_of(2)].decision == "FAIL" and rows[part_id_of(2)].failed_view == "side"
    assert rows[part_id_of(2)].views["side"]["decision"] == "FAIL" and rows[part_id_of(1)].reject is False
    store.close()
    # inspector trace PART shows every view's verdict and the part verdict (the worker's recorder wrote the rows)
    from inspector.recording.recorder import VerdictRecorder

    VerdictRecorder(cfg, redis_client, open_store(cfg), "rec1").drain()
    config = tmp_path / "station.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    res = CliRunner().invoke(app, ["trace", part_id_of(2), "--config", str(config)], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert "side" in res.output and "top" in res.output
    assert "part verdict: FAIL (fail, view side)" in res.output


def test_missing_view_rejected_at_the_deadline(station_config, redis_client, tiny_package) -> None:  # type: ignore[no-untyped-def]
    cfg = views_cfg(station_config, deadline_ms=400)
    names = Names(cfg.redis.prefix, cfg.station.id)
    good = _judged(cfg, tiny_package, Decision.PASS, ("good",))
    top = _publisher(cfg, redis_client, "top", [good])
    worker = Worker(cfg, redis_client, load_model(cfg, tiny_package), name="w1")
    with Line(cfg) as line:
        meta = top.publish(top.source.read())  # the side camera never delivers this part
        worker.run(max_frames=1, idle_exit_s=1)
        assert _wait(lambda: len(line.out.outcomes) == 1, 5)
        decided_at = line.out.outcomes[0].decided_at
    [part] = read_part_verdicts(redis_client, names)
    assert (part.part_id, part.signal, part.reason, part.missing) == (
        meta.part_id,
        "REJECT",
        "no_verdict_by_deadline",
        ["side"],
    )
    assert part.views["top"].decision is Decision.PASS
    assert meta.captured_at + 0.4 <= decided_at < meta.captured_at + 0.4 + 0.5, "rejected at its deadline"


def test_frame_of_unknown_view_is_an_error_never_a_pass(station_config, redis_client, tiny_package) -> None:  # type: ignore[no-untyped-def]
    cfg = views_cfg(station_config)
    names = Names(cfg.redis.prefix, cfg.station.id)
    good = _judged(cfg, tiny_package, Decision.PASS, ("good",))
    bus = StationBus(redis_client, cfg)
    worker = Worker(cfg, redis_client, load_model(cfg, tiny_package), name="w1")
    with Line(cfg) as line:
        for view in ("top", "bottom"):  # a misconfigured camera stamps a view the station does not know
            bus.publish_frame(
                FrameMeta(
                    station=cfg.station.id,
                    camera=f"cam-{view}",
                    seq=0,
                    part_id="part-x",
                    captured_at=time.time(),
                    encoding="png",
                    view=view,
                ),
                good[1],
            )
        worker.run(max_frames=2, idle_exit_s=2)
        assert _wait(lambda: len(line.out.outcomes) == 1, 5)
    verdicts = {v.view: v for v in (Verdict.from_json(f[b"m"]) for _e, f in redis_client.xrange(names.verdicts))}
    assert verdicts["bottom"].decision is Decision.ERROR
    assert verdicts["bottom"].reasons == [
        "view 'bottom' is not one of parts.views (top, side): set camera.view to one of them"
    ]
    [part] = read_part_verdicts(redis_client, names)
    assert (part.signal, part.decision, part.failed_view) == ("REJECT", Decision.ERROR, "bottom")


def test_one_camera_several_trigger_positions(station_config, redis_client, tiny_package) -> None:  # type: ignore[no-untyped-def]
    """camera.views: one camera takes the views of each part in turn; the part changes after the last view."""
    cfg = views_cfg(station_config, camera="cam1", views=["top", "side"])
    good = _judged(cfg, tiny_package, Decision.PASS, ("good",))
    cam = CameraPublisher(StationBus(redis_client, cfg), _Frames([good] * 4))
    metas = [cam.publish(cam.source.read()) for _ in range(4)]
    assert [(m.part_id, m.view) for m in metas] == [
        (part_id_of(1), "top"),
        (part_id_of(1), "side"),
        (part_id_of(2), "top"),
        (part_id_of(2), "side"),
    ]
    cam2 = CameraPublisher(StationBus(redis_client, cfg), _Frames([good] * 2))  # a restarted camera keeps the count
    assert [cam2.publish(cam2.source.read()).part_id for _ in range(2)] == [part_id_of(3)] * 2
    worker = Worker(cfg, redis_client, load_model(cfg, tiny_package), name="w1")
    with Line(cfg) as line:
        cam3 = CameraPublisher(StationBus(redis_client, cfg), _Frames([good] * 2))
        assert {cam3.publish(cam3.source.read()).part_id for _ in range(2)} == {part_id_of(4)}
        worker.run(max_frames=8, idle_exit_s=2)
        assert _wait(lambda: len(line.out.outcomes) >= 4, 5)
    assert [(o.part.part_id, o.signal) for o in line.out.outcomes] == [
        (part_id_of(n), Signal.ACCEPT) for n in (1, 2, 3, 4)
    ]


def test_restarted_line_finishes_the_parts_the_dead_one_held(station_config, redis_client) -> None:  # type: ignore[no-untyped-def]
    """A line process dies holding a part with one view in: the next one replays the recent verdicts and gives that
    part its one verdict; the part the dead one had already decided gets no second one."""
    cfg = views_cfg(station_config, deadline_ms=3000)
    names = Names(cfg.redis.prefix, cfg.station.id)
    bus = StationBus(redis_client, cfg)

    def verdict(part: str, view: str, decision: Decision) -> None:
        v = _verdict(part, view, decision, time.time()).model_copy(update={"station": cfg.station.id})
        assert bus.commit_verdicts([(v, "")]) == [True]

    first = Line(cfg)
    with first:
        verdict("part-a", "top", Decision.PASS)
        verdict("part-a", "side", Decision.FAIL)  # decided by the first line process
        verdict("part-b", "top", Decision.PASS)  # part-b is held in its memory when it dies
        assert _wait(lambda: len(first.out.outcomes) == 1 and first.runner.decider.pending == 1, 5)
    second = Line(cfg)
    with second:
        assert _wait(lambda: second.runner.decider.pending == 1, 5), "the held part was replayed"
        verdict("part-b", "side", Decision.PASS)
        assert _wait(lambda: len(second.out.outcomes) == 1, 5)
        time.sleep(0.3)
    assert [(o.part.part_id, o.signal) for o in second.out.outcomes] == [("part-b", Signal.ACCEPT)]
    parts = read_part_verdicts(redis_client, names)
    assert sorted((p.part_id, p.decision) for p in parts) == [("part-a", Decision.FAIL), ("part-b", Decision.PASS)]
    assert set(parts[-1].views) == {"top", "side"}


def test_retention_prunes_old_part_rows_and_trims_the_parts_stream(station_config, redis_client) -> None:  # type: ignore[no-untyped-def]
    from inspector.archive import Archive
    from inspector.contracts.messages import PartVerdict
    from inspector.store.part_verdicts import insert_part_verdicts
    from inspector.store.retention import Retention

    cfg = views_cfg(station_config)
    cfg.retention.verdict_rows_max_age_s, cfg.retention.delete_batch = 3600.0, 100
    now = time.time()
    store = open_store(cfg)
    parts = [
        PartVerdict(
            station=cfg.station.id,
            part_id=f"part-{i}",
            decision=Decision.PASS,
            reject=False,
            signal="ACCEPT",
            reason="pass",
            captured_at=now - (7200 if i < 150 else 10),
            decided_at=now,
        )
        for i in range(160)
    ]
    with store.session() as s:
        assert insert_part_verdicts(s, parts) == 160
        assert insert_part_verdicts(s, parts[:5]) == 0  # a part is recorded once
    report = Retention(cfg, redis_client, store, Archive.for_data_dir(cfg.data_dir)).run_once(now)
    assert report.part_rows == 150 and "150 part rows" in str(report)
    with store.session() as s:
        assert sorted(r.part_id for r in s.query(PartVerdictRow)) == sorted(f"part-{i}" for i in range(150, 160))
    store.close()
