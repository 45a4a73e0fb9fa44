"""Lead outcomes reported by the CRM, and the lead's outcome in force.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

from storage.schema import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("leads", sa.Column("outcome", sa.String(16), nullable=True))
    op.create_index("ix_leads_owner", "leads", ["owner_id", "outcome"])
    op.create_table(
        "lead_outcomes",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("lead_id", _Id, sa.ForeignKey("leads.id"), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("previous", sa.String(16), nullable=True),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("manager_id", sa.String(64), nullable=True),
        sa.Column("scenario", sa.String(64), nullable=True),
        sa.Column("at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_lead_outcomes_lead_id", "lead_outcomes", ["lead_id"])


def downgrade() -> None:
    op.drop_table("lead_outcomes")
    with op.batch_alter_table("leads") as leads:  # SQLite rebuilds the table to drop a column
        leads.drop_index("ix_leads_owner")
        leads.drop_column("outcome")
