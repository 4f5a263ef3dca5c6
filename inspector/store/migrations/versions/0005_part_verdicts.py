"""Part verdicts: one row per part seen by several views (parts.views), with every view's result.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "part_verdicts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("part_id", sa.String(128), nullable=False),
        sa.Column("station", sa.String(64), nullable=False),
        sa.Column("captured_at", sa.Float(), nullable=False),
        sa.Column("decided_at", sa.Float(), nullable=False),
        sa.Column("decision", sa.String(8), nullable=False),
        sa.Column("reject", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("failed_view", sa.String(64), nullable=True),
        sa.Column("defect_class", sa.String(64), nullable=True),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("views", sa.JSON(), nullable=False),
        sa.Column("missing", sa.JSON(), nullable=False),
        sa.Column("product", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_part_verdicts"),
        sa.UniqueConstraint("part_id", name="uq_part_verdicts_part_id"),
    )
    for col in ("captured_at", "decision"):
        op.create_index(f"ix_part_verdicts_{col}", "part_verdicts", [col])


def downgrade() -> None:
    op.drop_table("part_verdicts")
