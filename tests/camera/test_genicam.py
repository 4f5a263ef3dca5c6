"""GenICam cameras (kind: genicam) against Aravis's fake GigE Vision camera on 127.0.0.1, on a real Redis.

The fake camera runs in its own process, started and stopped by each test: ``arv-fake-gv-camera-0.8 -i 127.0.0.1``
where that binary is installed (Debian bookworm's aravis-tools-cli ships none), otherwise the same camera served
from the Aravis library by ``python -m inspector.camera.genicam --fake -i 127.0.0.1``. The camera is opened by its
address: over loopback, discovery by name may answer on another interface that the stream cannot reach.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from inspector.bus.streams import StationBus, decode_message
from inspector.camera.genicam import ARAVIS_HINT, HarvestersSource, load_aravis, open_genicam, to_rgb
from inspector.contracts.config import StationConfig, parse_config
from inspector.contracts.errors import BackendUnavailable, ConfigError, InspectorError
from inspector.contracts.messages import Event, EventType, FrameMeta

REPO = Path(__file__).resolve().parents[2]
FAKE_ID = "127.0.0.1"


def _aravis_or_skip():  # type: ignore[no-untyped-def]
    try:
        return load_aravis()
    except BackendUnavailable as err:
        pytest.skip(f"Aravis for Python is not installed: {ARAVIS_HINT} ({err.message})")


class FakeCamera:
    """Aravis's fake GigE Vision camera in its own process, which a test stops and starts like a cable."""

    def __init__(self, aravis) -> None:  # type: ignore[no-untyped-def]
        self.aravis = aravis
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> None:
        binary = shutil.which("arv-fake-gv-camera-0.8")
        cmd = (
            [binary, "-i", "127.0.0.1"]
            if binary
            else [sys.executable, "-m", "inspector.camera.genicam", "--fake", "-i", "127.0.0.1"]
        )
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"fake camera exited with {self.proc.returncode}"
            try:
                cam = self.aravis.Camera.new(FAKE_ID)  # answers once it listens; dropped at once (releases control)
                del cam
                return
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(0.1)
        raise AssertionError("fake GigE Vision camera did not answer")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # the camera vanishes at once, as when its cable is pulled
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def fake_camera() -> Iterator[FakeCamera]:
    cam = FakeCamera(_aravis_or_skip())
    cam.start()
    yield cam
    cam.stop()


def _cfg(station_config: StationConfig, fps: float = 20, **genicam: object) -> StationConfig:
    data = station_config.model_dump(mode="json")
    data["camera"].update(fps=fps, source={"kind": "genicam", "genicam": {"device_id": FAKE_ID, **genicam}})
    return parse_config(data, environ={})


def _write(cfg: StationConfig, folder: Path) -> Path:
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "station.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return path


