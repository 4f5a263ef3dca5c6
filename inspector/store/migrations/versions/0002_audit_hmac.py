"""Keyed audit trail: an HMAC per audit row and the signed chain head kept in the database.

Revision ID: 0002
Revises: 0001

Existing rows keep their unkeyed hashes (``mac`` NULL): they are reported by ``inspector audit verify`` as
unkeyed legacy rows, and the first keyed row after them signs their last hash through its ``prev_hash``, so
rewriting them breaks a keyed row. They are not re-signed here: the migration runs before the station key is
loaded, and signing rows at upgrade would certify whatever the database holds at that moment.
The head row gets a fresh store id; its ``mac`` stays NULL until the first keyed append.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

GENESIS = "0" * 64


def upgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("mac", sa.String(64), nullable=True))
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store_id", sa.String(32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("mac", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_head"),
    )
    last = op.get_bind().execute(sa.text("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")).first()
    op.bulk_insert(
        head,
        [
            {
                "id": 1,
                "store_id": uuid.uuid4().hex,
                "seq": last[0] if last else 0,
                "hash": last[1] if last else GENESIS,
                "mac": None,
            }
        ],
    )


def downgrade() -> None:
    op.drop_table("audit_head")
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("mac")
