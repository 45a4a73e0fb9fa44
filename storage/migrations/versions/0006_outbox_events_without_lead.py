"""Outbox rows about no lead (``manager.changed``, issue 12): ``lead_id`` may be null.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # SQLite cannot alter a column: batch mode copies the table, once, at the upgrade.
    with op.batch_alter_table("outbox") as batch:
        batch.alter_column("lead_id", existing_type=sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM outbox WHERE lead_id IS NULL")
    with op.batch_alter_table("outbox") as batch:
        batch.alter_column(
            "lead_id", existing_type=sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        )
