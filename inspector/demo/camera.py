"""The demo's camera process: ``python -m inspector.demo.camera --config FILE --go FILE --report FILE [--frames N]``.

The station supervisor runs it in the place of ``inspector camera``. It connects to the station's Redis, waits
until the demo has seen every reader come up (the demo writes the ``--go`` file), streams the configured
camera (N frames, or until SIGTERM), and keeps ``--report`` up to date with the frames it published. After N
frames it stays idle until SIGTERM, so the supervisor does not start a second run of parts.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
from pathlib import Path

from inspector.bus.connection import client_for_url, open_station_client, station_url
from inspector.bus.streams import StationBus
from inspector.camera.publisher import CameraPublisher
from inspector.camera.sources import open_source
from inspector.contracts.config import load_config


def write_report(path: Path, published: int, not_sent: int, done: bool) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"published": published, "not_sent": not_sent, "done": done, "pid": os.getpid()}))
    os.replace(tmp, path)


def read_report(path: Path) -> dict[str, int | bool]:
    """The camera's last report: ``published``, ``not_sent``, ``done`` (zeros before its first frame)."""
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {"published": 0, "not_sent": 0, "done": False}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m inspector.demo.camera", description=__doc__)
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--go", type=Path, required=True, help="start streaming once this file exists")
    ap.add_argument("--report", type=Path, required=True, help="JSON file with the frames published so far")
    ap.add_argument("--frames", type=int, default=None, help="publish N frames, then stay idle until SIGTERM")
    args = ap.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    cfg = load_config(args.config)
    open_station_client(cfg).close()  # waits until the station's Redis answers
    fast = cfg.model_copy(deep=True)  # as `inspector camera`: never wait on Redis longer than a few frame periods
    fast.redis.reconnect.give_up_s = max(0.2, 3 / cfg.camera.fps)
    pub = CameraPublisher(StationBus(client_for_url(station_url(cfg), fast.redis), cfg), open_source(cfg.camera))
    while not args.go.exists() and not stop.wait(0.05):
        pass
    if stop.is_set():
        return 0
    runner = threading.Thread(target=pub.run, kwargs={"max_frames": args.frames}, name="camera", daemon=True)
    runner.start()
    while runner.is_alive():
        write_report(args.report, pub.seq, pub.not_sent, False)
        if stop.wait(0.2):
            pub.stop()
            runner.join(5)
    write_report(args.report, pub.seq, pub.not_sent, True)
    while not stop.wait(0.5):  # idle: a camera that exits would be restarted by the supervisor
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
