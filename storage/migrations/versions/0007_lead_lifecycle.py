"""The lead's life over time (issue 8): its place in a call window's backlog, its SLA deadline, the
state it ended in, and its history outside calls (merged duplicates, SLA releases).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

from storage.schema import UtcDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("leads") as leads:
        leads.add_column(sa.Column("backlog_rank", sa.Float, nullable=False, server_default="0"))
        leads.add_column(sa.Column("sla_due_at", UtcDateTime, nullable=True))
        leads.add_column(sa.Column("final_state", sa.String(64), nullable=True))
    op.create_index("ix_leads_sla", "leads", ["sla_due_at"])
    op.create_table(
        "lead_history",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("lead_id", _Id, sa.ForeignKey("leads.id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("at", UtcDateTime, nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
        sa.Column("external_id", sa.String(200), nullable=True, unique=True),
    )
    op.create_index("ix_lead_history_lead_id", "lead_history", ["lead_id"])


def downgrade() -> None:
    op.drop_table("lead_history")
    op.drop_index("ix_leads_sla", "leads")
    with op.batch_alter_table("leads") as leads:  # SQLite rebuilds the table to drop a column
        leads.drop_column("final_state")
        leads.drop_column("sla_due_at")
        leads.drop_column("backlog_rank")
