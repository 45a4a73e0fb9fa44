"""Outgoing webhooks: each subscriber's cursor in the outbox and its undelivered events (issue 12).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

from storage.schema import UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "webhook_subscribers",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("cursor", sa.BigInteger, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("subscriber", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("lead_id", _Id, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", UtcDateTime, nullable=False),
        sa.Column("first_failed_at", UtcDateTime, nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("dead_at", UtcDateTime, nullable=True),
    )
    op.create_index("ix_webhook_deliveries_lead", "webhook_deliveries", ["subscriber", "lead_id", "seq"])


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_subscribers")
