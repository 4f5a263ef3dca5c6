"""The URL camera source (kind: url) against a real RTSP server on 127.0.0.1.

The server is GStreamer's RTSP server (Debian gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-good) in its own
process, serving an MJPEG video of synthetic parts that the test writes with OpenCV; OpenCV's FFmpeg backend (the
shipped opencv-python-headless) reads rtsp://. Run the server by hand: ``python -m tests.camera.test_rtsp VIDEO PORT``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.camera.sources import OpenCVSource
from inspector.camera.synthetic import PartFactory

REPO = Path(__file__).resolve().parents[2]
HINT = (
    "apt-get install gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-base and "
    "pip install 'PyGObject<3.51' (the genicam extra)"
)
FPS = 20


def _gst_rtsp_or_skip() -> None:
    try:
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import Gst

        Gst.init(None)
        missing = [
            e for e in ("filesrc", "avidemux", "jpegdec", "jpegenc", "rtpjpegpay") if Gst.ElementFactory.find(e) is None
        ]
    except (ImportError, ValueError) as err:
        pytest.skip(f"GStreamer's RTSP server for Python is not installed: {HINT} ({err})")
    if missing:
        pytest.skip(f"GStreamer elements {missing} missing: {HINT}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_parts_video(path: Path, n: int, seed: int = 4) -> list[np.ndarray]:
    """An MJPEG .avi of ``n`` synthetic parts (RGB frames returned as written)."""
    f = PartFactory(seed=seed)
    frames = [f.make(f.sample_kind(0.3)) for _ in range(n)]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (224, 224))
    for rgb in frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return frames


@pytest.fixture
def rtsp_url(tmp_path: Path) -> Iterator[tuple[str, list[np.ndarray]]]:
    _gst_rtsp_or_skip()
    video = tmp_path / "parts.avi"
    frames = write_parts_video(video, 60)
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.camera.test_rtsp", str(video), str(port)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    assert line.startswith("rtsp://"), line + proc.stdout.read().decode(errors="replace")
    yield line.strip(), frames
    proc.terminate()
    proc.wait(10)


def test_opencv_reads_parts_from_an_rtsp_server(rtsp_url) -> None:  # type: ignore[no-untyped-def]
    url, sent = rtsp_url
    src = OpenCVSource(url)  # what open_source() builds for camera.source.kind url
    try:
        got = [c.image for c in (src.read() for _ in range(40)) if c is not None]
    finally:
        src.close()
    assert len(got) == 40 and got[0].shape == (224, 224, 3)
    # each received frame is one of the parts sent (MJPEG passes through: only JPEG noise differs)
    ref = np.stack(sent)[:, ::2, ::2].astype(np.int16)
    errs = [float(np.abs(ref - g[::2, ::2].astype(np.int16)).mean(axis=(1, 2, 3)).min()) for g in got]
    assert max(errs) < 4.0, errs


def test_inspector_camera_streams_rtsp_into_the_station(  # type: ignore[no-untyped-def]
    rtsp_url, station_config, redis_client, tiny_package, tmp_path
) -> None:
    import yaml

    from inspector.bus.streams import StationBus, decode_message
    from inspector.contracts.config import parse_config
    from inspector.worker import Worker, load_model

    url, _ = rtsp_url
    data = station_config.model_dump(mode="json")
    data["camera"].update(fps=FPS, source={"kind": "url", "url": url})
    cfg = parse_config(data, environ={})
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-m", "inspector.cli", "camera", "--config", str(path), "--frames", "30"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    Worker(cfg, redis_client, load_model(cfg, tiny_package), name="w1").run(max_frames=30, idle_exit_s=20)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and b"30 frames published" in out, out.decode(errors="replace")[-2000:]
    bus = StationBus(redis_client, cfg)
    verdicts = [decode_message(f[b"m"]) for _, f in redis_client.xrange(bus.names.verdicts)]
    assert len(verdicts) == 30


def serve(video: str, port: int) -> None:
    """Serve ``video`` (MJPEG .avi) at rtsp://127.0.0.1:PORT/parts, from its start for each client, until killed."""
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f'( filesrc location="{video}" ! avidemux ! jpegdec ! videoconvert ! jpegenc quality=90 ! rtpjpegpay name=pay0 pt=26 )'
    )
    server.get_mount_points().add_factory("/parts", factory)
    server.attach(None)
    print(f"rtsp://127.0.0.1:{port}/parts", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
