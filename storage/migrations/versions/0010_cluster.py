"""Several daemons on one database (issue 13): which daemon steers each call, and which manager
is promised to which call, so two daemons never ring one manager at once.

A call's ``daemon_id`` is its steering daemon's id for this run; a call whose daemon is gone is
taken over by another (storage.cluster). NULL: stored before this revision, by a daemon long gone.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("calls") as calls:
        calls.add_column(sa.Column("daemon_id", sa.String(64), nullable=True))
    op.create_table(
        "manager_reservations",
        sa.Column("manager_id", sa.String(64), primary_key=True),
        sa.Column("call_id", _Id, nullable=False),
        sa.Column("daemon_id", sa.String(64), nullable=False),
        sa.Column("reserved_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("manager_reservations")
    with op.batch_alter_table("calls") as calls:
        calls.drop_column("daemon_id")
