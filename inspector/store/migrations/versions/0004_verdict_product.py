"""Verdicts carry the product of their frame (changeover between products).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("verdicts") as batch:
        batch.add_column(sa.Column("product", sa.String(64), nullable=True))
    op.create_index("ix_verdicts_product", "verdicts", ["product"])


def downgrade() -> None:
    op.drop_index("ix_verdicts_product", "verdicts")
    with op.batch_alter_table("verdicts") as batch:
        batch.drop_column("product")