def _inspector_camera(config: Path, *args: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = open(log, "wb") if log else subprocess.PIPE  # noqa: SIM115 - the child owns it
    return subprocess.Popen(
        [sys.executable, "-m", "inspector.cli", "camera", "--config", str(config), *args],
        cwd=REPO,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )


def _frames(client, bus: StationBus) -> list[FrameMeta]:  # type: ignore[no-untyped-def]
    return (
        [decode_message(f[b"m"]) for _, f in client.xrange(bus.names.frames)] if client.exists(bus.names.frames) else []
    )


def _health(client, bus: StationBus) -> list[Event]:  # type: ignore[no-untyped-def]
    if not client.exists(bus.names.events):
        return []
    events = [decode_message(f[b"m"]) for _, f in client.xrange(bus.names.events)]
    return [e for e in events if e.type is EventType.CAMERA_HEALTH]


# -- without a camera ---------------------------------------------------------------------------------------


def test_pixel_formats_become_rgb() -> None:
    mono = np.arange(12, dtype=np.uint8).reshape(3, 4)
    rgb = to_rgb(mono.tobytes(), 4, 3, "Mono8")
    assert rgb.shape == (3, 4, 3) and (rgb[:, :, 0] == mono).all()
    assert (to_rgb((mono.astype("<u2") << 8).tobytes(), 4, 3, "Mono16")[:, :, 1] == mono).all()
    bayer = np.zeros((4, 4), np.uint8)
    bayer[0::2, 0::2] = 200  # RGGB: the red sites
    red = to_rgb(bayer.tobytes(), 4, 4, "BayerRG8")
    assert red[..., 0].mean() > 100 and red[..., 2].mean() < 20
    with pytest.raises(ConfigError, match="pixel_format 'YUV422_8'"):
        to_rgb(bytes(32), 4, 4, "YUV422_8")


def test_harvesters_needs_a_producer_that_loads(station_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = station_config.model_dump(mode="json")
    data["camera"]["source"] = {"kind": "genicam", "genicam": {"producer": "harvesters"}}
    with pytest.raises(ConfigError, match=r"camera\.source\.genicam\.cti is required"):
        parse_config(data, environ={})
    data["camera"]["source"]["genicam"]["cti"] = str(tmp_path / "missing.cti")
    with pytest.raises(ConfigError, match="is not a file"):
        HarvestersSource(parse_config(data, environ={}).camera)
    bogus = tmp_path / "bogus.cti"
    bogus.write_bytes(b"not a GenTL producer")
    data["camera"]["source"]["genicam"]["cti"] = str(bogus)
    try:
        import harvesters.core  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailable, match="harvesters"):
            HarvestersSource(parse_config(data, environ={}).camera)
        return
    with pytest.raises(InspectorError, match=r"bogus\.cti does not load as a GenTL producer"):
        HarvestersSource(parse_config(data, environ={}).camera)


# -- against the fake GigE Vision camera ------------------------------------------------------------------


def test_100_frames_through_inspector_camera_give_100_verdicts(  # type: ignore[no-untyped-def]
    fake_camera, station_config, redis_client, tiny_package, tmp_path
) -> None:
    from inspector.worker import Worker, load_model

    cfg = _cfg(station_config, fps=20, pixel_format="Mono8", exposure_us=2000, gain_db=1.0)
    proc = _inspector_camera(_write(cfg, tmp_path / "cfg"), "--frames", "100")
    bus = StationBus(redis_client, cfg)
    worker = Worker(cfg, redis_client, load_model(cfg, tiny_package), name="w1")
    worker.run(max_frames=100, idle_exit_s=20)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out.decode(errors="replace")[-2000:]
    assert b"100 frames published, 0 not sent" in out
    frames = _frames(redis_client, bus)
    assert len(frames) == 100 and [f.seq for f in frames] == list(range(100))
    assert frames[0].width == 512 and frames[0].height == 512  # the fake camera's sensor
    verdicts = [decode_message(f[b"m"]) for _, f in redis_client.xrange(bus.names.verdicts)]
    assert len(verdicts) == 100 and {v.frame_id for v in verdicts} == {f.id for f in frames}


def test_software_trigger_gives_one_frame_per_trigger(fake_camera, station_config, redis_client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = _cfg(station_config, fps=20, trigger="software")
    src = open_genicam(cfg.camera)
    try:
        caps = [src.read() for _ in range(7)]
        assert src.triggers == 7 and src.frames == 7
        ids = [int(c.name.rsplit(" ", 1)[1]) for c in caps]  # the camera's own frame counter
        assert [(b - a) % 65535 for a, b in zip(ids, ids[1:], strict=False)] == [1] * 6, ids
        assert src.stream.timeout_pop_buffer(300_000) is None, "the camera sent a frame nobody triggered"
    finally:
        src.close()
    # the station process: N parts, N triggers, N frames with consecutive part ids
    n = 12
    proc = _inspector_camera(_write(cfg, tmp_path / "cfg"), "--frames", str(n))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out.decode(errors="replace")[-2000:]
    frames = _frames(redis_client, StationBus(redis_client, cfg))
    assert [f.seq for f in frames] == list(range(n))
    run = frames[0].part_id.rsplit("-", 1)[0]
    assert [f.part_id for f in frames] == [f"{run}-{i:07d}" for i in range(n)]


def test_hardware_trigger_waits_for_the_line(fake_camera, station_config) -> None:  # type: ignore[no-untyped-def]
    src = open_genicam(
        _cfg(station_config, fps=20, trigger="hardware", trigger_source="Line0", reconnect_after_s=0.2).camera
    )
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(src.read()), daemon=True)
    t.start()
    t.join(1.0)
    try:
        assert not got and src.reconnects == 0, "no line pulse: no frame, and waiting is not a lost camera"
    finally:
        src.closed.set()
        t.join(5)
        src.close()
    with pytest.raises(ConfigError, match=r"trigger_source 'Line7' is not offered.*\n.*Line0, Software"):
        open_genicam(_cfg(station_config, trigger="hardware", trigger_source="Line7").camera)


def test_lost_camera_raises_health_within_two_periods_and_resumes(  # type: ignore[no-untyped-def]
    fake_camera, station_config, redis_client, tmp_path
) -> None:
    fps = 10.0  # period 100 ms: the alarm is due 200 ms after the last frame
    cfg = _cfg(station_config, fps=fps)
    bus = StationBus(redis_client, cfg)
    proc = _inspector_camera(_write(cfg, tmp_path / "cfg"), log=tmp_path / "camera.log")
    try:
        deadline = time.monotonic() + 30
        while len(_frames(redis_client, bus)) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_frames(redis_client, bus)) >= 10, (tmp_path / "camera.log").read_text()[-2000:]
        fake_camera.stop()
        deadline = time.monotonic() + 5
        while (
            not (alarms := [e for e in _health(redis_client, bus) if e.severity == "critical"])
            and time.monotonic() < deadline
        ):
            time.sleep(0.01)
        assert alarms, "no camera-health event after the camera vanished"
        last = _frames(redis_client, bus)[-1]
        latency = alarms[0].ts - last.captured_at
        print(f"camera-health raised {latency * 1000:.0f} ms after the last frame (2 periods = {2000 / fps:.0f} ms)")
        assert latency <= 2 / fps + 0.02, f"camera-health after {latency:.3f} s"  # 2 periods + scheduling
        n_before = len(_frames(redis_client, bus))
        fake_camera.start()
        answered = time.time()
        deadline = time.monotonic() + 30
        while (
            not (back := [e for e in _health(redis_client, bus) if e.severity == "info"])
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert back, "camera never recovered"
        print(f"frames again {(back[0].ts - answered) * 1000:.0f} ms after the restarted camera answered")
        time.sleep(1.0)
        assert len(_frames(redis_client, bus)) >= n_before + 5, "frames did not resume"
        assert proc.poll() is None, "the camera process died with its camera"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_bad_camera_id_and_pixel_format_are_one_line_each(fake_camera, station_config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    for n, (genicam, expect) in enumerate(
        [
            (
                {"device_id": "no-such-camera"},
                "error: camera.source.genicam.device_id 'no-such-camera': no such camera",
            ),
            ({"pixel_format": "YUV422_8"}, "error: camera.source.genicam.pixel_format 'YUV422_8' is not offered"),
        ]
    ):
        cfg = _cfg(station_config, **genicam)
        proc = _inspector_camera(_write(cfg, tmp_path / f"cfg{n}"), "--frames", "1")
        out, _ = proc.communicate(timeout=60)
        text = out.decode(errors="replace").strip()
        assert proc.returncode == 2, text
        lines = [ln for ln in text.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and lines[0].startswith(expect) and "hint:" in lines[0], text
        assert "Traceback" not in text
        if n == 1:
            assert "Mono8" in lines[0] and "RGB8" in lines[0]  # the formats the camera does offer
