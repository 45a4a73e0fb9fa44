"""The read side: lead histories, supervisors' stats, and the outbox feed for the publisher."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update

from router.model import Call, Lead
from router.stats import ManagerStats
from storage.engine import Database
from storage.schema import calls, leads, outbox
from storage.uow import SqlCalls, SqlLeads


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    seq: int
    id: str
    type: str
    lead_id: int
    payload: str  # the JSON body, as published


class SqlQueries:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def lead_with_calls(self, lead_id: int) -> tuple[Lead, list[Call]] | None:
        async with self._db.read() as conn:
            lead = await SqlLeads(conn).get(lead_id)
            if lead is None:
                return None
            return lead, await SqlCalls(conn).for_lead(lead_id)

    async def manager_stats(self, start: datetime, end: datetime) -> list[ManagerStats]:
        """Bridged calls that started in [start, end), per manager who talked."""
        talk = func.coalesce(calls.c.talk_seconds, 0.0)
        query = (
            select(calls.c.manager_id, func.count(), func.sum(talk))
            .where(calls.c.started_at >= start, calls.c.started_at < end, calls.c.bridged_at.is_not(None))
            .group_by(calls.c.manager_id)
            .order_by(calls.c.manager_id)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [
            ManagerStats(
                manager_id=manager_id,
                calls=count,
                talk_seconds=round(talk_seconds, 3),
                average_talk_seconds=round(talk_seconds / count, 3),
            )
            for manager_id, count, talk_seconds in rows
        ]

    async def lead_status_counts(self) -> dict[str, int]:
        query = select(leads.c.status, func.count()).group_by(leads.c.status)
        async with self._db.read() as conn:
            return {status: count for status, count in (await conn.execute(query)).all()}

    async def pending_outbox(self, limit: int) -> list[OutboxMessage]:
        query = (
            select(outbox.c.seq, outbox.c.id, outbox.c.type, outbox.c.lead_id, outbox.c.payload)
            .where(outbox.c.published_at.is_(None))
            .order_by(outbox.c.seq)
            .limit(limit)
        )
        async with self._db.read() as conn:
            return [OutboxMessage(*row) for row in (await conn.execute(query)).all()]

    async def outbox_backlog(self) -> tuple[int, datetime | None]:
        """How many events wait to be published, and when the oldest of them was committed."""
        pending = outbox.c.published_at.is_(None)
        oldest = select(outbox.c.created_at).where(pending).order_by(outbox.c.seq).limit(1)
        async with self._db.read() as conn:
            count = (await conn.execute(select(func.count()).select_from(outbox).where(pending))).scalar_one()
            return count, (await conn.execute(oldest)).scalar_one_or_none()

    async def mark_published(self, seqs: list[int], at: datetime) -> None:
        async with self._db.write() as conn:
            await conn.execute(update(outbox).where(outbox.c.seq.in_(seqs)).values(published_at=at))
            await conn.commit()
