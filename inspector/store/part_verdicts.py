"""Part verdicts in the database (``part_verdicts``): rows, the idempotent insert, retention's delete."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, delete, select
from sqlalchemy.orm import Session

from inspector.contracts.config import RetentionSection
from inspector.contracts.messages import PartVerdict
from inspector.store.db import Store
from inspector.store.models import PartVerdictRow
from inspector.store.records import insert_ignore

PART_TABLE: Table = PartVerdictRow.__table__  # type: ignore[assignment]


def part_row(v: PartVerdict) -> dict[str, Any]:
    return {
        "part_id": v.part_id,
        "station": v.station,
        "captured_at": v.captured_at,
        "decided_at": v.decided_at,
        "decision": v.decision.value,
        "reject": v.reject,
        "reason": v.reason,
        "failed_view": v.failed_view,
        "defect_class": v.defect_class,
        "reasons": list(v.reasons),
        "views": {k: r.model_dump(mode="json", exclude_none=True) for k, r in v.views.items()},
        "missing": list(v.missing),
        "product": v.product,
    }


def insert_part_verdicts(s: Session, verdicts: Sequence[PartVerdict]) -> int:
    """Insert in the caller's transaction; returns how many were new (a part already recorded is ignored)."""
    if not verdicts:
        return 0
    rows = list({v.part_id: part_row(v) for v in verdicts}.values())
    result = s.execute(insert_ignore(s, PART_TABLE, "part_id"), rows)
    return max(result.rowcount, 0) if result.rowcount is not None else 0


def delete_old_part_verdicts(store: Store, section: RetentionSection, now: float | None = None) -> int:
    """Delete part rows captured more than ``retention.verdict_rows_max_age_s`` ago (retention's pass)."""
    if section.verdict_rows_max_age_s <= 0:
        return 0
    cutoff = (time.time() if now is None else now) - section.verdict_rows_max_age_s
    total = 0
    while True:
        with store.session() as s:
            ids = list(
                s.scalars(
                    select(PartVerdictRow.id).where(PartVerdictRow.captured_at < cutoff).limit(section.delete_batch)
                )
            )
            if ids:
                s.execute(delete(PartVerdictRow).where(PartVerdictRow.id.in_(ids)))
        total += len(ids)
        if len(ids) < section.delete_batch:
            return total
