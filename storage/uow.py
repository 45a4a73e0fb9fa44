"""One transaction per unit of work: leads, calls and outbox rows commit together."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Self

from sqlalchemy import RowMapping, Table, Update, bindparam, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from router.events import DomainEvent
from router.model import Call, CallState, Disposition, Lead, LeadStatus, LegResult, ManagerLeg
from storage.engine import Database
from storage.schema import call_legs, calls, leads, outbox

_DUE = (LeadStatus.NEW.value, LeadStatus.SCHEDULED.value)


def _lead_values(lead: Lead) -> dict[str, Any]:
    return {
        "phone": lead.phone,
        "name": lead.name,
        "source": lead.source,
        "external_id": lead.external_id,
        "payload": lead.payload,
        "status": lead.status.value,
        "owner_id": lead.owner_id,
        "attempts": lead.attempts,
        "next_attempt_at": lead.next_attempt_at,
        "last_disposition": lead.last_disposition.value if lead.last_disposition else None,
        "created_at": lead.created_at,
        "updated_at": lead.updated_at,
    }


def lead_from_row(row: RowMapping) -> Lead:
    return Lead(
        id=row["id"],
        phone=row["phone"],
        name=row["name"],
        source=row["source"],
        external_id=row["external_id"],
        payload=row["payload"],
        status=LeadStatus(row["status"]),
        owner_id=row["owner_id"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        last_disposition=Disposition(row["last_disposition"]) if row["last_disposition"] else None,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _call_values(call: Call) -> dict[str, Any]:
    return {
        "lead_id": call.lead_id,
        "attempt": call.attempt,
        "scenario": call.scenario,
        "channel_id": call.channel_id,
        "phone": call.phone,
        "state": call.state.value,
        "started_at": call.started_at,
        "answered_at": call.answered_at,
        "bridged_at": call.bridged_at,
        "ended_at": call.ended_at,
        "manager_id": call.manager_id,
        "disposition": call.disposition.value if call.disposition else None,
        "hangup_cause": call.hangup_cause,
        "ring_seconds": call.ring_seconds,
        "hold_seconds": call.hold_seconds,
        "talk_seconds": call.talk_seconds,
        "total_seconds": call.total_seconds,
        "recording_file": call.recording_file,
        "recording_url": call.recording_url,
    }


def _leg_values(leg: ManagerLeg) -> dict[str, Any]:
    return {
        "manager_id": leg.manager_id,
        "started_at": leg.started_at,
        "answered_at": leg.answered_at,
        "ended_at": leg.ended_at,
        "result": leg.result.value if leg.result else None,
    }


def call_from_rows(row: RowMapping, leg_rows: Sequence[RowMapping]) -> Call:
    return Call(
        id=row["id"],
        lead_id=row["lead_id"],
        attempt=row["attempt"],
        scenario=row["scenario"],
        channel_id=row["channel_id"],
        phone=row["phone"],
        state=CallState(row["state"]),
        started_at=row["started_at"],
        answered_at=row["answered_at"],
        bridged_at=row["bridged_at"],
        ended_at=row["ended_at"],
        manager_id=row["manager_id"],
        disposition=Disposition(row["disposition"]) if row["disposition"] else None,
        hangup_cause=row["hangup_cause"],
        recording_file=row["recording_file"],
        recording_url=row["recording_url"],
        pbx_billable_seconds=row["pbx_billable_seconds"],
        legs=[
            ManagerLeg(
                manager_id=leg["manager_id"],
                started_at=leg["started_at"],
                answered_at=leg["answered_at"],
                ended_at=leg["ended_at"],
                result=LegResult(leg["result"]) if leg["result"] else None,
            )
            for leg in leg_rows
        ],
    )


def _update_many(table: Table, key: str, rows: list[dict[str, Any]]) -> tuple[Update, list[dict[str, Any]]]:
    """One UPDATE ... WHERE <key> = ? executed for every row: a single round trip for a batch."""
    columns = [name for name in rows[0] if name != key]
    statement = (
        update(table)
        .where(table.c[key] == bindparam("b_" + key, type_=table.c[key].type))
        .values({name: bindparam("b_" + name, type_=table.c[name].type) for name in columns})
    )
    return statement, [{"b_" + name: value for name, value in row.items()} for row in rows]


class SqlLeads:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, lead: Lead) -> None:
        result = await self._conn.execute(insert(leads).values(_lead_values(lead)).returning(leads.c.id))
        lead.id = result.scalar_one()

    async def get(self, lead_id: int) -> Lead | None:
        row = (await self._conn.execute(select(leads).where(leads.c.id == lead_id))).mappings().first()
        return lead_from_row(row) if row else None

    async def by_external_id(self, external_id: str) -> Lead | None:
        query = select(leads).where(leads.c.external_id == external_id)
        row = (await self._conn.execute(query)).mappings().first()
        return lead_from_row(row) if row else None

    async def claim_due(self, now: datetime, limit: int) -> list[Lead]:
        # One statement, so two dialers can never claim the same lead: SQLite serialises
        # writers (BEGIN IMMEDIATE); PostgreSQL skips rows another transaction holds.
        due = (
            select(leads.c.id)
            .where(leads.c.status.in_(_DUE), leads.c.next_attempt_at <= now)
            .order_by(leads.c.next_attempt_at, leads.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        claim = (
            update(leads)
            .where(leads.c.id.in_(due.scalar_subquery()))
            .values(
                status=LeadStatus.DIALING.value,
                attempts=leads.c.attempts + 1,
                next_attempt_at=None,
                updated_at=now,
            )
            .returning(*leads.c)
        )
        rows = (await self._conn.execute(claim)).mappings().all()
        return sorted((lead_from_row(r) for r in rows), key=lambda lead: lead.id or 0)

    async def update(self, changed: Sequence[Lead]) -> None:
        if changed:
            await self._conn.execute(*_update_many(leads, "id", [{"id": x.id, **_lead_values(x)} for x in changed]))

    async def next_due_at(self) -> datetime | None:
        query = select(func.min(leads.c.next_attempt_at)).where(leads.c.status.in_(_DUE))
        return (await self._conn.execute(query)).scalar_one_or_none()


class SqlCalls:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, new: Sequence[Call]) -> None:
        if not new:
            return
        statement = insert(calls).returning(calls.c.id, sort_by_parameter_order=True)
        result = await self._conn.execute(statement, [_call_values(call) for call in new])
        for call, call_id in zip(new, result.scalars(), strict=True):
            call.id = call_id
        await self._store_legs(new)

    async def update(self, changed: Sequence[Call]) -> None:
        if changed:
            await self._conn.execute(*_update_many(calls, "id", [{"id": c.id, **_call_values(c)} for c in changed]))
            await self._store_legs(changed)

    async def _store_legs(self, changed: Sequence[Call]) -> None:
        # Legs are few per call: replacing them is two statements for any batch.
        await self._conn.execute(delete(call_legs).where(call_legs.c.call_id.in_([c.id for c in changed])))
        rows = [
            {"call_id": call.id, "leg_no": n, **_leg_values(leg)}
            for call in changed
            for n, leg in enumerate(call.legs, start=1)
        ]
        if rows:
            await self._conn.execute(insert(call_legs), rows)

    async def add_billing(self, billed: Sequence[tuple[str, int]]) -> None:
        if not billed:
            return
        statement = (
            update(calls)
            .where(calls.c.channel_id == bindparam("b_channel_id"))
            .values(pbx_billable_seconds=func.coalesce(calls.c.pbx_billable_seconds, 0) + bindparam("b_seconds"))
        )
        await self._conn.execute(statement, [{"b_channel_id": c, "b_seconds": n} for c, n in billed])

    async def _with_legs(self, rows: Sequence[RowMapping]) -> list[Call]:
        ids = [r["id"] for r in rows]
        legs_by_call: dict[int, list[RowMapping]] = {i: [] for i in ids}
        if ids:
            query = (
                select(call_legs).where(call_legs.c.call_id.in_(ids)).order_by(call_legs.c.call_id, call_legs.c.leg_no)
            )
            for leg in (await self._conn.execute(query)).mappings():
                legs_by_call[leg["call_id"]].append(leg)
        return [call_from_rows(r, legs_by_call[r["id"]]) for r in rows]

    async def for_lead(self, lead_id: int) -> list[Call]:
        query = select(calls).where(calls.c.lead_id == lead_id).order_by(calls.c.id)
        return await self._with_legs((await self._conn.execute(query)).mappings().all())

    async def unfinished(self) -> list[Call]:
        query = select(calls).where(calls.c.state != CallState.ENDED.value).order_by(calls.c.id)
        return await self._with_legs((await self._conn.execute(query)).mappings().all())


class SqlOutbox:
    """Buffers events and writes them in one INSERT just before the commit."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self._rows: list[dict[str, Any]] = []

    def add(self, events: Sequence[DomainEvent], at: datetime) -> None:
        for event in events:
            event_id = str(uuid.uuid4())
            message = {"id": event_id, "type": event.type, "ts": at.isoformat(), **event.data()}
            self._rows.append(
                {
                    "id": event_id,
                    "type": event.type,
                    "lead_id": event.lead_id,
                    "payload": json.dumps(message, ensure_ascii=False, separators=(",", ":")),
                    "created_at": at,
                }
            )

    @property
    def pending(self) -> int:
        return len(self._rows)

    async def flush(self) -> None:
        if self._rows:
            await self._conn.execute(insert(outbox), self._rows)
            self._rows = []


class SqlUnitOfWork:
    leads: SqlLeads
    calls: SqlCalls
    outbox: SqlOutbox

    def __init__(self, db: Database, on_events_committed: Callable[[], None] | None = None) -> None:
        self._db = db
        self._on_events_committed = on_events_committed
        self._conn: AsyncConnection | None = None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        self._conn = await self._stack.enter_async_context(self._db.write())
        self.leads = SqlLeads(self._conn)
        self.calls = SqlCalls(self._conn)
        self.outbox = SqlOutbox(self._conn)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._conn = None
        await self._stack.aclose()  # rolls back whatever was not committed

    async def commit(self) -> None:
        assert self._conn is not None
        had_events = self.outbox.pending > 0
        await self.outbox.flush()
        await self._conn.commit()
        if had_events and self._on_events_committed is not None:
            self._on_events_committed()
