"""The recordings' retention job's SQL: which ended calls still keep a recording, and marking it gone."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam, select, update

from storage.engine import Database
from storage.schema import calls


class SqlRecordings:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def kept_before(self, before: datetime, limit: int) -> list[tuple[int, str, datetime]]:
        """Calls that ended before ``before`` and still keep their recording, oldest first:
        id, file, end. A call still up has no end, so it is never among them."""
        c = calls.c
        query = (
            select(c.id, c.recording_file, c.ended_at)
            .where(c.recording_file.is_not(None), c.recording_deleted_at.is_(None), c.ended_at < before)
            .order_by(c.ended_at)
            .limit(limit)
        )
        async with self._db.read() as conn:
            return [(row.id, row.recording_file, row.ended_at) for row in await conn.execute(query)]

    async def in_use(self, files: Sequence[str]) -> set[str]:
        """Which of ``files`` a call still up records into (MixMonitor may write a name again)."""
        c = calls.c
        query = select(c.recording_file).where(c.ended_at.is_(None), c.recording_file.in_(files))
        async with self._db.read() as conn:
            return {row.recording_file for row in await conn.execute(query)}

    async def mark_deleted(self, call_ids: Sequence[int], at: datetime) -> None:
        statement = update(calls).where(calls.c.id == bindparam("b_id")).values(recording_deleted_at=at)
        async with self._db.write() as conn:
            await conn.execute(statement, [{"b_id": call_id} for call_id in call_ids])
            await conn.commit()
