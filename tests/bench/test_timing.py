"""The timing regimes of ``inspector bench`` and the precision gate: warm turns, and paced frames."""

from __future__ import annotations

import time
from collections.abc import Callable

from inspector.bench.timing import interleaved
from trainer.quantize import GATE_TURN_FRAMES, time_in_turns


def _recorder(log: list[tuple[str, float]], name: str) -> Callable[[], None]:
    return lambda: log.append((name, time.perf_counter()))


def test_warm_turns_run_each_function_block_times_in_a_row_and_time_all_but_the_first() -> None:
    log: list[tuple[str, float]] = []
    res = interleaved({"a": _recorder(log, "a"), "b": _recorder(log, "b")}, runs=8, warmup=0, block=5)
    names = [n for n, _ in log]
    assert names[:10] == ["a"] * 5 + ["b"] * 5  # a turn is 5 frames of one function, then the other's turn
    assert res["a"]["n"] == res["b"]["n"] == 8  # 2 turns of 4 timed frames


def test_paced_frames_wait_the_camera_gap_before_every_timed_frame() -> None:
    log: list[tuple[str, float]] = []
    interleaved({"a": _recorder(log, "a")}, runs=6, warmup=0, block=4, gap_s=0.02)
    stamps = [t for _, t in log]
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    timed = [g for k, g in enumerate(gaps) if (k + 1) % 4 != 0]  # the first frame of a turn refills, untimed
    assert timed and min(timed) >= 0.02


def test_the_precision_gate_times_every_candidate_in_warm_turns() -> None:
    log: list[tuple[str, float]] = []
    times = time_in_turns([_recorder(log, "fp32"), _recorder(log, "bf16")], runs=8, warmup=0)
    names = [n for n, _ in log]
    assert names[:GATE_TURN_FRAMES] == ["fp32"] * GATE_TURN_FRAMES and len(times) == 2
