"""Time in each manager state (GET /stats/states): his changes by time.

The index gives each manager's changes of a period in order without reading the table, and his
state at the period's start (his last change before it) in one seek; the per-manager index by
``seq`` alone made that look read every later change of his.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_manager_states_manager_at", "manager_states", ["manager_id", "at", "state"])


def downgrade() -> None:
    op.drop_index("ix_manager_states_manager_at", "manager_states")
