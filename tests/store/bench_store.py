"""Verdict recording benchmark (run by hand, not collected): ``python tests/store/bench_store.py [N]``.
Prints verdicts/s on SQLite, and on PostgreSQL when DATABASE_URL is set."""

from __future__ import annotations

import os
import sys

from inspector.recording.bench import bench_recording

if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    redis_url = os.environ.get("REDIS_URL")
    print(f"sqlite:     {bench_recording(n, None, redis_url):,.0f} verdicts/s")
    if os.environ.get("DATABASE_URL"):
        print(f"postgresql: {bench_recording(n, os.environ['DATABASE_URL'], redis_url):,.0f} verdicts/s")
