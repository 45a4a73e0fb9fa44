"""Every change of a manager's state (available, ringing, on_call, wrap_up, paused, offline), for
stats and so that a pause outlives a restart (issue 8).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

from storage.schema import UtcDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "manager_states",
        sa.Column("seq", _Id, primary_key=True, autoincrement=True),
        sa.Column("manager_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("previous_state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(200), nullable=True),
        sa.Column("paused", sa.String(200), nullable=True),
        sa.Column("at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_manager_states_manager", "manager_states", ["manager_id", "seq"])
    op.create_index("ix_manager_states_at", "manager_states", ["at"])


def downgrade() -> None:
    op.drop_table("manager_states")
