"""Supervisors' figures read in SQL: per manager, per lead, per minute of the day.

The per-manager part is the one run over a month of a busy company's calls (DESIGN §6:
1,000,000 calls, ≤ 300 ms on SQLite); ``bench/stats_month.py`` times it. Each of its three
queries reads one covering index (migration 0004) and never the table rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, Float, Integer, and_, case, cast, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from router.model import LegResult, Outcome
from router.stats import LeadJourney, ManagerLeads, ManagerOffers, ManagerTalk, Period, StateSeconds
from storage.engine import Database
from storage.schema import UtcDateTime, call_legs, calls, leads, manager_states, outbox

# A call bridged this long before a period may still be talking inside it. Calls are looked for
# no further back, so the index range stays one period long; nobody talks to a lead for a day.
LONGEST_TALK = timedelta(days=1)

_MISSED = (LegResult.NO_ANSWER, LegResult.BUSY, LegResult.UNAVAILABLE)


class SqlStats:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._sqlite = db.engine.dialect.name == "sqlite"

    def _seconds(self, earlier: ColumnElement[datetime], later: ColumnElement[datetime]) -> ColumnElement[float]:
        if self._sqlite:
            return cast((func.julianday(later) - func.julianday(earlier)) * 86400.0, Float)
        return cast(func.extract("epoch", later - earlier), Float)

    def _epoch(self, at: ColumnElement[datetime]) -> ColumnElement[float]:
        """Seconds on some fixed scale (differences are what count): one conversion per row."""
        if self._sqlite:
            return cast(func.julianday(at) * 86400.0, Float)
        return cast(func.extract("epoch", at), Float)

    async def manager_rows(
        self, period: Period, manager_id: str | None = None
    ) -> tuple[list[ManagerTalk], list[ManagerOffers], list[ManagerLeads]]:
        async with self._db.read() as conn:
            return (
                await self._talk(conn, period, manager_id),
                await self._offers(conn, period, manager_id),
                await self._owned(conn, period, manager_id),
            )

    async def _talk(self, conn: AsyncConnection, period: Period, manager_id: str | None) -> list[ManagerTalk]:
        """Calls are counted on the day they were bridged; talk time where it was spoken.

        A call bridged at 23:50 that ends at 00:20 is one call of the first day, and gives ten
        minutes of talk to the first day and twenty to the second. The sums run over the calls
        bridged in the period as stored; then the few calls talking across one of its bounds
        (bridged within LONGEST_TALK before it) are read one by one and their talk outside the
        period taken off, or the part inside added. Per-row arithmetic over the whole month
        cost twice the time of the plain sums.
        """
        c = calls.c
        talk = func.coalesce(c.talk_seconds, 0.0)
        sums = (
            select(
                c.manager_id,
                func.count(),
                func.sum(talk),
                func.max(talk),
                func.min(c.bridged_at),
                func.max(c.bridged_at),
            )
            .where(c.bridged_at >= period.start, c.bridged_at < period.end)
            .group_by(c.manager_id)
        )
        # Those bridged before the period and still talking at its start; those in its last
        # LONGEST_TALK still talking at its end. The two ranges never overlap.
        crossing_start = and_(
            c.bridged_at >= period.start - LONGEST_TALK, c.bridged_at < period.start, c.ended_at > period.start
        )
        crossing_end = and_(
            c.bridged_at >= max(period.start, period.end - LONGEST_TALK),
            c.bridged_at < period.end,
            c.ended_at > period.end,
        )
        crossing = select(c.manager_id, c.bridged_at, c.ended_at, talk).where(or_(crossing_start, crossing_end))
        if manager_id is not None:
            sums = sums.where(c.manager_id == manager_id)
            crossing = crossing.where(c.manager_id == manager_id)
        figures = {
            mid: [count, talk_sum or 0.0, talk_sum or 0.0, longest or 0.0, _raw_utc(first), _raw_utc(last)]
            for mid, count, talk_sum, longest, first, last in (await conn.execute(sums)).all()
            if mid is not None
        }
        for mid, bridged, ended, seconds in (await conn.execute(crossing)).all():
            outside = max((period.start - bridged).total_seconds(), 0.0) + max(
                (ended - period.end).total_seconds(), 0.0
            )
            inside = max(seconds - outside, 0.0)
            row = figures.setdefault(mid, [0, 0.0, 0.0, 0.0, None, None])
            row[1] += inside if bridged < period.start else inside - seconds
        return [ManagerTalk(mid, *row) for mid, row in figures.items()]

    async def _offers(self, conn: AsyncConnection, period: Period, manager_id: str | None) -> list[ManagerOffers]:
        legs = call_legs.c
        query = (
            select(
                legs.manager_id,
                func.count(),
                func.count(case((legs.result == LegResult.ANSWERED, 1))),
                func.count(case((legs.result.in_(_MISSED), 1))),
            )
            .where(legs.started_at >= period.start, legs.started_at < period.end)
            .group_by(legs.manager_id)
        )
        if manager_id is not None:
            query = query.where(legs.manager_id == manager_id)
        return [ManagerOffers(*row) for row in (await conn.execute(query)).all()]

    async def _owned(self, conn: AsyncConnection, period: Period, manager_id: str | None) -> list[ManagerLeads]:
        lc = leads.c
        query = (
            select(
                lc.owner_id,
                func.count(),
                func.count(case((lc.outcome == Outcome.WON, 1))),
                func.count(case((lc.outcome == Outcome.LOST, 1))),
            )
            .where(lc.created_at >= period.start, lc.created_at < period.end, lc.owner_id.is_not(None))
            .group_by(lc.owner_id)
        )
        if manager_id is not None:
            query = query.where(lc.owner_id == manager_id)
        return [ManagerLeads(*row) for row in (await conn.execute(query)).all()]

    async def state_seconds(self, period: Period, until: datetime, manager_ids: Sequence[str]) -> list[StateSeconds]:
        """How long each manager was in each state from the period's start to its end (or ``until``,
        now, if sooner), from his stored state changes: each change lasts until his next one.

        The database pairs each change of the period with the next (a window function) and sums;
        the state each of ``manager_ids`` was in at the start is his last change before it, one
        index seek per manager.
        """
        s = manager_states.c
        start, end = period.start, min(period.end, until)
        if end <= start:
            return []
        inside = and_(s.at >= start, s.at < end)
        # Each change's time converted once, and the next change's beside it (ix_manager_states_manager_at).
        at = self._epoch(s.at)
        changes = (
            select(
                s.manager_id,
                s.state,
                at.label("at"),
                func.lead(at).over(partition_by=s.manager_id, order_by=(s.at, s.seq)).label("next_at"),
            )
            .where(inside, s.manager_id.in_(manager_ids))
            .subquery()
        )
        until_next = func.coalesce(changes.c.next_at, self._epoch(literal(end, UtcDateTime)))
        sums = select(changes.c.manager_id, changes.c.state, func.sum(until_next - changes.c.at)).group_by(
            changes.c.manager_id, changes.c.state
        )
        first_change = select(s.manager_id, func.min(s.at)).where(inside, s.manager_id.in_(manager_ids))
        async with self._db.read() as conn:
            spans = [StateSeconds(mid, state, seconds) for mid, state, seconds in (await conn.execute(sums)).all()]
            firsts = dict((await conn.execute(first_change.group_by(s.manager_id))).all())
            for manager_id in manager_ids:
                before = select(s.state).where(s.manager_id == manager_id, s.at < start)
                before = before.order_by(s.at.desc(), s.seq.desc())
                state = (await conn.execute(before.limit(1))).scalar()
                if state is not None:
                    first = _raw_utc(firsts.get(manager_id)) or end
                    spans.append(StateSeconds(manager_id, state, (first - start).total_seconds()))
        return spans

    async def journeys(self, period: Period) -> list[LeadJourney]:
        """Every lead created in the period with how long after its creation it was first dialled,
        answered and bridged. The database subtracts: a month's leads are tens of thousands, and
        parsing three times for each in Python took seconds."""
        lc, c = leads.c, calls.c
        first_scenario = (
            select(c.scenario).where(c.lead_id == lc.id).order_by(c.id).limit(1).correlate(leads).scalar_subquery()
        )

        def after_created(step: ColumnElement[datetime]) -> ColumnElement[float]:
            return self._seconds(lc.created_at, func.min(step))

        query = (
            select(
                lc.id,
                lc.source,
                first_scenario,
                after_created(c.started_at),
                after_created(c.answered_at),
                after_created(c.bridged_at),
                lc.outcome == Outcome.WON,
                lc.status,
            )
            .select_from(leads.outerjoin(calls, c.lead_id == lc.id))
            .where(lc.created_at >= period.start, lc.created_at < period.end)
            .group_by(lc.id)
            .order_by(lc.id)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [
            LeadJourney(
                lead_id, source, scenario, _seconds(dial), _seconds(answer), _seconds(bridge), bool(won), status
            )
            for lead_id, source, scenario, dial, answer, bridge, won, status in rows
        ]

    async def live_calls(self) -> list[dict[str, object]]:
        """Calls not ended yet (read through the small partial index ix_calls_live), oldest first."""
        c, lc = calls.c, leads.c
        query = (
            select(
                c.id,
                c.lead_id,
                lc.name,
                lc.source,
                c.scenario,
                c.state,
                c.started_at,
                c.answered_at,
                c.bridged_at,
                c.manager_id,
            )
            .join_from(calls, leads, lc.id == c.lead_id)
            .where(c.ended_at.is_(None))
            .order_by(c.id)
        )
        async with self._db.read() as conn:
            return [dict(row) for row in (await conn.execute(query)).mappings()]

    async def lead_events(self, lead_id: int) -> list[dict[str, object]]:
        """What was published (or waits to be) about one lead, in order: its timeline's MQTT part."""
        o = outbox.c
        query = (
            select(o.id, o.type, o.payload, o.created_at, o.published_at).where(o.lead_id == lead_id).order_by(o.seq)
        )
        async with self._db.read() as conn:
            return [{**row, "payload": json.loads(row["payload"])} for row in (await conn.execute(query)).mappings()]

    async def recording_in_progress(self, name: str) -> bool:
        """Whether a call still up records into ``name`` (looked for among live calls only)."""
        c = calls.c
        query = select(c.id).where(c.ended_at.is_(None), c.recording_file == name).limit(1)
        async with self._db.read() as conn:
            return (await conn.execute(query)).first() is not None

    async def quarters(self, period: Period) -> list[tuple[datetime, int, int, int, float]]:
        """Calls started in the period per UTC quarter hour: calls, answered, bridged, talk seconds.

        A quarter, because every zone's offset from UTC is a whole number of them (India +5:30,
        Nepal +5:45): each quarter falls into one hour of the company's day.
        """
        c = calls.c
        if self._sqlite:  # text 'YYYY-MM-DD HH:MM:...': the hour, and which quarter of it
            hour = func.substr(c.started_at, 1, 13)
            quarter = cast(func.substr(c.started_at, 15, 2), Integer) // 15
        else:
            hour = func.date_trunc("hour", c.started_at)
            quarter = cast(func.floor(func.extract("minute", c.started_at) / 15), Integer)
        query = (
            select(
                hour,
                quarter,
                func.count(),
                func.count(c.answered_at),
                func.count(c.bridged_at),
                func.coalesce(func.sum(c.talk_seconds), 0.0),
            )
            .where(c.started_at >= period.start, c.started_at < period.end)
            .group_by(hour, quarter)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [
            (_hour(at) + timedelta(minutes=15 * int(q)), n, answered, bridged, talk)
            for at, q, n, answered, bridged, talk in rows
        ]


def _hour(value: datetime | str) -> datetime:
    """An hour as the database grouped it: SQLite's 'YYYY-MM-DD HH' text, or PostgreSQL's datetime."""
    if isinstance(value, str):
        return datetime.strptime(value, "%Y-%m-%d %H").replace(tzinfo=UTC)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _seconds(value: float | None) -> float | None:
    # julianday() arithmetic is exact to about a millisecond: round away its binary noise.
    return None if value is None else round(value, 3)


def _raw_utc(value: datetime | str | None) -> datetime | None:
    """A time as the database gave it outside a typed column: SQLite text, or a PostgreSQL datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
