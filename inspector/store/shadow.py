"""Shadow verdicts in the store, and the report that compares a candidate with the active model on live frames.

The report is computed from the rows alone (``shadow_verdicts`` joined with ``verdicts`` on ``frame_id``), so a
recount from the store gives the same figures. A frame counts as compared when both the candidate and the
active model judged it; the active side may be any active version (a promotion during the shadow period
shows as several versions in ``active_versions``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from inspector.store.db import Store
from inspector.store.models import ShadowVerdictRow, VerdictRow
from inspector.store.records import insert_ignore

SHADOW_TABLE = ShadowVerdictRow.__table__


def record_shadow_verdicts(store: Store, rows: Sequence[dict[str, Any]]) -> int:
    """Insert shadow rows (idempotent by version and frame id); returns how many were new."""
    if not rows:
        return 0
    with store.session() as s:
        result = s.execute(insert_ignore(s, SHADOW_TABLE, "version", "frame_id"), list(rows))
        return max(result.rowcount or 0, 0)


def set_shadow_image(store: Store, version: str, frame_id: str, sha256: str, ext: str) -> None:
    with store.session() as s:
        s.execute(
            update(ShadowVerdictRow)
            .where(ShadowVerdictRow.version == version, ShadowVerdictRow.frame_id == frame_id)
            .values(image_sha256=sha256, image_ext=ext)
        )


def differing_without_image(store: Store, version: str, frame_ids: Sequence[str]) -> list[str]:
    """Those of ``frame_ids`` whose active verdict is recorded and differs in line outcome, with no image yet."""
    if not frame_ids:
        return []
    with store.session() as s:
        q = (
            select(ShadowVerdictRow.frame_id)
            .join(VerdictRow, VerdictRow.frame_id == ShadowVerdictRow.frame_id)
            .where(
                ShadowVerdictRow.version == version,
                ShadowVerdictRow.frame_id.in_(list(frame_ids)),
                ShadowVerdictRow.image_sha256.is_(None),
                (ShadowVerdictRow.reject != VerdictRow.reject) | (ShadowVerdictRow.decision != VerdictRow.decision),
            )
        )
        return list(s.scalars(q))


def images_saved(store: Store, version: str) -> int:
    with store.session() as s:
        return int(
            s.scalar(
                select(func.count())
                .select_from(ShadowVerdictRow)
                .where(ShadowVerdictRow.version == version, ShadowVerdictRow.image_sha256.is_not(None))
            )
            or 0
        )


class Difference(BaseModel):
    model_config = ConfigDict(extra="forbid")
    frame_id: str
    part_id: str
    captured_at: float
    active_decision: str
    active_class: str | None
    active_version: str | None
    shadow_decision: str
    shadow_class: str | None
    image_sha256: str | None = None
    image_ext: str | None = None


class ShadowReport(BaseModel):
    """How a candidate judged live frames beside the active model."""

    model_config = ConfigDict(extra="forbid")
    version: str
    judged: int = Field(description="Frames the candidate judged (shadow rows).")
    compared: int = Field(description="Of those, frames the active model judged too (joined on frame id).")
    decision_agreement: float | None = Field(description="Share of compared frames with the same decision.")
    line_agreement: float | None = Field(
        description="Share of compared frames with the same line outcome (reject or not)."
    )
    confusion: dict[str, dict[str, int]] = Field(description="active decision -> candidate decision -> frames.")
    active_versions: dict[str, int] = Field(description="Active model versions of the compared frames.")
    shadow_errors: int
    candidate_infer_ms: dict[str, float] = Field(description="p50/p99 of the candidate's model time per frame.")
    candidate_latency_ms: dict[str, float] = Field(description="p50/p99 capture to the candidate's decision.")
    active_latency_ms: dict[str, float] = Field(description="p50/p99 capture to the active decision, same frames.")
    first_at: float | None
    last_at: float | None
    differences: list[Difference] = Field(description="The most recent frames where the two differ.")

    @property
    def differing(self) -> int:
        return self.compared - sum(self.confusion.get(d, {}).get(d, 0) for d in self.confusion)


def _pcts(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    arr = np.asarray(values, float)
    return {
        "p50": round(float(np.percentile(arr, 50)), 3),
        "p99": round(float(np.percentile(arr, 99)), 3),
        "n": len(arr),
    }


def shadow_report(store: Store, version: str, max_differences: int = 50) -> ShadowReport:
    """Agreement, confusion, latencies and the differing frames of ``version`` in shadow, from the store."""
    with store.session() as s:
        judged, errors, span = _shadow_counts(s, version)
        shadow_only = list(
            s.execute(
                select(ShadowVerdictRow.infer_ms, ShadowVerdictRow.latency_ms).where(
                    ShadowVerdictRow.version == version
                )
            )
        )
        pairs = _paired_verdicts(s, version)
    tally = _compare_pairs(pairs)
    n = len(pairs)
    return ShadowReport(
        version=version,
        judged=judged,
        compared=n,
        decision_agreement=round(tally.same_decision / n, 6) if n else None,
        line_agreement=round(tally.same_line / n, 6) if n else None,
        confusion={a: dict(c) for a, c in sorted(tally.confusion.items())},
        active_versions=dict(tally.versions),
        shadow_errors=errors,
        candidate_infer_ms=_pcts([r[0] for r in shadow_only if r[0] is not None]),
        candidate_latency_ms=_pcts([r[1] for r in shadow_only if r[1] is not None]),
        active_latency_ms=_pcts(tally.active_latency),
        first_at=span[0],
        last_at=span[1],
        differences=tally.differences[-max_differences:][::-1],
    )


def _shadow_counts(s: Session, version: str) -> tuple[int, int, Sequence[Any]]:
    """Frames the candidate judged, its errors, and the (first, last) capture time of its shadow rows."""
    judged = int(
        s.scalar(select(func.count()).select_from(ShadowVerdictRow).where(ShadowVerdictRow.version == version)) or 0
    )
    span = s.execute(
        select(func.min(ShadowVerdictRow.captured_at), func.max(ShadowVerdictRow.captured_at)).where(
            ShadowVerdictRow.version == version
        )
    ).one()
    errors = int(
        s.scalar(
            select(func.count())
            .select_from(ShadowVerdictRow)
            .where(ShadowVerdictRow.version == version, ShadowVerdictRow.decision == "ERROR")
        )
        or 0
    )
    return judged, errors, span


def _paired_verdicts(s: Session, version: str) -> list[Sequence[Any]]:
    """The candidate's shadow rows joined with the active verdicts of the same frames, oldest first."""
    return list(
        s.execute(
            select(
                ShadowVerdictRow.frame_id,
                ShadowVerdictRow.part_id,
                ShadowVerdictRow.captured_at,
                ShadowVerdictRow.decision,
                ShadowVerdictRow.reject,
                ShadowVerdictRow.defect_class,
                ShadowVerdictRow.image_sha256,
                ShadowVerdictRow.image_ext,
                VerdictRow.decision,
                VerdictRow.reject,
                VerdictRow.defect_class,
                VerdictRow.model_version,
                VerdictRow.latency_ms,
            )
            .join(VerdictRow, VerdictRow.frame_id == ShadowVerdictRow.frame_id)
            .where(ShadowVerdictRow.version == version)
            .order_by(ShadowVerdictRow.captured_at)
        )
    )


