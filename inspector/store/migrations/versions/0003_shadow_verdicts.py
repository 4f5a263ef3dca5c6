"""Shadow verdicts: what a candidate judging live frames beside the active model said of each frame.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shadow_verdicts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("version", sa.String(128), nullable=False),
        sa.Column("frame_id", sa.String(64), nullable=False),
        sa.Column("part_id", sa.String(128), nullable=False),
        sa.Column("camera", sa.String(64), nullable=False),
        sa.Column("captured_at", sa.Float(), nullable=False),
        sa.Column("decided_at", sa.Float(), nullable=False),
        sa.Column("decision", sa.String(8), nullable=False),
        sa.Column("reject", sa.Boolean(), nullable=False),
        sa.Column("defect_class", sa.String(64), nullable=True),
        sa.Column("anomaly_score", sa.Float(), nullable=True),
        sa.Column("infer_ms", sa.Float(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("image_sha256", sa.String(64), nullable=True),
        sa.Column("image_ext", sa.String(8), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_shadow_verdicts"),
        sa.UniqueConstraint("version", "frame_id", name="uq_shadow_verdicts_version_frame_id"),
    )
    for col in ("version", "frame_id", "captured_at"):
        op.create_index(f"ix_shadow_verdicts_{col}", "shadow_verdicts", [col])


def downgrade() -> None:
    op.drop_table("shadow_verdicts")
