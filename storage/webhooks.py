"""Webhook delivery state: each subscriber's cursor in the outbox and its undelivered events.

The outbox holds every event once; a subscriber's row in ``webhook_deliveries`` says only
that this event still has to reach it (pending) or was given up (dead). A lead's events go
out in outbox order: only a lead's first undelivered row may be sent, so a failed event holds
back that lead's later ones and no other lead's.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import and_, bindparam, delete, exists, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement

from storage.engine import Database
from storage.schema import outbox, webhook_deliveries, webhook_subscribers

PENDING = "pending"
DEAD = "dead"
BEHIND_DEAD = "held back: an earlier event of this lead is dead"

_wd = webhook_deliveries

# On PostgreSQL, transactions commit outbox rows out of seq order: a seq missing after the
# cursor may be a transaction still committing. The cursor waits at such a gap until the row
# after it is this old (clock seconds); then the gap is a rollback's (or a probe's) and skipped.
GAP_WAIT = timedelta(seconds=10)


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    seq: int
    lead_id: int
    id: str  # the event's
    type: str
    payload: str  # the JSON body, as stored in the outbox and published on MQTT
    attempts: int
    first_failed_at: datetime | None


class DeliveryFailure(Protocol):
    @property
    def seq(self) -> int: ...

    @property
    def attempts(self) -> int: ...

    @property
    def error(self) -> str: ...

    @property
    def first_failed_at(self) -> datetime: ...

    @property
    def next_attempt_at(self) -> datetime: ...

    @property
    def dead(self) -> bool: ...


def _heads(subscriber: str) -> Any:
    """Each lead's first undelivered event for the subscriber."""
    return (
        select(_wd.c.lead_id, func.min(_wd.c.seq).label("seq"))
        .where(_wd.c.subscriber == subscriber)
        .group_by(_wd.c.lead_id)
        .subquery()
    )


