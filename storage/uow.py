"""One transaction per unit of work: leads, calls and outbox rows commit together."""

from __future__ import annotations

import contextlib
import functools
import json
import operator
import sqlite3
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Self

from sqlalchemy import (
    Dialect,
    Integer,
    RowMapping,
    Select,
    Table,
    bindparam,
    delete,
    false,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.expression import UpdateBase

from router.events import SCHEMA_VERSION, DomainEvent, ManagerStateChanged
from router.model import Call, CallState, HistoryEntry, Lead, LeadStatus, ManagerLeg, OutcomeReport
from storage.cluster import pbx_of
from storage.engine import Database, InlineConnection, direct_sqlite, lock_key
from storage.schema import (
    UtcDateTime,
    call_legs,
    calls,
    lead_history,
    lead_outcomes,
    leads,
    manager_reservations,
    manager_states,
    outbox,
)

_DUE = (LeadStatus.NEW, LeadStatus.SCHEDULED)

# Columns a record's attribute of the same name does not fill (see storage/schema.py):
_ASSIGNED_BY_INSERT = {"id"}
_ADDED_BY_CDRS = {"pbx_billable_seconds"}  # CDRs add to it (add_billing); a call never overwrites it
_DURATIONS = {"ring_seconds", "hold_seconds", "talk_seconds", "total_seconds"}  # stored for stats; Call derives them
_LEG_KEY = {"call_id", "leg_no"}  # which call, and the leg's place in call.legs
_STEERING = {"daemon_id"}  # which daemon steers the call (storage.cluster): set on insert and on takeover only
# The CRM's outcome is written by SqlOutcomes alone: the dialer's copy of a lead in a live call
# must not overwrite one reported meanwhile.
_SET_BY_OUTCOMES = {"outcome"}
_SET_BY_RETENTION = {"recording_deleted_at"}  # SqlRecordings alone, long after the call ended


def _row(table: Table, record: object, leave_out: Collection[str] = ()) -> dict[str, Any]:
    """The record's attributes under the table's column names, but for the columns left out."""
    names, values = _columns(table, frozenset(leave_out))
    return dict(zip(names, values(record), strict=True))


@functools.cache
def _columns(table: Table, leave_out: frozenset[str]) -> tuple[tuple[str, ...], Callable[[object], tuple[Any, ...]]]:
    """The table's column names but those left out, and a getter of a record's attributes of those
    names (one call for all of them: a row of a lead was 7 µs attribute by attribute)."""
    names = tuple(name for name in table.columns.keys() if name not in leave_out)
    assert len(names) > 1  # attrgetter of one name gives the value, not a tuple
    return names, operator.attrgetter(*names)


def _attributes(row: RowMapping, leave_out: Collection[str]) -> dict[str, Any]:
    """The row's columns as the record's constructor arguments, but for the columns left out."""
    return {name: value for name, value in row.items() if name not in leave_out}


def lead_from_row(row: RowMapping | dict[str, Any]) -> Lead:
    return Lead(**row)


def call_from_rows(row: RowMapping, leg_rows: Sequence[RowMapping]) -> Call:
    legs = [ManagerLeg(**_attributes(leg, _LEG_KEY)) for leg in leg_rows]
    return Call(**_attributes(row, _DURATIONS | _STEERING), legs=legs)


# Statements of the hot path are built once: building and keying one (SQLAlchemy's cache key)
# cost more CPU than SQLite's running it, at every lead.
_UPDATES: dict[tuple[str, str, tuple[str, ...]], _Direct] = {}


async def _update_many(conn: AsyncConnection, table: Table, key: str, rows: list[dict[str, Any]]) -> None:
    """One UPDATE ... WHERE <key> = ? executed for every row: a single round trip for a batch."""
    columns = tuple(name for name in rows[0] if name != key)
    statement = _UPDATES.get((table.name, key, columns))
    if statement is None:
        statement = _UPDATES[table.name, key, columns] = _Direct(
            update(table)
            .where(table.c[key] == bindparam("b_" + key, type_=table.c[key].type))
            .values({name: bindparam("b_" + name, type_=table.c[name].type) for name in columns})
        )
    await _execute_many(conn, statement, [{"b_" + name: value for name, value in row.items()} for row in rows])


# Per placeholder: the parameter's name, the item's place in it for a list (an IN list), and
# SQLAlchemy's conversion of the value; or (None, None, None, the statement's own value, converted).
_Binds = list[tuple[str | None, int | None, Callable[[Any], Any] | None, Any]]


class _Direct:
    """A statement of the hot path run on the sqlite3 connection itself (storage.engine.direct_sqlite).

    SQLAlchemy compiles it once per dialect (and per length of each IN list) and lends its type
    conversions (UTC datetimes, JSON, enums), so rows read and write exactly as through it; only
    its execution path is skipped: that path and the async adapter's cost 50-200 µs a statement,
    where SQLite's work is ~10, and a lead's two transactions made six of them.
    """

    def __init__(self, statement: UpdateBase | Select[Any]) -> None:
        self.statement = statement
        self._plans: weakref.WeakKeyDictionary[Dialect, dict[tuple[tuple[str, int], ...], tuple[str, _Binds]]] = (
            weakref.WeakKeyDictionary()
        )
        # The same plans by the parameters' names alone, for those with no list among them: a
        # parameter is a list or not by the statement's making, so its names tell the SQL.
        self._plans_by_names: weakref.WeakKeyDictionary[Dialect, dict[tuple[str, ...], tuple[str, _Binds]]] = (
            weakref.WeakKeyDictionary()
        )
        self._results: weakref.WeakKeyDictionary[Dialect, list[tuple[str, Callable[[Any], Any] | None]]] = (
            weakref.WeakKeyDictionary()
        )

    def _plan(self, dialect: Dialect, row: dict[str, Any]) -> tuple[str, _Binds]:
        by_names = self._plans_by_names.get(dialect)
        if by_names is not None and (plan := by_names.get(tuple(row))) is not None:
            return plan
        # The SQL depends on the parameters given and the length of each list among them, not on values.
        shape = tuple((name, len(value) if isinstance(value, list) else -1) for name, value in row.items())
        plans = self._plans.setdefault(dialect, {})
        plan = plans.get(shape)
        if plan is None:
            keys = [name for name, _ in shape]
            compiled = self.statement.compile(dialect=dialect, column_keys=keys)
            expanded = compiled.construct_expanded_state(
                {name: None if length < 0 else [None] * length for name, length in shape}
            )
            items = {
                item: (name, index)
                for name, names in (expanded.parameter_expansion or {}).items()
                for index, item in enumerate(names)
            }
            binds: _Binds = []
            for placeholder in expanded.positiontup or ():
                name, index = items.get(placeholder, (placeholder, None))
                bound = compiled.binds.get(name)
                convert: Callable[[Any], Any] | None
                if bound is not None and dialect.name == "sqlite" and isinstance(bound.type, UtcDateTime):
                    convert = UtcDateTime.to_sqlite
                else:
                    convert = expanded.processors.get(placeholder)
                if convert is None and bound is not None:
                    convert = bound.type.dialect_impl(dialect).bind_processor(dialect)
                if name in row:
                    binds.append((name, index, convert, None))
                else:
                    fixed = expanded.parameters[placeholder]
                    binds.append((None, None, None, fixed if convert is None else convert(fixed)))
            plan = plans[shape] = (expanded.statement, binds)
            if all(length < 0 for _, length in shape):
                self._plans_by_names.setdefault(dialect, {})[tuple(row)] = plan
        return plan

    def _values(self, binds: _Binds, row: dict[str, Any]) -> list[Any]:
        values = []
        for name, index, convert, fixed in binds:
            if name is None:
                values.append(fixed)
                continue
            value = row[name] if index is None else row[name][index]
            values.append(value if convert is None else convert(value))
        return values

    def each(self, raw: sqlite3.Connection, dialect: Dialect, rows: list[dict[str, Any]]) -> list[sqlite3.Cursor]:
        """Run the statement once per row; the cursors, for their lastrowid and rowcount."""
        sql, binds = self._plan(dialect, rows[0])
        return [raw.execute(sql, self._values(binds, row)) for row in rows]

    def many(self, raw: sqlite3.Connection, dialect: Dialect, rows: list[dict[str, Any]]) -> None:
        sql, binds = self._plan(dialect, rows[0])
        raw.executemany(sql, [self._values(binds, row) for row in rows])

    def returned(self, raw: sqlite3.Connection, dialect: Dialect, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Run the statement once; the rows it returned, by column name, converted as SQLAlchemy reads them."""
        sql, binds = self._plan(dialect, params)
        columns = self._results.get(dialect)
        if columns is None:
            returned = self.statement.exported_columns
            columns = self._results[dialect] = [
                (
                    str(name),
                    UtcDateTime.from_sqlite
                    if dialect.name == "sqlite" and isinstance(column.type, UtcDateTime)
                    else column.type.dialect_impl(dialect).result_processor(dialect, None),
                )
                for name, column in returned.items()
            ]
        return [
            {
                name: value if process is None else process(value)
                for (name, process), value in zip(columns, row, strict=True)
            }
            for row in raw.execute(sql, self._values(binds, params)).fetchall()
        ]


# Rows run directly between two chances of a turn for the loop: a batch of 200 leads' inserts
# and events in one go held it 7-9 ms.
DIRECT_CHUNK = 25


async def _in_turns(driver: InlineConnection, rows: list[dict[str, Any]]) -> AsyncIterator[list[dict[str, Any]]]:
    """The rows in chunks of DIRECT_CHUNK, the loop's turn before each when it is due."""
    for start in range(0, len(rows), DIRECT_CHUNK):
        await driver.turn()
        yield rows[start : start + DIRECT_CHUNK]


async def _execute_many(conn: AsyncConnection, direct: _Direct, rows: list[dict[str, Any]]) -> None:
    """The statement once per row: on the sqlite3 connection itself while the loop holds it."""
    driver = direct_sqlite(conn)
    if driver is None:
        await conn.execute(direct.statement, rows)
        return
    async for chunk in _in_turns(driver, rows):
        direct.many(driver.raw, conn.dialect, chunk)


def _not_for(pbxes: Collection[str]) -> list[ColumnElement[bool]]:
    """Leads not meant for one of these PBXes (their dialers claim them)."""
    return [or_(leads.c.pbx.is_(None), leads.c.pbx.not_in(pbxes))] if pbxes else []


async def _insert_with_ids(conn: AsyncConnection, table: Table, rows: list[dict[str, Any]]) -> list[int]:
    """Insert the rows; their new ids, in the rows' order.

    On SQLite while the loop holds the write lock: a plain INSERT per row on the sqlite3
    connection, each row's id its lastrowid (a statement costs there what SQLite's work does).
    Else RETURNING, in the rows' order (SQLAlchemy inserts a row per statement where the
    database does not promise that order).
    """
    driver = direct_sqlite(conn)
    if driver is None:
        return list((await conn.execute(_INSERTS[table.name], rows)).scalars())
    ids = []
    async for chunk in _in_turns(driver, rows):
        for cursor in _DIRECT_INSERTS[table.name].each(driver.raw, conn.dialect, chunk):
            # No conflict clause, an INTEGER PRIMARY KEY: the row went in, and lastrowid is its id.
            assert cursor.rowcount == 1 and cursor.lastrowid is not None
            ids.append(cursor.lastrowid)
    return ids


_INSERTS = {table.name: insert(table).returning(table.c.id, sort_by_parameter_order=True) for table in (leads, calls)}
_DIRECT_INSERTS = {table.name: _Direct(insert(table)) for table in (leads, calls)}
_INSERT_OUTBOX = _Direct(insert(outbox))
_DELETE_LEGS = delete(call_legs).where(call_legs.c.call_id.in_(bindparam("b_call_ids", expanding=True)))
_INSERT_LEGS = insert(call_legs)


_CLAIM_NOW = bindparam("b_now", type_=leads.c.updated_at.type)
_CLAIM_LIMIT = bindparam("b_limit", type_=Integer())
# What a claim changes in a lead's row, and the same change made to a lead in memory (claim_due's
# fresh leads): the two stay side by side so they cannot drift apart.
_CLAIMED = {
    "status": LeadStatus.DIALING,
    "attempts": leads.c.attempts + 1,
    "next_attempt_at": None,
    "updated_at": _CLAIM_NOW,
}


def _claimed(lead: Lead, now: datetime) -> Lead:
    return replace(lead, status=LeadStatus.DIALING, attempts=lead.attempts + 1, next_attempt_at=None, updated_at=now)


def _in_dial_order(claimed: Iterable[Lead]) -> list[Lead]:
    """Claimed leads in the order they are dialled: the lower backlog rank first, then the older."""
    return sorted(claimed, key=lambda lead: (lead.backlog_rank, lead.id or 0))


def _due(skip_pbxes: frozenset[str]) -> list[ColumnElement[bool]]:
    return [leads.c.status.in_(_DUE), leads.c.next_attempt_at <= _CLAIM_NOW, *_not_for(skip_pbxes)]


@functools.cache
def _claim(skip_pbxes: frozenset[str]) -> _Direct:
    """The due leads, not those of ``skip_pbxes`` (their dialers claim them), taken in one statement,
    so two dialers can never claim the same lead: SQLite serialises writers (BEGIN IMMEDIATE);
    PostgreSQL skips rows another transaction holds. Built once per set of PBXes."""
    due = (
        select(leads.c.id)
        .where(*_due(skip_pbxes))
        .order_by(leads.c.next_attempt_at, leads.c.backlog_rank, leads.c.id)
        .limit(_CLAIM_LIMIT)
        .with_for_update(skip_locked=True)
    )
    return _Direct(update(leads).where(leads.c.id.in_(due.scalar_subquery())).values(_CLAIMED).returning(*leads.c))


@functools.cache
def _claim_fresh(skip_pbxes: frozenset[str]) -> _Direct:
    """The leads ``b_ids`` claimed when they are all that is due: when the due leads, counted up to
    ``b_limit`` (ix_leads_due: the count stops there), are ``b_fresh``; else none. One statement,
    where a count and then an update by id were two (~30 us of the loop's CPU a lead)."""
    due = select(leads.c.id).where(*_due(skip_pbxes)).limit(_CLAIM_LIMIT).subquery()
    counted = select(func.count()).select_from(due).scalar_subquery()
    return _Direct(
        update(leads)
        .where(leads.c.id.in_(bindparam("b_ids", expanding=True)), counted == bindparam("b_fresh", type_=Integer()))
        .values(_CLAIMED)
    )


# The intake's reads of a batch (an external_id given, a duplicate window set).
_BY_EXTERNAL_IDS = _Direct(select(leads).where(leads.c.external_id.in_(bindparam("b_ids", expanding=True))))
_OF_PHONES = _Direct(
    select(leads).where(
        leads.c.phone.in_(bindparam("b_phones", expanding=True)),
        leads.c.created_at >= bindparam("b_since", type_=leads.c.created_at.type),
    )
)


async def _rows(conn: AsyncConnection, direct: _Direct, params: dict[str, Any]) -> Sequence[Any]:
    """The rows the statement gives, by column name: on the sqlite3 connection itself while the loop holds it."""
    if (driver := direct_sqlite(conn)) is not None:
        await driver.turn()
        return direct.returned(driver.raw, conn.dialect, params)
    return (await conn.execute(direct.statement, params)).mappings().all()


async def _row_count(conn: AsyncConnection, direct: _Direct, params: dict[str, Any]) -> int:
    """The rows the statement changed: on the sqlite3 connection itself while the loop holds it."""
    if (driver := direct_sqlite(conn)) is not None:
        await driver.turn()
        (cursor,) = direct.each(driver.raw, conn.dialect, [params])
        return cursor.rowcount
    return (await conn.execute(direct.statement, params)).rowcount


@functools.cache
def _next_due(skip_pbxes: frozenset[str]) -> Select[Any]:
    return select(func.min(leads.c.next_attempt_at)).where(leads.c.status.in_(_DUE), *_not_for(skip_pbxes))


class SqlLeads:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, new: Sequence[Lead]) -> list[Lead]:
        """Insert and set each lead's ``id``; returns those not stored because another lead has
        their external_id. The insert itself decides (ON CONFLICT DO NOTHING), so two intakes of one
        lead (two daemons, two workers) can never both store it: the loser waits for the winner's
        commit and is told. The leads without an external_id cannot conflict: plain inserts."""
        plain = [lead for lead in new if lead.external_id is None]
        keyed = [lead for lead in new if lead.external_id is not None]
        if plain:
            rows = [_row(leads, lead, _ASSIGNED_BY_INSERT) for lead in plain]
            for lead, lead_id in zip(plain, await _insert_with_ids(self._conn, leads, rows), strict=True):
                lead.id = lead_id
        if not keyed:
            return []
        dialect_insert = postgresql.insert if self._conn.dialect.name == "postgresql" else sqlite.insert
        statement = (
            dialect_insert(leads)
            .on_conflict_do_nothing(index_elements=[leads.c.external_id])
            .returning(leads.c.id, leads.c.external_id)
        )
        rows = [_row(leads, lead, _ASSIGNED_BY_INSERT) for lead in keyed]
        ids = {external_id: lead_id for lead_id, external_id in await self._conn.execute(statement, rows)}
        refused = []
        for lead in keyed:
            if lead.external_id in ids:
                lead.id = ids[lead.external_id]
            else:
                refused.append(lead)
        return refused

    async def by_external_ids(self, external_ids: Collection[str]) -> dict[str, Lead]:
        if not external_ids:
            return {}
        found = [lead_from_row(row) for row in await _rows(self._conn, _BY_EXTERNAL_IDS, {"b_ids": [*external_ids]})]
        by_id = {lead.external_id: lead for lead in found if lead.external_id is not None}
        if missing := [external_id for external_id in external_ids if external_id not in by_id]:
            # A duplicate's own external id answers with the lead it was merged into.
            merged = (
                select(leads, lead_history.c.external_id.label("merged_as"))
                .join(lead_history, leads.c.id == lead_history.c.lead_id)
                .where(lead_history.c.external_id.in_(missing))
            )
            for row in (await self._conn.execute(merged)).mappings():
                by_id.setdefault(row["merged_as"], Lead(**{name: row[name] for name in leads.c.keys()}))
        return by_id

    async def get(self, lead_id: int, *, for_update: bool = False) -> Lead | None:
        query = select(leads).where(leads.c.id == lead_id)
        if for_update:  # PostgreSQL locks the row to the commit; SQLite's writers are serialised already
            query = query.with_for_update()
        row = (await self._conn.execute(query)).mappings().first()
        return lead_from_row(row) if row else None

    async def of_phones(self, phones: Collection[str], since: datetime) -> list[Lead]:
        """The leads from these phones created since ``since`` (ix_leads_phone): duplicates are among them."""
        params = {"b_phones": [*phones], "b_since": since}
        return [lead_from_row(row) for row in await _rows(self._conn, _OF_PHONES, params)]

    async def sla_overdue(self, now: datetime, limit: int) -> list[Lead]:
        """Owned leads past their SLA deadline that the CRM said nothing of (ix_leads_sla)."""
        query = (
            select(leads)
            .where(
                leads.c.sla_due_at <= now,
                leads.c.status == LeadStatus.ASSIGNED,
                leads.c.outcome.is_(None),
                leads.c.owner_id.is_not(None),
            )
            .order_by(leads.c.sla_due_at, leads.c.id)
            .limit(limit)
            # Several daemons on PostgreSQL: each overdue lead is released by one of them.
            .with_for_update(skip_locked=True)
        )
        return [lead_from_row(row) for row in (await self._conn.execute(query)).mappings()]

    async def next_sla_due_at(self) -> datetime | None:
        query = select(func.min(leads.c.sla_due_at)).where(
            leads.c.status == LeadStatus.ASSIGNED, leads.c.outcome.is_(None)
        )
        return (await self._conn.execute(query)).scalar_one_or_none()

    async def open_leads_by_owner(self) -> dict[str, int]:
        """Each owner's undecided leads: a released lead goes to whoever has the fewest."""
        query = (
            select(leads.c.owner_id, func.count())
            .where(leads.c.owner_id.is_not(None), leads.c.outcome.is_(None))
            .group_by(leads.c.owner_id)
        )
        return {owner: count for owner, count in (await self._conn.execute(query)).all()}

    async def claim_due(
        self, now: datetime, limit: int, skip_pbxes: Collection[str] = (), fresh: Sequence[Lead] = ()
    ) -> list[Lead]:
        skip = frozenset(skip_pbxes)
        # The intake's case: its new leads are all that is due. Then the claim takes exactly them,
        # whatever its order, so they are claimed by id and not read back: the claim's ordered
        # UPDATE ... RETURNING and the rows' conversion were ~40% of the intake's transaction.
        mine = [
            lead
            for lead in fresh
            if lead.status in _DUE
            and lead.next_attempt_at is not None
            and lead.next_attempt_at <= now
            and lead.pbx not in skip
        ]
        if mine and len(mine) <= limit:
            params = {"b_ids": [lead.id for lead in mine], "b_fresh": len(mine), "b_limit": len(mine) + 1, "b_now": now}
            claimed = await _row_count(self._conn, _claim_fresh(skip), params)
            if claimed:
                assert claimed == len(mine)  # the count decides for all of them at once
                return _in_dial_order(_claimed(lead, now) for lead in mine)
        rows = await _rows(self._conn, _claim(skip), {"b_now": now, "b_limit": limit})
        return _in_dial_order(lead_from_row(row) for row in rows)

    async def update(self, changed: Sequence[Lead]) -> None:
        if changed:
            rows = [_row(leads, lead, _SET_BY_OUTCOMES) for lead in changed]
            await _update_many(self._conn, leads, "id", rows)

    async def next_due_at(self, skip_pbxes: Collection[str] = ()) -> datetime | None:
        return (await self._conn.execute(_next_due(frozenset(skip_pbxes)))).scalar_one_or_none()

    async def owner_of_phone(self, phone: str) -> str | None:
        # The newest lead from this phone that has an owner (ix_leads_phone).
        query = (
            select(leads.c.owner_id)
            .where(leads.c.phone == phone, leads.c.owner_id.is_not(None))
            .order_by(leads.c.id.desc())
            .limit(1)
        )
        return (await self._conn.execute(query)).scalar_one_or_none()

    async def newest_by_phone(self, phone: str) -> Lead | None:
        query = select(leads).where(leads.c.phone == phone).order_by(leads.c.id.desc()).limit(1)
        row = (await self._conn.execute(query)).mappings().first()
        return lead_from_row(row) if row else None


class SqlCalls:
    def __init__(self, conn: AsyncConnection, daemon_id: str | None = None) -> None:
        """``daemon_id``: the daemon steering the calls this adds or takes over (readers need none)."""
        self._conn = conn
        self._daemon_id = daemon_id

    async def add(self, new: Sequence[Call]) -> None:
        if not new:
            return
        rows = [
            _row(calls, call, _ASSIGNED_BY_INSERT | _ADDED_BY_CDRS | _SET_BY_RETENTION | _STEERING)
            | {"daemon_id": self._daemon_id}
            for call in new
        ]
        for call, call_id in zip(new, await _insert_with_ids(self._conn, calls, rows), strict=True):
            call.id = call_id
        await self._store_legs(new)

    async def add_caller(self, call: Call) -> bool:
        row = _row(calls, call, _ASSIGNED_BY_INSERT | _ADDED_BY_CDRS | _SET_BY_RETENTION | _STEERING)
        dialect_insert = postgresql.insert if self._conn.dialect.name == "postgresql" else sqlite.insert
        statement = (
            dialect_insert(calls)
            .values(row | {"daemon_id": self._daemon_id})
            .on_conflict_do_nothing(index_elements=[calls.c.channel_id])
            .returning(calls.c.id)
        )
        call_id = (await self._conn.execute(statement)).scalar()
        if call_id is None:
            return False
        call.id = call_id
        await self._store_legs([call])
        return True

    async def update(self, changed: Sequence[Call]) -> None:
        if changed:
            rows = [_row(calls, call, _ADDED_BY_CDRS | _SET_BY_RETENTION | _STEERING) for call in changed]
            await _update_many(self._conn, calls, "id", rows)
            await self._store_legs(changed)

    async def _store_legs(self, changed: Sequence[Call]) -> None:
        # Legs are few per call: replacing them is two statements for any batch. A call never
        # loses a leg, so one with none has none stored (a client who did not answer, say).
        with_legs = [call for call in changed if call.legs]
        if not with_legs:
            return
        await self._conn.execute(_DELETE_LEGS, {"b_call_ids": [call.id for call in with_legs]})
        rows = [
            {"call_id": call.id, "leg_no": leg_no, **_row(call_legs, leg, _LEG_KEY)}
            for call in with_legs
            for leg_no, leg in enumerate(call.legs, start=1)
        ]
        await self._conn.execute(_INSERT_LEGS, rows)

    async def add_billing(self, billed: Sequence[tuple[str, int]]) -> None:
        if not billed:
            return
        # Every daemon on a PBX hears every call's Cdr: only the call's steering daemon adds it (once,
        # and no two daemons update the same rows in their own orders: deadlocks on PostgreSQL).
        steered = [] if self._daemon_id is None else [calls.c.daemon_id == self._daemon_id]
        statement = (
            update(calls)
            .where(calls.c.channel_id == bindparam("b_channel_id"), *steered)
            .values(pbx_billable_seconds=func.coalesce(calls.c.pbx_billable_seconds, 0) + bindparam("b_seconds"))
        )
        await self._conn.execute(
            statement, [{"b_channel_id": channel_id, "b_seconds": seconds} for channel_id, seconds in billed]
        )

    async def _with_legs(self, rows: Sequence[RowMapping]) -> list[Call]:
        ids = [row["id"] for row in rows]
        legs_by_call: dict[int, list[RowMapping]] = {call_id: [] for call_id in ids}
        if ids:
            query = (
                select(call_legs).where(call_legs.c.call_id.in_(ids)).order_by(call_legs.c.call_id, call_legs.c.leg_no)
            )
            for leg in (await self._conn.execute(query)).mappings():
                legs_by_call[leg["call_id"]].append(leg)
        return [call_from_rows(row, legs_by_call[row["id"]]) for row in rows]

    async def for_leads(self, lead_ids: Sequence[int]) -> list[Call]:
        query = select(calls).where(calls.c.lead_id.in_(lead_ids)).order_by(calls.c.id)
        return await self._with_legs((await self._conn.execute(query)).mappings().all())

    async def for_lead(self, lead_id: int) -> list[Call]:
        query = select(calls).where(calls.c.lead_id == lead_id).order_by(calls.c.id)
        return await self._with_legs((await self._conn.execute(query)).mappings().all())

    async def waiting_elsewhere(self) -> int:
        """Other daemons' calls on our PBX whose clients are being dialled or wait on hold: each will
        want one of the free managers every daemon of the PBX sees. Dispatchers on PostgreSQL take
        turns from here to their commit (a transaction-scoped advisory lock), so two never count the
        same free managers."""
        assert self._daemon_id is not None
        if self._conn.dialect.name == "postgresql":
            turn = lock_key(f"dispatch:{pbx_of(self._daemon_id)}")
            await self._conn.execute(select(func.pg_advisory_xact_lock(turn)))
        query = select(func.count()).where(
            calls.c.ended_at.is_(None),
            calls.c.state.in_([CallState.DIALING, CallState.HOLDING]),
            calls.c.daemon_id != self._daemon_id,
            calls.c.daemon_id.startswith(pbx_of(self._daemon_id) + "#"),  # our PBX's: the managers we see
        )
        return int((await self._conn.execute(query)).scalar_one())

    async def steered_by(self) -> set[str | None]:
        """The daemons steering the calls not ended yet (None: stored before daemons had ids)."""
        query = select(calls.c.daemon_id).where(calls.c.ended_at.is_(None)).distinct()  # ix_calls_live
        return set((await self._conn.execute(query)).scalars())

    async def take_over(self, daemon_ids: Collection[str | None]) -> list[Call]:
        """Make this daemon the one steering the unfinished calls of these (gone) daemons, and their
        managers' reservations ours; returns those calls. Of two daemons taking over at once, the
        second finds nothing left: the rows it waited for no longer match."""
        named = [daemon_id for daemon_id in daemon_ids if daemon_id is not None]
        whose = or_(calls.c.daemon_id.in_(named), calls.c.daemon_id.is_(None) if None in daemon_ids else false())
        statement = (
            update(calls)
            .where(calls.c.state != CallState.ENDED, whose)
            .values(daemon_id=self._daemon_id)
            .returning(*calls.c)
        )
        rows = sorted((await self._conn.execute(statement)).mappings().all(), key=lambda row: row["id"])
        if named:
            await self._conn.execute(
                update(manager_reservations)
                .where(manager_reservations.c.daemon_id.in_(named))
                .values(daemon_id=self._daemon_id or "")
            )
        return await self._with_legs(rows)


class SqlOutcomes:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, report: OutcomeReport) -> None:
        """Keep the report and make its outcome the lead's."""
        await self._conn.execute(insert(lead_outcomes).values(_row(lead_outcomes, report, _ASSIGNED_BY_INSERT)))
        await self._conn.execute(update(leads).where(leads.c.id == report.lead_id).values(outcome=report.outcome))


