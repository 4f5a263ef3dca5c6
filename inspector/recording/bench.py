"""Benchmark of verdict recording: verdicts/s from a real Redis stream into the database, through the
``VerdictRecorder`` (read with the consumer group, decode, batched idempotent insert, XACK).

    python -m inspector.recording.bench [N] [--db URL] [--redis URL]

Without ``--redis`` an embedded redis-server is started in a temporary folder; without ``--db`` SQLite
(WAL, synchronous=FULL) in that folder. PostgreSQL runs in a fresh schema, dropped afterwards.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

from inspector.bus.connection import EmbeddedRedis, client_for_url
from inspector.contracts.config import parse_config
from inspector.contracts.names import STREAM_FIELD_MESSAGE, Names
from inspector.recording.recorder import VerdictRecorder
from inspector.store.db import open_store
from inspector.store.fakes import make_verdict
from inspector.store.testing import drop_schema


def bench_recording(
    n: int = 5000, db_url: str | None = None, redis_url: str | None = None, batch_size: int = 200
) -> float:
    """Record ``n`` verdicts published on a real Redis stream; returns verdicts per second."""
    with tempfile.TemporaryDirectory() as tmp:
        server = None
        if redis_url is None:
            server = EmbeddedRedis(Path(tmp), appendfsync="everysec")
            redis_url = server.start()
        station = f"bench{uuid.uuid4().hex[:8]}"
        cfg = parse_config(
            {
                "station": {"id": station, "data_dir": tmp},
                "redis": {"url": redis_url},
                "store": {"batch_size": batch_size},
            },
            environ={},
        )
        schema = f"bench_{uuid.uuid4().hex[:8]}" if db_url and db_url.startswith("postgresql") else None
        store = open_store(db_url or str(Path(tmp) / "station.db"), schema=schema)
        client = client_for_url(redis_url)
        try:
            names = Names(cfg.redis.prefix, station)
            pipe = client.pipeline(transaction=False)
            for i in range(n):
                pipe.xadd(names.verdicts, {STREAM_FIELD_MESSAGE: make_verdict(station, i).to_json()})
            pipe.execute()
            recorder = VerdictRecorder(cfg, client, store, "bench")
            start = time.perf_counter()
            recorder.drain()
            elapsed = time.perf_counter() - start
            client.delete(names.verdicts)
        finally:
            client.close()
            store.close()
            if schema and db_url:
                drop_schema(db_url, schema)
            if server:
                server.stop()
        return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("n", type=int, nargs="?", default=5000)
    parser.add_argument("--db", default=None, help="SQLAlchemy URL (default: SQLite in a temp folder)")
    parser.add_argument("--redis", default=None, help="Redis URL (default: embedded redis-server)")
    parser.add_argument("--batch-size", type=int, default=200)
    args = parser.parse_args()
    rate = bench_recording(args.n, args.db, args.redis, args.batch_size)
    print(f"recorded {args.n} verdicts at {rate:,.0f} verdicts/s ({args.db or 'sqlite'})")


if __name__ == "__main__":
    main()