class SqlWebhooks:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def enroll(self, subscriber: str, now: datetime) -> None:
        """A new subscriber starts at the end of the outbox: it gets the events from now on."""
        async with self._db.write() as conn:
            known = select(webhook_subscribers.c.name).where(webhook_subscribers.c.name == subscriber)
            if (await conn.execute(known)).first() is None:
                end = (await conn.execute(select(func.coalesce(func.max(outbox.c.seq), 0)))).scalar_one()
                await conn.execute(insert(webhook_subscribers).values(name=subscriber, cursor=end, created_at=now))
                await conn.commit()

    async def fan_out(self, subscriber: str, wanted: Collection[str] | None, now: datetime, limit: int) -> int:
        """Take the outbox rows after the subscriber's cursor that it wants; how many rows the cursor passed."""
        async with self._db.write() as conn:
            cursor_query = select(webhook_subscribers.c.cursor).where(webhook_subscribers.c.name == subscriber)
            cursor = (await conn.execute(cursor_query)).scalar_one()
            query = (
                select(outbox.c.seq, outbox.c.type, outbox.c.lead_id, outbox.c.created_at)
                .where(outbox.c.seq > cursor)
                .order_by(outbox.c.seq)
                .limit(limit)
            )
            rows = _without_gaps((await conn.execute(query)).all(), cursor, now)
            if not rows:
                return 0
            taken = [
                {
                    "subscriber": subscriber,
                    "seq": seq,
                    # Events about no lead (manager.changed) keep their order among themselves
                    # under 0, an id no lead has.
                    "lead_id": lead_id if lead_id is not None else 0,
                    "state": PENDING,
                    "attempts": 0,
                    "next_attempt_at": now,
                }
                for seq, event_type, lead_id, _ in rows
                if wanted is None or event_type in wanted
            ]
            if taken:
                await conn.execute(insert(_wd), taken)
                await self._hold_behind_dead(conn, subscriber, now, {row["lead_id"] for row in taken})
            await conn.execute(
                update(webhook_subscribers).where(webhook_subscribers.c.name == subscriber).values(cursor=rows[-1][0])
            )
            await conn.commit()
            return len(rows)

    async def due(self, subscriber: str, now: datetime, max_leads: int, limit: int) -> list[WebhookDelivery]:
        """The undelivered events, in order, of up to ``max_leads`` leads whose first one is due now."""
        heads = _heads(subscriber)
        ready = (
            select(heads.c.lead_id)
            .join(_wd, and_(_wd.c.subscriber == subscriber, _wd.c.seq == heads.c.seq))
            .where(_wd.c.state == PENDING, _wd.c.next_attempt_at <= now)
            .order_by(heads.c.seq)
            .limit(max_leads)
        )
        query = (
            select(
                _wd.c.seq,
                _wd.c.lead_id,
                outbox.c.id,
                outbox.c.type,
                outbox.c.payload,
                _wd.c.attempts,
                _wd.c.first_failed_at,
            )
            .join(outbox, outbox.c.seq == _wd.c.seq)
            .where(_wd.c.subscriber == subscriber, _wd.c.state == PENDING, _wd.c.lead_id.in_(ready.scalar_subquery()))
            .order_by(_wd.c.seq)
            .limit(limit)
        )
        async with self._db.read() as conn:
            return [WebhookDelivery(*row) for row in (await conn.execute(query)).all()]

    async def next_due_at(self, subscriber: str) -> datetime | None:
        """When the earliest waiting lead's first event is due again (None: nothing waits)."""
        heads = _heads(subscriber)
        query = (
            select(func.min(_wd.c.next_attempt_at))
            .join(heads, and_(_wd.c.subscriber == subscriber, _wd.c.seq == heads.c.seq))
            .where(_wd.c.state == PENDING)
        )
        async with self._db.read() as conn:
            return (await conn.execute(query)).scalar_one_or_none()

    async def record(
        self, subscriber: str, delivered: Sequence[int], failed: Sequence[DeliveryFailure], now: datetime
    ) -> None:
        async with self._db.write() as conn:
            if delivered:
                await conn.execute(delete(_wd).where(_wd.c.subscriber == subscriber, _wd.c.seq.in_(delivered)))
            if failed:
                # One statement for the whole round's failures (executemany).
                statement = (
                    update(_wd)
                    .where(_wd.c.subscriber == subscriber, _wd.c.seq == bindparam("b_seq"))
                    .values(
                        attempts=bindparam("b_attempts"),
                        last_error=bindparam("b_error"),
                        first_failed_at=bindparam("b_first_failed_at", type_=_wd.c.first_failed_at.type),
                        next_attempt_at=bindparam("b_next_attempt_at", type_=_wd.c.next_attempt_at.type),
                        state=bindparam("b_state"),
                        dead_at=bindparam("b_dead_at", type_=_wd.c.dead_at.type),
                    )
                )
                await conn.execute(
                    statement,
                    [
                        {
                            "b_seq": failure.seq,
                            "b_attempts": failure.attempts,
                            "b_error": failure.error[:500],
                            "b_first_failed_at": failure.first_failed_at,
                            "b_next_attempt_at": failure.next_attempt_at,
                            "b_state": DEAD if failure.dead else PENDING,
                            "b_dead_at": now if failure.dead else None,
                        }
                        for failure in failed
                    ],
                )
            if any(failure.dead for failure in failed):
                await self._hold_behind_dead(conn, subscriber, now)
            await conn.commit()

    @staticmethod
    async def _hold_behind_dead(
        conn: AsyncConnection, subscriber: str, now: datetime, leads: Collection[int] | None = None
    ) -> None:
        """A lead's events after a dead one are dead too: sent now they would arrive out of order.

        ``leads``: only these leads' events may have come behind a dead one (None: any lead's)."""
        earlier = _wd.alias("earlier")
        behind = exists().where(
            earlier.c.subscriber == subscriber,
            earlier.c.lead_id == _wd.c.lead_id,
            earlier.c.state == DEAD,
            earlier.c.seq < _wd.c.seq,
        )
        await conn.execute(
            update(_wd)
            .where(
                _wd.c.subscriber == subscriber,
                _wd.c.state == PENDING,
                *([_wd.c.lead_id.in_(leads)] if leads is not None else []),
                behind,
            )
            .values(state=DEAD, dead_at=now, last_error=BEHIND_DEAD)
        )

    async def retry(self, subscriber: str | None, event_ids: Collection[str], now: datetime) -> int:
        """Send dead events again from now: all of them (or the subscriber's), or those of the leads
        of the events named (all of a lead's, as its order demands). How many were re-queued."""
        chosen: list[ColumnElement[bool]] = [_wd.c.state == DEAD]
        if subscriber is not None:
            chosen.append(_wd.c.subscriber == subscriber)
        async with self._db.write(long=True) as conn:  # every dead event, maybe a day's worth
            if event_ids:
                named = (
                    select(_wd.c.subscriber, _wd.c.lead_id)
                    .join(outbox, outbox.c.seq == _wd.c.seq)
                    .where(*chosen, outbox.c.id.in_(event_ids))
                    .distinct()
                )
                leads = (await conn.execute(named)).all()
                if not leads:
                    return 0
                chosen.append(or_(*(and_(_wd.c.subscriber == name, _wd.c.lead_id == lead) for name, lead in leads)))
            result = await conn.execute(
                update(_wd)
                .where(*chosen)
                .values(state=PENDING, attempts=0, next_attempt_at=now, first_failed_at=None, dead_at=None)
            )
            await conn.commit()
            return result.rowcount

    async def overview(self) -> list[dict[str, Any]]:
        """Per subscriber known to the database: cursor, events pending and dead, the oldest waiting."""
        counts = (
            select(
                _wd.c.subscriber,
                _wd.c.state,
                func.count(),
                func.min(_wd.c.first_failed_at),
            )
            .group_by(_wd.c.subscriber, _wd.c.state)
            .subquery()
        )
        async with self._db.read() as conn:
            subscribers = (await conn.execute(select(webhook_subscribers).order_by(webhook_subscribers.c.name))).all()
            tallies = (await conn.execute(select(counts))).all()
        by_name: dict[str, dict[str, Any]] = {
            row.name: {"name": row.name, "cursor": row.cursor, "pending": 0, "dead": 0, "failing_since": None}
            for row in subscribers
        }
        for name, state, count, failing_since in tallies:
            entry = by_name.setdefault(
                name, {"name": name, "cursor": None, "pending": 0, "dead": 0, "failing_since": None}
            )
            entry[state] = count
            if state == PENDING:
                entry["failing_since"] = failing_since
        return list(by_name.values())

    async def dead(self, subscriber: str | None, limit: int) -> list[dict[str, Any]]:
        """Dead events, oldest first, with why they died."""
        query = (
            select(
                _wd.c.subscriber,
                outbox.c.id,
                outbox.c.type,
                _wd.c.lead_id,
                _wd.c.attempts,
                _wd.c.last_error,
                _wd.c.first_failed_at,
                _wd.c.dead_at,
                outbox.c.created_at,
            )
            .join(outbox, outbox.c.seq == _wd.c.seq)
            .where(_wd.c.state == DEAD, *([_wd.c.subscriber == subscriber] if subscriber else []))
            .order_by(_wd.c.subscriber, _wd.c.seq)
            .limit(limit)
        )
        async with self._db.read() as conn:
            return [dict(row) for row in (await conn.execute(query)).mappings()]


def _without_gaps(rows: Sequence[Any], cursor: int, now: datetime) -> list[Any]:
    """The rows from the cursor on, up to the first gap that may still fill."""
    taken = []
    expected = cursor + 1
    for row in rows:
        if row.seq != expected and row.created_at > now - GAP_WAIT:
            break
        taken.append(row)
        expected = row.seq + 1
    return taken
