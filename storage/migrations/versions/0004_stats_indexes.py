"""Covering indexes for supervisors' stats over any period, the live calls and a lead's
events (issue 9).

Each per-manager query reads one index range and no table row: a month of a million calls is
then well under DESIGN §6's 300 ms on SQLite (bench/stats_month.py).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_calls_talk", "calls", ["bridged_at", "manager_id", "ended_at", "talk_seconds"])
    op.create_index("ix_call_legs_offers", "call_legs", ["started_at", "manager_id", "result"])
    op.create_index("ix_leads_created", "leads", ["created_at", "owner_id", "outcome"])
    op.create_index("ix_outbox_lead", "outbox", ["lead_id", "seq"])
    live = sa.text("ended_at IS NULL")
    op.create_index("ix_calls_live", "calls", ["id"], sqlite_where=live, postgresql_where=live)


def downgrade() -> None:
    op.drop_index("ix_calls_live", "calls")
    op.drop_index("ix_outbox_lead", "outbox")
    op.drop_index("ix_leads_created", "leads")
    op.drop_index("ix_call_legs_offers", "call_legs")
    op.drop_index("ix_calls_talk", "calls")
