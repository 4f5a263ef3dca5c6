"""Review items carry the product of their frame: each product has its own review queue and training data.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("review_items") as batch:
        batch.add_column(sa.Column("product", sa.String(64), nullable=True))
    op.create_index("ix_review_items_product", "review_items", ["product"])


def downgrade() -> None:
    op.drop_index("ix_review_items_product", "review_items")
    with op.batch_alter_table("review_items") as batch:
        batch.drop_column("product")