class SqlHistory:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, entry: HistoryEntry) -> bool:
        row = _row(lead_history, entry, _ASSIGNED_BY_INSERT)
        if entry.external_id is None:
            await self._conn.execute(insert(lead_history).values(row))
            return True
        dialect_insert = postgresql.insert if self._conn.dialect.name == "postgresql" else sqlite.insert
        statement = (
            dialect_insert(lead_history)
            .values(row)
            .on_conflict_do_nothing(index_elements=[lead_history.c.external_id])
            .returning(lead_history.c.id)
        )
        return (await self._conn.execute(statement)).first() is not None

    async def for_lead(self, lead_id: int) -> list[HistoryEntry]:
        query = select(lead_history).where(lead_history.c.lead_id == lead_id).order_by(lead_history.c.id)
        rows = (await self._conn.execute(query)).mappings().all()
        return [HistoryEntry(**_attributes(row, _ASSIGNED_BY_INSERT)) for row in rows]


class SqlManagerStates:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, changes: Sequence[ManagerStateChanged]) -> None:
        """Keep each change of a manager's state."""
        if changes:
            await self._conn.execute(
                insert(manager_states), [_row(manager_states, change, ("seq",)) for change in changes]
            )


# An event's JSON as json.dumps(message, ensure_ascii=False, separators=(",", ":")) writes it, with
# the encoder made once (json.dumps makes one per call when given options: a quarter of its time).
_PAYLOAD = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class SqlOutbox:
    """Buffers events and writes them in one INSERT just before the commit."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self._rows: list[dict[str, Any]] = []

    def add(self, events: Sequence[DomainEvent], at: datetime) -> None:
        ts = at.isoformat()
        for event in events:
            event_id = str(uuid.uuid4())
            message = {"id": event_id, "type": event.type, "schema_version": SCHEMA_VERSION, "ts": ts, **event.data()}
            self._rows.append(
                {
                    "id": event_id,
                    "type": event.type,
                    "lead_id": event.lead_id,
                    "payload": _PAYLOAD.encode(message),
                    "created_at": at,
                }
            )

    @property
    def pending(self) -> int:
        return len(self._rows)

    async def flush(self) -> None:
        if self._rows:
            await _execute_many(self._conn, _INSERT_OUTBOX, self._rows)
            self._rows = []


class SqlUnitOfWork:
    leads: SqlLeads
    calls: SqlCalls
    outcomes: SqlOutcomes
    history: SqlHistory
    managers: SqlManagerStates
    outbox: SqlOutbox

    def __init__(
        self, db: Database, on_events_committed: Callable[[], None] | None = None, daemon_id: str | None = None
    ) -> None:
        """``daemon_id``: the daemon whose calls this unit of work stores (storage.cluster)."""
        self._db = db
        self._daemon_id = daemon_id
        self._on_events_committed = on_events_committed
        self._conn: AsyncConnection | None = None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        self._conn = await self._stack.enter_async_context(self._db.write())
        self.leads = SqlLeads(self._conn)
        self.calls = SqlCalls(self._conn, self._daemon_id)
        self.outcomes = SqlOutcomes(self._conn)
        self.history = SqlHistory(self._conn)
        self.managers = SqlManagerStates(self._conn)
        self.outbox = SqlOutbox(self._conn)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._conn = None
        # Rolls back whatever was not committed. The block's error goes in too, so that
        # Database.write can tell a full or read-only disk (StorageUnavailable) from a bug.
        error = exc[1] if len(exc) == 3 and isinstance(exc[1], BaseException) else None
        await self._stack.__aexit__(type(error) if error else None, error, error.__traceback__ if error else None)

    async def commit(self, meanwhile: Callable[[], None] | None = None, then: Callable[[], None] | None = None) -> None:
        assert self._conn is not None
        had_events = self.outbox.pending > 0
        await self.outbox.flush()
        await self._db.commit(self._conn, meanwhile, then)
        if had_events and self._on_events_committed is not None:
            self._on_events_committed()
