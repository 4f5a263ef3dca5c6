"""The station's single owner (data folder lock, fixed-port embedded Redis, adoption) and the restart policy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from inspector.bus.connection import EmbeddedRedis, StationLock, _ping, embedded_url
from inspector.contracts.config import SupervisorSection
from inspector.contracts.errors import TransportError
from inspector.station.supervisor import RestartPolicy, describe_exit

REPO = Path(__file__).resolve().parents[2]


def test_lock_is_exclusive_across_processes_and_dropped_by_a_kill(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from inspector.bus.connection import StationLock; "
            f"l = StationLock({str(tmp_path)!r}); assert l.try_acquire(); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
        lock = StationLock(tmp_path)
        assert not lock.try_acquire()
        assert f"pid {holder.pid}" in lock.holder()
        with pytest.raises(TransportError, match=f"pid {holder.pid}"):
            lock.acquire(wait_s=0.3)
        holder.send_signal(signal.SIGKILL)  # a power cut: the kernel drops the lock with its owner
        holder.wait(10)
        lock.acquire(wait_s=5)
        assert lock.held and f"pid {os.getpid()}" in lock.holder()
        lock.release()
    finally:
        holder.kill()
        holder.wait(10)


def test_restarted_server_keeps_its_url_and_an_orphan_is_adopted_not_doubled(tmp_path: Path) -> None:
    first = EmbeddedRedis(tmp_path)
    url = first.start()
    try:
        assert embedded_url(tmp_path) == url
        first.lock.release()  # its owner "died" (kill -9 of the owner alone): the server runs on, unowned
        second = EmbeddedRedis(tmp_path)
        assert second.start() == url
        assert second.proc is None and second.pid == first.pid, "the running server is adopted, not doubled"
        with pytest.raises(TransportError, match="in use by another process"):
            EmbeddedRedis(tmp_path).start()  # a second owner is refused while one holds the folder
        second.stop()
        assert not _ping(url)
        third = EmbeddedRedis(tmp_path)
        assert third.start() == url, "a restarted server comes back on the same URL"
        third.stop()
    finally:
        first.kill()


def test_backoff_doubles_resets_after_a_healthy_run_and_the_rate_is_limited() -> None:
    policy = RestartPolicy(
        SupervisorSection(
            restart_initial_s=0.5, restart_max_s=4, restart_limit=5, restart_window_s=60, healthy_after_s=10
        )
    )
    delays = [policy.next_delay(uptime_s=1, now=t) for t in range(4)]
    assert delays == [0.5, 1.0, 2.0, 4.0]
    assert policy.next_delay(uptime_s=30, now=4) == 0.5  # it ran long enough: backoff starts afresh
    assert policy.next_delay(uptime_s=1, now=5) is None  # 5 restarts within 60 s: left failed
    assert policy.next_delay(uptime_s=1, now=70) == 0.5  # the window moved on


def test_exit_descriptions() -> None:
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(3) == "exit code 3"
