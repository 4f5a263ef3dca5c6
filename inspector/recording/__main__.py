"""``python -m inspector.recording --config station.yaml [--name NAME]``: the recorders as their own process.

The verdict recorder (and the part recorder when ``parts.views`` is set) and the retention pass, the same
consumers a worker process runs in threads (``worker --record``), for a station whose supervisor runs
``recorder`` in ``supervisor.processes``. Give it a stable ``--name`` (the supervisor does): a restarted
recorder re-reads the entries it left pending. SIGTERM / SIGINT: flush what is held, then exit.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from inspector.bus.connection import join_station
from inspector.bus.consumer import default_consumer_name
from inspector.contracts.config import load_config
from inspector.contracts.errors import InspectorError
from inspector.recording.part_recorder import PartRecorder
from inspector.recording.recorder import VerdictRecorder
from inspector.store import open_store
from inspector.store.retention import start_retention

log = logging.getLogger("inspector.recording")


def run_recorders(config: Path | None, name: str | None, stop: threading.Event) -> None:
    """Run the recorders until ``stop``; returns once they have flushed."""
    cfg = load_config(config)
    client = join_station(cfg)
    consumer = name or default_consumer_name("recorder")
    store = open_store(cfg, lazy=True)
    consumers: list[VerdictRecorder] = [VerdictRecorder(cfg, client, store, consumer)]
    if cfg.parts.views:
        consumers.append(PartRecorder(cfg, client, store, consumer))
    threads = [threading.Thread(target=c.run, args=(stop,), name=c.role.value, daemon=True) for c in consumers]
    for t in threads:
        t.start()
    stop_retention = start_retention(cfg, client, store)
    stop.wait()
    stop_retention()
    for t in threads:
        t.join(cfg.store.stop_timeout_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inspector.recording", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", type=Path, default=None, help="Station YAML (default: built-in defaults and the environment)."
    )
    parser.add_argument("--name", default=None, help="Consumer name (default recorder-<host>-<pid>).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: stop.set())
    try:
        run_recorders(args.config, args.name, stop)
    except InspectorError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