@dataclass
class _PairTally:
    """What the paired frames add up to: confusion, agreement counts, active latencies and the differences."""

    confusion: dict[str, Counter[str]] = field(default_factory=dict)
    versions: Counter[str] = field(default_factory=Counter)
    same_decision: int = 0
    same_line: int = 0
    differences: list[Difference] = field(default_factory=list)
    active_latency: list[float] = field(default_factory=list)


def _compare_pairs(pairs: list[Sequence[Any]]) -> _PairTally:
    """Tally the candidate's decisions against the active model's, frame by frame."""
    tally = _PairTally()
    for fid, part, cap, s_dec, s_rej, s_cls, sha, ext, a_dec, a_rej, a_cls, a_ver, a_lat in pairs:
        tally.confusion.setdefault(a_dec, Counter())[s_dec] += 1
        tally.versions[a_ver or "?"] += 1
        tally.same_decision += s_dec == a_dec
        tally.same_line += bool(s_rej) == bool(a_rej)
        if a_lat is not None:
            tally.active_latency.append(a_lat)
        if s_dec != a_dec or bool(s_rej) != bool(a_rej):
            tally.differences.append(
                Difference(
                    frame_id=fid,
                    part_id=part,
                    captured_at=cap,
                    active_decision=a_dec,
                    active_class=a_cls,
                    active_version=a_ver,
                    shadow_decision=s_dec,
                    shadow_class=s_cls,
                    image_sha256=sha,
                    image_ext=ext,
                )
            )
    return tally
