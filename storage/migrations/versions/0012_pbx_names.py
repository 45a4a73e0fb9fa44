"""One daemon speaking to several PBXes (issue 13): the PBX a lead is to be dialled on, and the one
each call is on, by their names in leadrouter.yaml (`pbxes:`).

``leads.pbx``: routing.yaml's scenario PBX, set at intake; only that PBX's dialer claims the lead
(NULL: any, as every lead stored before this revision). ``calls.pbx``: NULL for calls stored before.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("leads") as leads:
        leads.add_column(sa.Column("pbx", sa.String(64), nullable=True))
    with op.batch_alter_table("calls") as calls:
        calls.add_column(sa.Column("pbx", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calls") as calls:
        calls.drop_column("pbx")
    with op.batch_alter_table("leads") as leads:
        leads.drop_column("pbx")
