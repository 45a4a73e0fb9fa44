"""Calls remember when the retention job deleted their recording (issue 9).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

from storage.schema import UtcDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("recording_deleted_at", UtcDateTime, nullable=True))
    # The job's question: ended calls whose recording is still kept, oldest first.
    kept = sa.text("recording_file IS NOT NULL AND recording_deleted_at IS NULL")
    op.create_index("ix_calls_recordings_kept", "calls", ["ended_at"], sqlite_where=kept, postgresql_where=kept)


def downgrade() -> None:
    op.drop_index("ix_calls_recordings_kept", "calls")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("recording_deleted_at")
