"""The verdict a worker publishes for one frame: from the models' output and the station's (or the frame's
product's) decision policy, or an ERROR verdict with its reason when the frame could not be judged. Pure: no
Redis, no counters; :class:`inspector.worker.Worker` publishes what these build."""

from __future__ import annotations

import time
from typing import cast

import numpy as np

from inspector.contracts.config import PolicySection, StationConfig
from inspector.contracts.messages import Decision, FrameMeta, Verdict
from inspector.decision import decide, line_rejects
from inspector.models.image_stats import image_stats
from inspector.models.inference import ModelOutput, heatmap_png


def policy_for(cfg: StationConfig, product: str | None) -> PolicySection:
    """The decision policy of a frame: its product's own policy where it has one, else the station's."""
    section = cfg.products.get(product) if product is not None else None
    return section.policy if section is not None and section.policy is not None else cfg.policy


def model_verdict(
    cfg: StationConfig, meta: FrameMeta, image: object, out: ModelOutput, model_version: str, worker: str
) -> Verdict:
    """The verdict of a frame the models judged: decide() under the frame's policy, with per-stage times, the
    image statistics for drift and the anomaly heatmap."""
    t0 = time.perf_counter()
    result = decide(out.class_probs, out.anomaly_score, policy_for(cfg, meta.product), out.classifier_decides)
    stage = {k: round(v, 3) for k, v in out.stage_ms.items()}
    stage["decide"] = round((time.perf_counter() - t0) * 1000, 3)
    stats = image_stats(cast(np.ndarray, image))  # Work.image: the decoded frame
    heat = heatmap_png(out.anomaly_map) if out.anomaly_map is not None else None
    return Verdict(
        station=meta.station,
        frame_id=meta.id,
        camera=meta.camera,
        seq=meta.seq,
        part_id=meta.part_id,
        captured_at=meta.captured_at,
        decision=result.decision,
        reject=result.reject,
        defect_class=result.defect_class,
        reasons=list(result.reasons),
        class_probs=out.class_probs,
        anomaly_score=out.anomaly_score,
        anomaly_raw=out.anomaly_raw,
        model_version=model_version,
        worker=worker,
        latency_ms=round((time.time() - meta.captured_at) * 1000, 3),
        stage_ms=stage,
        image_stats=stats,
        heatmap=heat,
        truth=meta.truth,
        product=meta.product,
        view=meta.view,
    )


def error_verdict(cfg: StationConfig, meta: FrameMeta, reason: str, model_version: str, worker: str) -> Verdict:
    """The ERROR verdict of a frame that could not be judged (``reason`` says why); the line rejects it unless
    the policy says otherwise."""
    return Verdict(
        station=meta.station,
        frame_id=meta.id,
        camera=meta.camera,
        seq=meta.seq,
        part_id=meta.part_id,
        captured_at=meta.captured_at,
        decision=Decision.ERROR,
        reject=line_rejects(Decision.ERROR, cfg.policy),
        reasons=[reason],
        error=reason,
        model_version=model_version,
        worker=worker,
        latency_ms=round((time.time() - meta.captured_at) * 1000, 3),
        truth=meta.truth,
        product=meta.product,
        view=meta.view,
    )
