"""PBX failures cost no attempt: each call says why the PBX failed it, each lead how often in a row.

The disposition "failed" (the PBX refused the Originate) becomes "pbx_failed".

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch: SQLite cannot ALTER a column's constraints in place; on PostgreSQL it is a plain ALTER.
    with op.batch_alter_table("calls") as calls:
        calls.add_column(sa.Column("pbx_failure", sa.String(200), nullable=True))
    with op.batch_alter_table("leads") as leads:
        leads.add_column(sa.Column("pbx_failures", sa.Integer, nullable=False, server_default="0"))
    op.execute("UPDATE calls SET disposition = 'pbx_failed' WHERE disposition = 'failed'")
    op.execute("UPDATE leads SET last_disposition = 'pbx_failed' WHERE last_disposition = 'failed'")


def downgrade() -> None:
    # What the code before this revision called the same calls.
    for new, old in (("pbx_failed", "failed"), ("lost_track", "unreachable"), ("ended_unobserved", "abandoned")):
        op.execute(f"UPDATE leads SET last_disposition = '{old}' WHERE last_disposition = '{new}'")
        op.execute(f"UPDATE calls SET disposition = '{old}' WHERE disposition = '{new}'")
    with op.batch_alter_table("leads") as leads:
        leads.drop_column("pbx_failures")
    with op.batch_alter_table("calls") as calls:
        calls.drop_column("pbx_failure")
