"""The station supervisor: one owner for a station's processes, as a watchdog (Frigate's) or systemd does it.

It takes the data folder's lock (:class:`inspector.bus.connection.StationLock`), starts the embedded Redis
first (or checks the external one), then the configured children in start order. A child that exits is
restarted after a doubling backoff, and left failed once it restarted ``restart_limit`` times within
``restart_window_s``; Redis is watched the same way and comes back on its fixed URL. SIGTERM (or SIGINT)
stops the children stage by stage (camera, workers, then the rest) and Redis last, all within
``stop_timeout_s``: what has not exited by its stage's share of the time is SIGKILLed with its process group.
One line per start, exit, restart and stop goes to stdout (journald under systemd); the process table is
also written to ``<data_dir>/supervisor.json``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from inspector.bus.connection import EmbeddedRedis, StationLock, client_for_url, masked_url, station_url, wait_until_up
from inspector.contracts.config import StationConfig, SupervisorSection
from inspector.contracts.errors import InspectorError
from inspector.contracts.processes import STOP_STAGES, ProcessState
from inspector.station.processes import ProcessSpec, plan

STATE_FILE = "supervisor.json"
POLL_S = 0.1
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM if the supervisor dies (a kill -9 must not leave a second camera behind)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def describe_exit(rc: int) -> str:
    """``exit code 3`` or ``killed by SIGKILL``."""
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit code {rc}"


@dataclass
class RestartPolicy:
    """Doubling backoff from ``restart_initial_s`` to ``restart_max_s``, started afresh after ``healthy_after_s``
    of uptime; at most ``restart_limit`` restarts within ``restart_window_s``."""

    section: SupervisorSection
    restarts: deque[float] = field(default_factory=deque)
    quick_exits: int = 0

    def next_delay(self, uptime_s: float, now: float) -> float | None:
        """Delay before the next start, or None when the restart-rate limit is reached (leave it failed)."""
        s = self.section
        while self.restarts and now - self.restarts[0] > s.restart_window_s:
            self.restarts.popleft()
        if len(self.restarts) >= s.restart_limit:
            return None
        self.quick_exits = 0 if uptime_s >= s.healthy_after_s else self.quick_exits + 1
        self.restarts.append(now)
        return min(s.restart_max_s, s.restart_initial_s * 2 ** max(0, self.quick_exits - 1))


@dataclass
class Child:
    spec: ProcessSpec
    policy: RestartPolicy
    proc: subprocess.Popen[bytes] | None = None
    state: ProcessState = ProcessState.STOPPED
    started_at: float = 0.0
    start_at: float = 0.0
    starts: int = 0
    last_exit: str = ""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None


class Supervisor:
    def __init__(
        self,
        cfg: StationConfig,
        config: Path | None,
        say: Callable[[str], None] | None = None,
        specs: list[ProcessSpec] | None = None,
        child_output: Path | None = None,
    ) -> None:
        """``specs`` replaces the process table planned from ``cfg`` (the demo runs its own camera command);
        ``child_output`` appends the children's stdout and stderr to that file instead of inheriting them."""
        self.cfg = cfg
        self.section = cfg.supervisor
        self.data_dir = Path(cfg.station.data_dir).resolve()
        self.lock = StationLock(self.data_dir)
        self.redis: EmbeddedRedis | None = None
        self.redis_policy = RestartPolicy(self.section)
        self.redis_next_start: float | None = None
        self.redis_started_at = 0.0
        self.children = [
            Child(spec, RestartPolicy(self.section)) for spec in (plan(cfg, config) if specs is None else specs)
        ]
        self.child_output = child_output
        self.stop_event = threading.Event()
        self.signal_name: str | None = None
        self._say = say or (lambda line: print(line, flush=True))

    def say(self, line: str) -> None:
        self._say(f"station {self.cfg.station.id}: {line}")

    # ------------------------------------------------------------------ run
    def run(self) -> int:
        """Run until SIGTERM / SIGINT (or ``stop_event``); returns the exit status (0 after a clean stop)."""
        self._install_signals()
        self.lock.acquire(
            self.section.lock_wait_s,
            on_wait=lambda holder: self.say(
                f"waiting up to {self.section.lock_wait_s:.0f} s for the data folder lock {self.lock.path} ({holder})"
            ),
        )
        self.say(f"supervisor pid {os.getpid()} holds {self.lock.path}")
        try:
            self._start_redis()
            for child in self.children:
                if self.stop_event.is_set():
                    break
                self._spawn(child)
            self._write_state()
            while not self.stop_event.wait(POLL_S):
                self._watch()
        finally:
            self.shutdown()
            self.lock.release()
        return 0

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum: int, _frame: object) -> None:  # only flags: printing here could re-enter stdout
            self.signal_name = self.signal_name or signal.Signals(signum).name
            self.stop_event.set()

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, handler)

    # ------------------------------------------------------------------ redis
    def _start_redis(self) -> None:
        if self.cfg.redis.url or self.cfg.redis.sentinel:  # external (Sentinel: the master the sentinels name)
            url = station_url(self.cfg)
            client = client_for_url(url, self.cfg.redis)
            wait_until_up(client, self.cfg.redis.reconnect.give_up_s)
            client.close()
            self.say(f"redis: external server at {masked_url(url)} answers")
            return
        self.redis = EmbeddedRedis(self.data_dir, self.cfg.redis.appendfsync, lock=self.lock)
        url = self.redis.start()
        self.redis_started_at = time.monotonic()
        self.say(f"redis: running at {masked_url(url)} (pid {self.redis.pid}, data in {self.redis.dir})")

    def _watch_redis(self, now: float) -> None:
        if self.redis is None:
            return
        if self.redis_next_start is None:
            if self.redis.alive():
                return
            rc = self.redis.proc.returncode if self.redis.proc is not None else None
            delay = self.redis_policy.next_delay(now - self.redis_started_at, now)
            exit_text = describe_exit(rc) if rc is not None else "gone"
            if delay is None:  # keep trying at the longest backoff: without Redis nothing works
                delay = self.section.restart_max_s
            self.say(
                f"redis: exited ({exit_text}) after {now - self.redis_started_at:.1f} s; restart in {delay:.1f} s "
                f"on the same URL"
            )
            self.redis_next_start = now + delay
            self._write_state()
            return
        if now >= self.redis_next_start:
            try:
                assert self.redis is not None
                url = self.redis.start()
            except InspectorError as err:
                self.say(f"redis: restart failed: {err.message}")
                self.redis_next_start = now + self.section.restart_max_s
                return
            self.redis_next_start = None
            self.redis_started_at = time.monotonic()
            self.say(f"redis: restarted at {masked_url(url)} (pid {self.redis.pid})")
            self._write_state()

    # ------------------------------------------------------------------ children
    def _spawn(self, child: Child) -> None:
        out = open(self.child_output, "ab") if self.child_output is not None else None  # noqa: SIM115
        try:
            child.proc = subprocess.Popen(
                list(child.spec.argv),
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                stdout=out,
                stderr=subprocess.STDOUT if out is not None else None,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        finally:
            if out is not None:
                out.close()
        child.started_at = time.monotonic()
        child.state = ProcessState.RUNNING
        child.starts += 1
        verb = "started" if child.starts == 1 else "restarted"
        self.say(f"{child.spec.name}: {verb} (pid {child.proc.pid})")

    def _watch(self) -> None:
        now = time.monotonic()
        self._watch_redis(now)
        changed = False
        for child in self.children:
            if child.state is ProcessState.RUNNING and child.proc is not None and child.proc.poll() is not None:
                changed = True
                _kill_group(child.proc.pid)  # anything it left behind (an RQ work horse) goes with it
                uptime = now - child.started_at
                child.last_exit = describe_exit(child.proc.returncode)
                delay = child.policy.next_delay(uptime, now)
                if delay is None:
                    child.state = ProcessState.FAILED
                    self.say(
                        f"{child.spec.name}: exited ({child.last_exit}) after {uptime:.1f} s; restarted "
                        f"{self.section.restart_limit} times within {self.section.restart_window_s:.0f} s: "
                        "left failed (restart the station once the cause is fixed)"
                    )
                    continue
                child.state, child.start_at = ProcessState.BACKOFF, now + delay
                self.say(
                    f"{child.spec.name}: exited ({child.last_exit}) after {uptime:.1f} s; restart in {delay:.1f} s"
                )
            elif child.state is ProcessState.BACKOFF and now >= child.start_at:
                changed = True
                self._spawn(child)
        if changed:
            self._write_state()

    # ------------------------------------------------------------------ stop
    def shutdown(self) -> None:
        """Stop the children stage by stage, then Redis, within ``stop_timeout_s`` in all."""
        t0 = time.monotonic()
        self.say(
            f"{self.signal_name or 'stop'}: stopping (camera, workers, the rest, Redis last; "
            f"bound {self.section.stop_timeout_s:.0f} s)"
        )
        deadline = t0 + self.section.stop_timeout_s
        redis_share = min(3.0, self.section.stop_timeout_s * 0.25) if self.redis is not None else 0.0
        stages = [[c for c in self.children if c.spec.kind in kinds] for kinds in STOP_STAGES]
        stages = [s for s in stages if s]
        for i, stage in enumerate(stages):
            for child in stage:
                if child.state is ProcessState.BACKOFF:
                    child.state = ProcessState.STOPPED
            running = [c for c in stage if c.pid is not None]
            for child in running:
                child.state = ProcessState.STOPPING
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.proc.pid, signal.SIGTERM)  # type: ignore[union-attr]
            left = deadline - redis_share - time.monotonic()
            self._reap(running, time.monotonic() + max(0.0, left / (len(stages) - i)))
        if self.redis is not None:
            pid = self.redis.pid
            self.redis.stop(timeout=max(0.5, deadline - time.monotonic()))
            self.say(f"redis: stopped (pid {pid})")
        self._write_state()
        self.say(f"stopped in {time.monotonic() - t0:.1f} s")

    def _reap(self, children: list[Child], until: float) -> None:
        pending = list(children)
        while pending:
            for child in list(pending):
                assert child.proc is not None
                if child.proc.poll() is not None:
                    _kill_group(child.proc.pid)
                    child.state = ProcessState.STOPPED
                    self.say(f"{child.spec.name}: stopped ({describe_exit(child.proc.returncode)})")
                    pending.remove(child)
            if pending and time.monotonic() >= until:
                for child in pending:
                    assert child.proc is not None
                    _kill_group(child.proc.pid)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        child.proc.wait(2)
                    child.state = ProcessState.STOPPED
                    self.say(f"{child.spec.name}: did not stop in time: killed")
                return
            time.sleep(0.02)

    # ------------------------------------------------------------------ state
    def table(self) -> dict[str, object]:
        redis_state: dict[str, object] = (
            {"external": masked_url(station_url(self.cfg))}
            if self.redis is None
            else {
                "pid": self.redis.pid,
                "url": self.redis.url,
                "state": (ProcessState.RUNNING if self.redis.alive() else ProcessState.BACKOFF).value,
            }
        )
        return {
            "pid": os.getpid(),
            "station": self.cfg.station.id,
            "redis": redis_state,
            "processes": {
                c.spec.name: {
                    "kind": c.spec.kind.value,
                    "state": c.state.value,
                    "pid": c.pid,
                    "starts": c.starts,
                    "last_exit": c.last_exit,
                }
                for c in self.children
            },
        }

    def _write_state(self) -> None:
        path = self.data_dir / STATE_FILE
        tmp = path.with_name(f".{path.name}.tmp")
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(self.table(), indent=1))
            os.replace(tmp, path)


def _kill_group(pid: int) -> None:
    """SIGKILL a child's process group (each child leads its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
