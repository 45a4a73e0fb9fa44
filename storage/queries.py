"""The read side: lead histories, supervisors' stats, and the outbox feed for the publisher."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from router.board import History
from router.model import Call, HistoryEntry, Lead, Outcome, OutcomeReport
from router.routing import RoutingPlan, Strategy
from router.stats import ManagerStats, day_bounds
from router.strategies import MAX_HISTORY
from storage.engine import Database
from storage.schema import (
    call_legs,
    calls,
    lead_outcomes,
    leads,
    manager_states,
    outbox,
    webhook_deliveries,
    webhook_subscribers,
)
from storage.uow import SqlCalls, SqlHistory, SqlLeads, lead_from_row

# How far back a manager's last turn is looked for; whoever had none since is simply due first.
TURNS_LOOKBACK = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    seq: int
    id: str
    type: str
    lead_id: int | None  # None: an event about no lead
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

    async def lead_history(self, lead_id: int) -> list[HistoryEntry] | None:
        """What happened to the lead outside its calls (merged duplicates, SLA releases); None: no lead."""
        async with self._db.read() as conn:
            if await SqlLeads(conn).get(lead_id) is None:
                return None
            return await SqlHistory(conn).for_lead(lead_id)

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

    async def board_history(self, plan: RoutingPlan, now: datetime) -> History:
        """What the manager board rebuilds at start: turns, recent offers, today, capacity, records."""
        local = now.astimezone(plan.timezone)
        today = {
            row.manager_id: (row.calls, row.talk_seconds)
            for row in await self.manager_stats(*day_bounds(local.date(), plan.timezone))
        }
        windows = {
            scenario.name: scenario.closing_rate.window(len(plan.pool(scenario)))
            for scenario in plan.scenarios
            if scenario.strategy is Strategy.CLOSING_RATE
        }
        async with self._db.read() as conn:
            legs = call_legs.join(calls, calls.c.id == call_legs.c.call_id)
            recent = calls.c.started_at >= now - TURNS_LOOKBACK
            turns_query = (
                select(calls.c.scenario, call_legs.c.manager_id, func.max(call_legs.c.started_at))
                .select_from(legs)
                .where(recent)
                .group_by(calls.c.scenario, call_legs.c.manager_id)
            )
            turns: dict[str, dict[str, datetime]] = {}
            for scenario, manager_id, at in await conn.execute(turns_query):
                turns.setdefault(scenario, {})[manager_id] = at
            offers: dict[str, list[str]] = {}
            if windows:
                newest_first = func.row_number().over(
                    partition_by=calls.c.scenario,
                    order_by=(call_legs.c.started_at.desc(), call_legs.c.call_id.desc(), call_legs.c.leg_no.desc()),
                )
                ranked = (
                    select(calls.c.scenario, call_legs.c.manager_id, newest_first.label("rank"))
                    .select_from(legs)
                    .where(recent, calls.c.scenario.in_(windows))
                    .subquery()
                )
                offers_query = (
                    select(ranked.c.scenario, ranked.c.manager_id)
                    .where(ranked.c.rank <= max(windows.values()))
                    .order_by(ranked.c.scenario, ranked.c.rank.desc())
                )
                for scenario, manager_id in await conn.execute(offers_query):
                    offers.setdefault(scenario, []).append(manager_id)
            undecided = or_(leads.c.outcome.is_(None), leads.c.outcome == Outcome.WORKED)
            open_query = (
                select(leads.c.owner_id, func.count())
                .where(leads.c.owner_id.is_not(None), undecided)
                .group_by(leads.c.owner_id)
            )
            open_leads = {owner_id: count for owner_id, count in await conn.execute(open_query)}
            # Who was paused when the last run ended stays paused: each manager's last stored change.
            last = (
                select(manager_states.c.manager_id, func.max(manager_states.c.seq).label("seq"))
                .group_by(manager_states.c.manager_id)
                .subquery()
            )
            paused_query = (
                select(manager_states.c.manager_id, manager_states.c.paused)
                .join(last, manager_states.c.seq == last.c.seq)
                .where(manager_states.c.paused.is_not(None))
            )
            paused = {manager_id: reason for manager_id, reason in await conn.execute(paused_query)}
            return History(
                paused=paused,
                turns=turns,
                offers=offers,
                today=today,
                open_leads=open_leads,
                outcomes=await self._decided_outcomes(conn),
            )

    @staticmethod
    async def _decided_outcomes(conn: AsyncConnection) -> list[OutcomeReport]:
        """Each lead's outcome in force if decided, the newest MAX_HISTORY per manager and scenario."""
        in_force = select(func.max(lead_outcomes.c.id)).group_by(lead_outcomes.c.lead_id)
        newest_first = func.row_number().over(
            partition_by=(lead_outcomes.c.scenario, lead_outcomes.c.manager_id), order_by=lead_outcomes.c.id.desc()
        )
        ranked = (
            select(lead_outcomes, newest_first.label("rank"))
            .where(
                lead_outcomes.c.id.in_(in_force),
                lead_outcomes.c.outcome.in_([Outcome.WON, Outcome.LOST]),
                lead_outcomes.c.scenario.is_not(None),
                lead_outcomes.c.manager_id.is_not(None),
            )
            .subquery()
        )
        query = select(*(ranked.c[name] for name in lead_outcomes.columns.keys() if name != "id")).where(
            ranked.c.rank <= MAX_HISTORY
        )
        rows = (await conn.execute(query.order_by(ranked.c.id))).mappings()
        return [OutcomeReport(**row) for row in rows]

    async def lead_status_counts(self) -> dict[str, int]:
        query = select(leads.c.status, func.count()).group_by(leads.c.status)
        async with self._db.read() as conn:
            return {status: count for status, count in (await conn.execute(query)).all()}

    async def leads_since(self, start: datetime) -> list[tuple[Lead, list[Call]]]:
        """Leads that came in from ``start`` on, each with its calls (what-if replays them)."""
        async with self._db.read() as conn:
            rows = (
                await conn.execute(select(leads).where(leads.c.created_at >= start).order_by(leads.c.id))
            ).mappings()
            found = [lead_from_row(row) for row in rows]
            by_lead: dict[int, list[Call]] = {lead.id: [] for lead in found if lead.id is not None}
            for call in await SqlCalls(conn).for_leads(list(by_lead)):
                by_lead[call.lead_id].append(call)
        return [(lead, by_lead[lead.id]) for lead in found if lead.id is not None]

    async def leads_per_owner(self) -> dict[str, int]:
        query = select(leads.c.owner_id, func.count()).where(leads.c.owner_id.is_not(None)).group_by(leads.c.owner_id)
        async with self._db.read() as conn:
            return {owner: count for owner, count in (await conn.execute(query)).all()}

    async def leads_per_scenario(self) -> dict[str, int]:
        """Leads by the scenario their first call matched (retries may match another after a reload)."""
        first = select(calls.c.lead_id, func.min(calls.c.id).label("call_id")).group_by(calls.c.lead_id).subquery()
        query = (
            select(calls.c.scenario, func.count())
            .select_from(first.join(calls, calls.c.id == first.c.call_id))
            .group_by(calls.c.scenario)
        )
        async with self._db.read() as conn:
            return {scenario: count for scenario, count in (await conn.execute(query)).all()}

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

    async def published_ids(self) -> set[str]:
        """The ids of the events the broker acknowledged: what a consumer of ours should have seen."""
        query = select(outbox.c.id).where(outbox.c.published_at.is_not(None))
        async with self._db.read() as conn:
            return set((await conn.execute(query)).scalars())

    async def mark_published(self, seqs: list[int], at: datetime) -> None:
        async with self._db.write() as conn:
            await conn.execute(update(outbox).where(outbox.c.seq.in_(seqs)).values(published_at=at))
            await conn.commit()

    async def mark_published_ids(self, ids: Sequence[str], at: datetime) -> None:
        """Mark by event id what the broker is known to hold; rows already marked keep their time."""
        pending = outbox.c.published_at.is_(None)
        async with self._db.write() as conn:
            await conn.execute(update(outbox).where(outbox.c.id.in_(ids), pending).values(published_at=at))
            await conn.commit()

    async def prune_outbox(
        self, before: datetime, *, after: int, limit: int, published_only: bool, subscribers: Collection[str]
    ) -> tuple[int, int | None]:
        """One batch of the outbox's retention: of the ``limit`` rows after seq ``after``, delete those
        created before ``before`` that MQTT has had (``published_only``), that every webhook subscriber
        in ``subscribers`` has taken in (its cursor), and that wait in nobody's deliveries (pending or
        dead). Returns how many went, and the seq to go on after (None: nothing further is due)."""
        async with self._db.write() as conn:
            rows = (
                await conn.execute(
                    select(outbox.c.seq, outbox.c.created_at, outbox.c.published_at)
                    .where(outbox.c.seq > after)
                    .order_by(outbox.c.seq)
                    .limit(limit)
                )
            ).all()
            cursor = None
            if subscribers:
                taken_in = select(func.min(webhook_subscribers.c.cursor)).where(
                    webhook_subscribers.c.name.in_(subscribers)
                )
                cursor = (await conn.execute(taken_in)).scalar_one_or_none()
            # Seqs follow commit order closely enough: the first row too young (or not taken in by a
            # subscriber) ends the pass; the next pass goes further.
            due: list[int] = []
            finished = len(rows) < limit
            for seq, created_at, published_at in rows:
                if created_at >= before or (cursor is not None and seq > cursor):
                    finished = True
                    break
                if published_at is not None or not published_only:
                    due.append(seq)
            if due:
                # The newest row stays: SQLite hands out max(seq) + 1, and a seq given out again would
                # sit behind the webhook cursors that passed it, never delivered.
                newest = (await conn.execute(select(func.max(outbox.c.seq)))).scalar_one()
                held = select(webhook_deliveries.c.seq).where(webhook_deliveries.c.seq.in_(due))
                kept = set((await conn.execute(held)).scalars())
                due = [seq for seq in due if seq not in kept and seq != newest]
            if due:
                await conn.execute(delete(outbox).where(outbox.c.seq.in_(due)))
            await conn.commit()
        return len(due), None if finished or not rows else rows[-1][0]
