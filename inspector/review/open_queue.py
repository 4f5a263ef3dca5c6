"""The open part of the review queue, as the labelling service sees it (read only).

The quality view lists it beside the item being labelled: every item not yet labelled (pending, leased, or
leased with an expired lease), highest priority first, oldest first within a priority, limited to the
service's product when it has one.
"""

from __future__ import annotations

from sqlalchemy import select

from inspector.contracts.statuses import ReviewStatus
from inspector.review.labelling import LabellingService, ReviewItemView, _view
from inspector.store.models import ReviewItemRow


def open_items(service: LabellingService, limit: int = 200) -> list[ReviewItemView]:
    """Open review items (pending or leased), highest priority first, oldest first within a priority."""
    q = select(ReviewItemRow).where(ReviewItemRow.status != ReviewStatus.LABELLED)
    if service.product is not None:
        q = q.where(ReviewItemRow.product == service.product)
    q = q.order_by(ReviewItemRow.priority.desc(), ReviewItemRow.created_at, ReviewItemRow.id).limit(max(1, limit))
    with service.store.session() as s:
        return [_view(r) for r in s.scalars(q)]
