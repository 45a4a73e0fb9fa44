"""Leads, calls, manager legs and the event outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

from storage.schema import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "leads",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("phone", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("external_id", sa.String(200), nullable=True, unique=True),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("owner_id", sa.String(64), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", UtcDateTime, nullable=True),
        sa.Column("last_disposition", sa.String(16), nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=True),
    )
    op.create_index("ix_leads_due", "leads", ["status", "next_attempt_at"])
    op.create_index("ix_leads_phone", "leads", ["phone"])

    op.create_table(
        "calls",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("lead_id", _Id, sa.ForeignKey("leads.id"), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("scenario", sa.String(64), nullable=False),
        sa.Column("channel_id", sa.String(64), nullable=False, unique=True),
        sa.Column("phone", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("started_at", UtcDateTime, nullable=False),
        sa.Column("answered_at", UtcDateTime, nullable=True),
        sa.Column("bridged_at", UtcDateTime, nullable=True),
        sa.Column("ended_at", UtcDateTime, nullable=True),
        sa.Column("manager_id", sa.String(64), nullable=True),
        sa.Column("disposition", sa.String(16), nullable=True),
        sa.Column("hangup_cause", sa.Integer, nullable=True),
        sa.Column("ring_seconds", sa.Float, nullable=True),
        sa.Column("hold_seconds", sa.Float, nullable=True),
        sa.Column("talk_seconds", sa.Float, nullable=True),
        sa.Column("total_seconds", sa.Float, nullable=True),
        sa.Column("recording_file", sa.String(255), nullable=True),
        sa.Column("recording_url", sa.Text, nullable=True),
        sa.Column("pbx_billable_seconds", sa.Integer, nullable=True),
    )
    op.create_index("ix_calls_lead_id", "calls", ["lead_id"])
    op.create_index("ix_calls_stats", "calls", ["started_at", "manager_id", "talk_seconds"])

    op.create_table(
        "call_legs",
        sa.Column("call_id", _Id, sa.ForeignKey("calls.id"), primary_key=True),
        sa.Column("leg_no", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("manager_id", sa.String(64), nullable=False),
        sa.Column("started_at", UtcDateTime, nullable=False),
        sa.Column("answered_at", UtcDateTime, nullable=True),
        sa.Column("ended_at", UtcDateTime, nullable=True),
        sa.Column("result", sa.String(16), nullable=True),
    )

    op.create_table(
        "outbox",
        sa.Column("seq", _Id, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("lead_id", _Id, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("published_at", UtcDateTime, nullable=True),
    )
    op.create_index(
        "ix_outbox_pending",
        "outbox",
        ["seq"],
        sqlite_where=sa.text("published_at IS NULL"),
        postgresql_where=sa.text("published_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("call_legs")
    op.drop_table("calls")
    op.drop_table("leads")
