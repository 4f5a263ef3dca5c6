"""Synthetic verdicts for tests, benchmarks and the demo."""

from __future__ import annotations

import random

from inspector.contracts.messages import Decision, Verdict, new_id, now


def make_verdict(
    station: str,
    seq: int = 0,
    decision: Decision = Decision.PASS,
    rng: random.Random | None = None,
    **overrides: object,
) -> Verdict:
    rng = rng or random.Random(seq)
    good = rng.uniform(0.5, 1.0)
    fields: dict[str, object] = dict(
        station=station,
        frame_id=new_id(),
        camera="cam0",
        seq=seq,
        part_id=f"P{seq:08d}",
        captured_at=now(),
        decision=decision,
        reject=decision != Decision.PASS,
        class_probs={"good": good, "scratch": 1 - good},
        anomaly_score=rng.uniform(0.1, 1.5),
        anomaly_raw=rng.uniform(0.1, 3.0),
        model_version="m1",
        worker="w0",
        latency_ms=rng.uniform(5, 50),
        reasons=[],
    )
    fields.update(overrides)
    return Verdict.model_validate(fields)
