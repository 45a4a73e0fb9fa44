"""Storage on SQLite and on PostgreSQL (the db fixture runs each test on both)."""

from __future__ import annotations

import asyncio
import copy
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, insert, inspect, select
from sqlalchemy import text as sql_text
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.exc import IntegrityError

from leadrouter.postgres import scratch_database
from router.model import Call, CallState, Disposition, HistoryEntry, HistoryKind, Lead, LeadStatus, LegResult
from storage.engine import BUSY_TIMEOUT_MS, Database, _alembic_config, newest_revision
from storage.queries import SqlQueries
from storage.schema import UtcDateTime, lead_history, leads, metadata
from storage.uow import SqlLeads, SqlUnitOfWork, lead_from_row
from storage.webhooks import SqlWebhooks

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
REPO = Path(__file__).parents[2]


def _lead(number: int, **kw: object) -> Lead:
    return Lead(phone=f"+7916000{number:04d}", name=f"Лид {number}", source="web", external_id=None,
                payload={"number": number}, created_at=NOW, **kw)  # fmt: skip


@pytest.fixture(params=["sqlite", "postgresql"])
async def empty_databases(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """Two empty databases of one backend."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'one.db'}", f"sqlite+aiosqlite:///{tmp_path / 'two.db'}"
        return
    server, _ = request.getfixturevalue("postgres_template")
    async with scratch_database(server, "lr_one") as one, scratch_database(server, "lr_two") as two:
        yield one, two


async def _alembic(db: Database, run: Callable[[Config, str], None], revision: str) -> None:
    """An Alembic command on ``db``, in one transaction, as Database.migrate runs its upgrade."""

    def step(connection: Connection) -> None:
        cfg = _alembic_config()
        cfg.attributes["connection"] = connection
        run(cfg, revision)

    async with db.write() as conn:
        if not conn.in_transaction():  # on SQLite, write() leaves the begin to the first statement
            await conn.begin()
        await conn.run_sync(step)
        await conn.commit()


def _layout(connection: Connection) -> dict[str, dict[str, object]]:
    """Each table's columns, keys, indexes and constraints, in an order of their own (a migration
    that adds a column puts it last; the schema may list it anywhere)."""
    inspector = inspect(connection)
    layout: dict[str, dict[str, object]] = {}
    for table in inspector.get_table_names():
        layout[table] = {
            "columns": sorted(
                (column["name"], str(column["type"]), column["nullable"], str(column["default"]))
                for column in inspector.get_columns(table)
            ),
            "primary key": inspector.get_pk_constraint(table)["constrained_columns"],
            "foreign keys": sorted(
                (tuple(key["constrained_columns"]), key["referred_table"], tuple(key["referred_columns"]))
                for key in inspector.get_foreign_keys(table)
            ),
            "indexes": sorted(
                (
                    index["name"],
                    tuple(index["column_names"]),
                    index["unique"],
                    sorted((option, str(value)) for option, value in index.get("dialect_options", {}).items()),
                )
                for index in inspector.get_indexes(table)
            ),
            "unique": sorted(
                (unique["name"] or "", tuple(unique["column_names"]))
                for unique in inspector.get_unique_constraints(table)
            ),
            "checks": sorted(str(check["sqltext"]) for check in inspector.get_check_constraints(table)),
        }
    return layout


async def test_every_migration_builds_exactly_the_tables_the_code_uses(empty_databases: tuple[str, str]) -> None:
    migrated_url, built_url = empty_databases
    async with Database(migrated_url) as migrated, Database(built_url) as built:
        await _alembic(migrated, command.upgrade, "head")  # every migration, from nothing
        await migrated.migrate()  # at the newest revision: a start changes nothing
        await built.migrate()  # empty: built from the schema
        async with migrated.read() as conn:
            diff = await conn.run_sync(lambda sync: compare_metadata(MigrationContext.configure(sync), metadata))
            by_migrations = await conn.run_sync(_layout)
        async with built.read() as conn:
            by_schema = await conn.run_sync(_layout)
        assert await migrated.revisions() == await built.revisions() == {newest_revision()}
    assert diff == []
    assert by_schema == by_migrations
    assert "alembic_version" in by_schema and "leads" in by_schema


async def test_daemons_starting_together_on_an_empty_postgresql_database_build_it_once(
    postgres_template: tuple[str, str],
) -> None:
    # A first deployment of several daemons sharing one database (PostgreSQL: README, scale-out).
    server, _ = postgres_template
    async with (
        scratch_database(server, "lr_together") as url,
        Database(url) as one,
        Database(url) as two,
        Database(url) as three,
    ):
        await asyncio.gather(one.migrate(), two.migrate(), three.migrate())
        assert await one.revisions() == {newest_revision()}
        async with one.read() as conn:
            diff = await conn.run_sync(lambda sync: compare_metadata(MigrationContext.configure(sync), metadata))
    assert diff == []


async def _migrated_in_a_new_process(url: str) -> list[str]:
    """A daemon's start on ``url``, in a process of its own: the revisions it leaves, and whether
    it imported Alembic."""
    check = f"""
import asyncio, sys
from storage.engine import Database

async def start():
    async with Database({url!r}) as db:
        await db.migrate()
        print(sorted(await db.revisions()), "alembic" in sys.modules)

asyncio.run(start())
"""
    started = await asyncio.create_subprocess_exec(sys.executable, "-c", check, cwd=REPO, stdout=subprocess.PIPE)
    out, _ = await started.communicate()
    assert started.returncode == 0
    return out.decode().split()


async def test_a_first_start_builds_the_schema_without_importing_alembic(tmp_path: Path) -> None:
    migrated = await _migrated_in_a_new_process(f"sqlite+aiosqlite:///{tmp_path / 'first.db'}")
    assert migrated == [f"['{newest_revision()}']", "False"]


def test_the_newest_revision_is_alembics_head_and_each_file_is_named_by_its_revision() -> None:
    scripts = ScriptDirectory.from_config(_alembic_config())
    assert newest_revision() == scripts.get_current_head()
    for script in scripts.walk_revisions():
        assert Path(script.path).name.startswith(f"{script.revision}_")


async def test_a_database_at_the_newest_revision_starts_without_importing_alembic(database_url: str) -> None:
    # The database fixture is migrated; a daemon restarting on it reads its revision and goes on.
    assert await _migrated_in_a_new_process(database_url) == [f"['{newest_revision()}']", "False"]


async def test_a_database_behind_the_newest_revision_is_upgraded(db: Database) -> None:
    await _alembic(db, command.downgrade, "-1")
    behind = await db.revisions()
    assert behind and behind != {newest_revision()}

    await db.migrate()

    assert await db.revisions() == {newest_revision()}
    async with db.read() as conn:
        diff = await conn.run_sync(lambda sync: compare_metadata(MigrationContext.configure(sync), metadata))
    assert diff == []


async def test_a_failing_migration_leaves_the_database_as_it_was(tmp_path: Path) -> None:
    # The newest migration's index name taken by a table (SQLite keeps both in one namespace):
    # every migration before it works, then it fails. One transaction: nothing of them is kept,
    # so the release before can still start on this database.
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'half.db'}") as db:
        async with db.write() as conn:
            await conn.exec_driver_sql("CREATE TABLE ix_manager_states_manager_at (x INTEGER)")
            await conn.commit()
        with pytest.raises(Exception, match="ix_manager_states_manager_at"):
            await db.migrate()
        assert await db.revisions() == set()
        async with db.read() as conn:
            tables = (await conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'")).scalars()
            assert set(tables) == {"ix_manager_states_manager_at"}


async def test_concurrent_claimers_never_get_the_same_lead(db: Database) -> None:
    async with SqlUnitOfWork(db) as uow:
        for number in range(300):
            await uow.leads.add([_lead(number)])
        await uow.commit()
    claimed: list[int] = []

    async def claimer() -> None:
        while True:
            async with SqlUnitOfWork(db) as uow:
                got = await uow.leads.claim_due(NOW, 7)
                await uow.commit()
            if not got:
                return
            claimed.extend(lead.id for lead in got if lead.id is not None)

    await asyncio.gather(*(claimer() for _ in range(6)))
    assert sorted(claimed) == list(range(1, 301))
    counts = await SqlQueries(db).lead_status_counts()
    assert counts == {"dialing": 300}


async def test_claim_takes_due_leads_oldest_first_and_counts_the_attempt(db: Database) -> None:
    async with SqlUnitOfWork(db) as uow:
        await uow.leads.add([_lead(1, status=LeadStatus.SCHEDULED, next_attempt_at=NOW + timedelta(minutes=5))])
        await uow.leads.add([_lead(2)])
        await uow.leads.add([_lead(3, status=LeadStatus.FAILED)])
        await uow.commit()
    async with SqlUnitOfWork(db) as uow:
        (lead,) = await uow.leads.claim_due(NOW, 10)
        assert (lead.id, lead.status, lead.attempts, lead.next_attempt_at) == (2, LeadStatus.DIALING, 1, None)
        assert await uow.leads.next_due_at() == NOW + timedelta(minutes=5)
        await uow.commit()


async def _claimed_with_and_without_the_hint(
    db: Database, earlier: list[Lead], new: list[Lead], limit: int, skip: frozenset[str] = frozenset()
) -> tuple[list[Lead], list[Lead]]:
    """What ``claim_due`` takes after ``new`` is added, told of it (fresh) and not, each in a unit of
    work left without a commit; with each lead as stored once claimed, read back in the same one."""
    async with SqlUnitOfWork(db) as uow:
        await uow.leads.add(copy.deepcopy(earlier))
        await uow.commit()
    results = []
    for hint in (True, False):
        async with SqlUnitOfWork(db) as uow:
            fresh = copy.deepcopy(new)
            await uow.leads.add(fresh)
            got = await uow.leads.claim_due(NOW, limit, skip, fresh if hint else ())
            stored = [await uow.leads.get(lead.id) for lead in got if lead.id is not None]
            assert got == stored
            # PostgreSQL's ids are not given back by a rollback: the fresh leads are told by their phone.
            results.append([replace(lead, id=None) if lead.phone in {n.phone for n in new} else lead for lead in got])
    return results[0], results[1]


@pytest.mark.parametrize(
    ("earlier", "new", "limit", "skip"),
    [
        pytest.param([], [1, 2, 3], 10, (), id="only-the-fresh-are-due"),
        pytest.param([], [1, 2, 3], 3, (), id="exactly-the-limit"),
        pytest.param([], [1, 2, 3], 2, (), id="more-fresh-than-the-limit"),
        pytest.param([-60], [1, 2], 2, (), id="an-older-due-lead-first"),
        pytest.param([-60], [1], 10, (), id="an-older-due-lead-too"),
        pytest.param([+60], [1, 2], 5, (), id="an-earlier-lead-not-due-yet"),
        pytest.param([], [1, 2], 5, ("office",), id="a-fresh-lead-of-another-pbx"),
        pytest.param([-60], [1, 2], 5, ("office",), id="a-due-lead-of-another-pbx"),
        pytest.param([], [1, 1000], 5, (), id="a-fresh-lead-not-due"),
    ],
)
async def test_a_claim_told_of_the_fresh_leads_takes_and_stores_what_it_would_without(
    db: Database, earlier: list[int], new: list[int], limit: int, skip: tuple[str, ...]
) -> None:
    """The intake's hint (``fresh``) lets the claim take its new leads by id when they are all that is
    due; any other due lead (older, or the fresh ones over the limit) and the claim is the ordered one.
    Either way the leads claimed, and as stored, are exactly those of the claim without the hint."""

    def lead(number: int, minutes: int = 0, pbx: str | None = None) -> Lead:
        # Number 1000 waits for its call window; the second lead of the "another-pbx" cases is that PBX's.
        at = NOW + timedelta(minutes=60 if number == 1000 else minutes)
        status = LeadStatus.SCHEDULED if at != NOW else LeadStatus.NEW
        return _lead(number, status=status, next_attempt_at=at, attempts=int(at != NOW), pbx=pbx)

    older = [lead(100 + index, minutes, pbx="office" if skip else None) for index, minutes in enumerate(earlier)]
    fresh = [lead(number, pbx="office" if skip and index == 1 else None) for index, number in enumerate(new)]
    told, untold = await _claimed_with_and_without_the_hint(db, older, fresh, limit, frozenset(skip))
    assert told == untold
    # The same types too (enums, UTC datetimes), but for one quirk of SQLite's RETURNING: a REAL
    # column's whole value comes back an int (0 for 0.0), where a SELECT, and the hint, give 0.0.
    assert repr([replace(lead, backlog_rank=float(lead.backlog_rank)) for lead in told]) == repr(
        [replace(lead, backlog_rank=float(lead.backlog_rank)) for lead in untold]
    )
    assert all(lead.status is LeadStatus.DIALING and lead.updated_at == NOW for lead in told)


async def test_the_intake_s_fresh_leads_are_claimed_by_id_when_they_are_all_that_is_due(tmp_path: Path) -> None:
    """Not read back: the claim's ordered UPDATE ... RETURNING runs only when another lead is due."""
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'lr.db'}") as db:
        await db.migrate()
        statements: list[str] = []
        async with db.write() as conn:
            raw = (await conn.get_raw_connection()).driver_connection._conn
            raw.set_trace_callback(statements.append)
        for earlier in ([], [_lead(9, status=LeadStatus.SCHEDULED, next_attempt_at=NOW - timedelta(minutes=1))]):
            async with SqlUnitOfWork(db) as uow:
                await uow.leads.add(earlier)
                fresh = [_lead(1), _lead(2)]
                await uow.leads.add(fresh)
                statements.clear()
                got = await uow.leads.claim_due(NOW, 10, fresh=fresh)
                await uow.commit()
            returning = [statement for statement in statements if "RETURNING" in statement]
            assert len(got) == 2 + len(earlier)
            assert len(returning) == (1 if earlier else 0), statements


async def test_nothing_is_kept_without_a_commit(db: Database) -> None:
    async with SqlUnitOfWork(db) as uow:
        lead = _lead(1)
        await uow.leads.add([lead])
        uow.outbox.add([lead.created()], NOW)
    assert await SqlQueries(db).lead_status_counts() == {}
    assert await SqlQueries(db).pending_outbox(10) == []


async def test_a_call_with_its_legs_round_trips(db: Database) -> None:
    async with SqlUnitOfWork(db) as uow:
        lead = _lead(1)
        await uow.leads.add([lead])
        assert lead.id is not None
        call = Call(lead_id=lead.id, attempt=1, scenario="default", channel_id="lr-abc", phone=lead.phone,
                    started_at=NOW)  # fmt: skip
        await uow.calls.add([call])
        call.client_answered(NOW + timedelta(seconds=4))
        call.connect_to("anna", NOW + timedelta(seconds=5))
        call.manager_failed(LegResult.NO_ANSWER, NOW + timedelta(seconds=20))
        call.connect_to("boris", NOW + timedelta(seconds=21))
        call.bridged(NOW + timedelta(seconds=24))
        call.hung_up(NOW + timedelta(seconds=84), 16)
        await uow.calls.update([call])
        await uow.calls.add_billing([("lr-abc", 21), ("lr-abc", 59)])
        await uow.commit()
    found = await SqlQueries(db).lead_with_calls(1)
    assert found is not None
    (stored,) = found[1]
    assert stored.state is CallState.ENDED and stored.disposition is Disposition.COMPLETED
    assert (stored.ring_seconds, stored.hold_seconds, stored.talk_seconds, stored.total_seconds) == (4, 20, 60, 84)
    assert [(leg.manager_id, leg.result) for leg in stored.legs] == [
        ("anna", LegResult.NO_ANSWER),
        ("boris", LegResult.ANSWERED),
    ]
    assert stored.pbx_billable_seconds == 80
    assert stored.started_at == NOW and stored.started_at.tzinfo is not None


async def test_outbox_keeps_commit_order_and_marks_published(db: Database) -> None:
    for number in range(3):
        async with SqlUnitOfWork(db) as uow:
            lead = _lead(number)
            await uow.leads.add([lead])
            uow.outbox.add([lead.created()], NOW)
            await uow.commit()
    queries = SqlQueries(db)
    pending = await queries.pending_outbox(10)
    assert [message.lead_id for message in pending] == [1, 2, 3]
    assert len({message.id for message in pending}) == 3
    await queries.mark_published([pending[0].seq], NOW)
    assert [message.lead_id for message in await queries.pending_outbox(10)] == [2, 3]


async def test_manager_stats_count_only_talks_in_the_period(db: Database) -> None:
    async with SqlUnitOfWork(db) as uow:
        lead = _lead(1)
        await uow.leads.add([lead])
        assert lead.id is not None
        for attempt, (start, talk) in enumerate([(0, 60), (10, 120), (-3600 * 30, 50)], start=1):
            t0 = NOW + timedelta(seconds=start)
            call = Call(lead_id=lead.id, attempt=attempt, scenario="d", channel_id=f"lr-{attempt}",
                        phone=lead.phone, started_at=t0)  # fmt: skip
            await uow.calls.add([call])
            call.client_answered(t0)
            call.connect_to("anna", t0)
            call.bridged(t0)
            call.hung_up(t0 + timedelta(seconds=talk), 16)
            await uow.calls.update([call])
        unanswered = Call(lead_id=lead.id, attempt=9, scenario="d", channel_id="lr-x", phone=lead.phone,
                          started_at=NOW)  # fmt: skip
        await uow.calls.add([unanswered])
        await uow.commit()
    (row,) = await SqlQueries(db).manager_stats(NOW - timedelta(hours=1), NOW + timedelta(hours=1))
    assert (row.manager_id, row.calls, row.talk_seconds, row.average_talk_seconds) == ("anna", 2, 180, 90)


async def test_a_phones_owner_is_the_owner_of_its_newest_owned_lead(db: Database) -> None:
    phone = _lead(1).phone
    async with SqlUnitOfWork(db) as uow:
        await uow.leads.add([_lead(1, owner_id="anna")])
        await uow.leads.add([_lead(1, owner_id="boris")])
        await uow.leads.add([_lead(1)])  # the new repeat lead itself: no owner yet
        await uow.leads.add([_lead(2, owner_id="vera")])
        await uow.commit()
    async with SqlUnitOfWork(db) as uow:
        assert await uow.leads.owner_of_phone(phone) == "boris"
        assert await uow.leads.owner_of_phone(_lead(3).phone) is None


async def test_leads_and_calls_added_together_each_get_their_own_row(db: Database) -> None:
    # SQLite inserts a batch in one statement with ids the write lock reserves (storage.uow._insert_with_ids).
    batch = [_lead(number) for number in range(5)]
    async with SqlUnitOfWork(db) as uow:
        await uow.leads.add(batch[:1])
        await uow.leads.add(batch[1:])
        calls = [Call(lead_id=lead.id or 0, attempt=1, scenario="default", channel_id=f"lr-{lead.id}",
                      phone=lead.phone, started_at=NOW) for lead in batch]  # fmt: skip
        await uow.calls.add(calls)
        await uow.commit()
    assert len({lead.id for lead in batch}) == 5
    async with SqlUnitOfWork(db) as uow:
        for lead in batch:
            assert lead.id is not None
            stored = await uow.leads.get(lead.id)
            assert stored is not None and stored.phone == lead.phone
        stored_calls = await uow.calls.for_leads([lead.id or 0 for lead in batch])
    assert {(call.id, call.lead_id, call.channel_id) for call in stored_calls} == {
        (call.id, call.lead_id, call.channel_id) for call in calls
    }


async def test_an_inbound_callers_call_is_stored_once_whoever_takes_him(db: Database) -> None:
    """Every daemon of a PBX hears the caller (or finds him in its listing): the insert decides."""
    async with SqlUnitOfWork(db) as uow:
        await uow.leads.add([lead := _lead(1)])
        await uow.commit()
    assert lead.id is not None

    def caller() -> Call:
        return Call(lead_id=lead.id or 0, attempt=1, scenario="default", channel_id="trunk-0001;2",
                    phone=lead.phone, started_at=NOW)  # fmt: skip

    first, second = caller(), caller()
    async with SqlUnitOfWork(db, daemon_id="a") as uow:
        assert await uow.calls.add_caller(first)
        await uow.commit()
    async with SqlUnitOfWork(db, daemon_id="b") as uow:
        assert not await uow.calls.add_caller(second)
        assert second.id is None
        await uow.commit()
    async with SqlUnitOfWork(db) as uow:
        assert [call.id for call in await uow.calls.for_lead(lead.id)] == [first.id]


async def test_a_write_waits_for_another_processs_lock_without_stalling_the_loop(tmp_path: Path) -> None:
    # Writes run on the event loop once they hold SQLite's lock (storage.engine.InlineConnection);
    # waiting for it must not: a lock held elsewhere (the CLI, a copy tool) would freeze the daemon.
    # The writer itself does not wait (InlineConnection.begin_immediate): a BEGIN that finds the
    # lock taken waits, once the writer wrote before and again after such a wait.
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'lr.db'}") as db:
        await db.migrate()
        await db.probe_write()
        for _ in range(2):
            other = sqlite3.connect(tmp_path / "lr.db", isolation_level=None)
            other.execute("BEGIN IMMEDIATE")
            write = asyncio.create_task(db.probe_write())
            for _ in range(20):  # the loop keeps turning while the write waits
                await asyncio.sleep(0.005)
            assert not write.done()
            other.execute("COMMIT")
            other.close()
            await write
            assert db.writable


async def test_the_writer_given_back_to_the_pool_waits_for_locks_again(tmp_path: Path) -> None:
    # Its next user (a read, a checkpoint) is not the writer: a lock held elsewhere is waited for.
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'lr.db'}") as db:
        await db.migrate()
        with pytest.raises(RuntimeError):
            async with db.write() as conn:
                writer = (await conn.get_raw_connection()).driver_connection
                assert writer.raw.execute("PRAGMA busy_timeout").fetchone() == (0,)
                raise RuntimeError("the block failed: the writer goes back to the pool")
        async with db.engine.connect() as conn:
            lent = (await conn.get_raw_connection()).driver_connection
            assert lent is writer  # the pool lends the connection used last first
            assert (await (await lent.execute("PRAGMA busy_timeout")).fetchone()) == (BUSY_TIMEOUT_MS,)


async def _threads_of_statements(db: Database) -> dict[str, set[int]]:
    """Filled from now on with the threads each kind of statement (INSERT, COMMIT...) of the kept writer ran on."""
    ran_on: dict[str, set[int]] = {}

    def traced(statement: str) -> None:
        ran_on.setdefault(statement.split()[0].upper(), set()).add(threading.get_ident())

    async with db.write() as conn:
        raw = (await conn.get_raw_connection()).driver_connection._conn  # the kept writer's sqlite3
        raw.set_trace_callback(traced)
    return ran_on


async def test_a_long_write_runs_off_the_loop_and_a_lead_s_on_it(tmp_path: Path) -> None:
    """Statements of ``Database.write(long=True)`` (a retry of every dead webhook event, say) run on
    the connection's thread, which keeps the loop turning however many rows they change; the hot
    path's stay on the loop (storage.engine.InlineConnection)."""
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'lr.db'}") as db:
        await db.migrate()
        ran_on = await _threads_of_statements(db)
        async with SqlUnitOfWork(db) as uow:
            await uow.leads.add([_lead(1)])
            await uow.commit()
        loop_thread = threading.get_ident()
        assert ran_on.pop("INSERT") == {loop_thread}
        await SqlWebhooks(db).retry(None, [], NOW)
        assert loop_thread not in ran_on["UPDATE"]


async def test_a_unit_of_work_commits_on_the_connection_s_thread_whichever_path_its_statements_took(
    tmp_path: Path,
) -> None:
    """The statements run on the loop; the commit, which writes the WAL (a busy disk may hold it), on
    the connection's thread: the driver's own when only direct statements ran (SQLAlchemy began no
    transaction), SQLAlchemy's when one of its statements is in it. Either keeps every row; a
    unit of work left without a commit keeps none."""
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'lr.db'}") as db:
        await db.migrate()
        ran_on = await _threads_of_statements(db)
        loop_thread = threading.get_ident()
        async with SqlUnitOfWork(db) as uow:  # direct statements only
            await uow.leads.add([_lead(1)])
            await uow.commit()
        async with SqlUnitOfWork(db) as uow:  # and one of SQLAlchemy's
            await uow.leads.add([_lead(2)])
            assert await uow.history.add(HistoryEntry(1, HistoryKind.DUPLICATE, NOW, {"phone": "+79160000002"}))
            await uow.commit()
        async with SqlUnitOfWork(db) as uow:  # no commit
            await uow.leads.add([_lead(3)])
            assert await uow.history.add(HistoryEntry(1, HistoryKind.DUPLICATE, NOW, {"phone": "+79160000003"}))
        assert len(ran_on["COMMIT"]) == 1 and loop_thread not in ran_on["COMMIT"]
        assert ran_on["INSERT"] == {loop_thread}
        async with db.read() as conn:
            assert [row.phone for row in await conn.execute(select(leads.c.phone).order_by(leads.c.id))] == [
                "+79160000001",
                "+79160000002",
            ]
            assert len((await conn.execute(select(lead_history))).all()) == 1


async def _write_lead(db: Database, number: int, *, orphan: bool = False) -> None:
    """A write of a lead. ``orphan``: with, through SQLAlchemy, a history entry of no lead, which the
    commit refuses (its foreign key checked then: SQLite's defer_foreign_keys)."""
    async with db.write() as conn:
        await SqlLeads(conn).add([_lead(number)])
        if orphan:
            await conn.execute(sql_text("PRAGMA defer_foreign_keys=ON"))
            orphan_entry = {"lead_id": 10_000, "kind": HistoryKind.DUPLICATE, "at": NOW, "details": {}}
            await conn.execute(insert(lead_history).values(orphan_entry))
        await db.commit(conn)


async def test_a_commit_that_fails_leaves_nothing_open(tmp_path: Path) -> None:
    """SQLite keeps the transaction of a COMMIT that failed open: it is rolled back, so the write lock
    is free for other processes and the next user of the connection reads none of its rows."""
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'lr.db'}") as db:
        await db.migrate()
        with pytest.raises(IntegrityError, match="FOREIGN KEY"):
            await _write_lead(db, 1, orphan=True)
        other = sqlite3.connect(tmp_path / "lr.db", isolation_level=None, timeout=0)
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        other.close()
        async with db.read() as conn:
            assert not (await conn.execute(select(leads.c.id))).all()
        await _write_lead(db, 2)  # the next writer writes
        async with db.read() as conn:
            assert [row.phone for row in await conn.execute(select(leads.c.phone))] == ["+79160000002"]


@pytest.mark.parametrize("through_sqlalchemy", [False, True], ids=["direct", "sqlalchemy"])
async def test_a_write_cancelled_during_its_commit_gives_its_connection_back(
    tmp_path: Path, through_sqlalchemy: bool
) -> None:
    """Cancelled while its commit is on the connection's thread (a shutdown): what the writer does
    then (our rollback; SQLAlchemy's close of the connection, once one of its statements began its
    transaction) waits behind that commit on the thread, not beside it on the loop, and the
    connection goes back to the pool whatever the rollback finds."""
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'lr.db'}") as db:
        await db.migrate()
        slow, loop_thread = threading.Event(), threading.get_ident()

        def progress() -> int:  # holds the commit's step on the connection's thread
            if slow.is_set() and threading.get_ident() != loop_thread:
                slow.clear()
                time.sleep(0.6)
            return 0

        async def write() -> None:
            async with db.write() as conn:
                (await conn.get_raw_connection()).driver_connection.raw.set_progress_handler(progress, 1)
                await SqlLeads(conn).add([_lead(1)])
                if through_sqlalchemy:
                    await conn.execute(
                        insert(lead_history).values(lead_id=1, kind=HistoryKind.DUPLICATE, at=NOW, details={})
                    )
                slow.set()
                await db.commit(conn)

        longest_gap = 0.0

        async def ticks() -> None:  # the loop's turns meanwhile
            nonlocal longest_gap
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.005)
                longest_gap, last = max(longest_gap, time.monotonic() - last), time.monotonic()

        ticker = asyncio.create_task(ticks())
        task = asyncio.create_task(write())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.7)  # the held commit ends meanwhile
        ticker.cancel()
        assert longest_gap < 0.3  # the loop was not held for the commit's 0.6 s
        assert db.engine.pool.checkedout() == 0
        await _write_lead(db, 2)  # the next writer writes


async def test_a_write_that_goes_on_after_its_commit_waits_for_a_lock_held_elsewhere(tmp_path: Path) -> None:
    # The writer itself does not wait (InlineConnection.begin_immediate); SQLAlchemy's BEGIN for the
    # statement after the commit does, as any connection's.
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'lr.db'}") as db:
        await db.migrate()
        await db.probe_write()
        other = sqlite3.connect(tmp_path / "lr.db", isolation_level=None, check_same_thread=False)
        async with db.write() as conn:
            await SqlLeads(conn).add([_lead(1)])
            await db.commit(conn)
            other.execute("BEGIN IMMEDIATE")  # another process (the CLI) takes the lock meanwhile
            asyncio.get_running_loop().call_later(0.1, other.execute, "COMMIT")
            await conn.execute(insert(lead_history).values(lead_id=1, kind=HistoryKind.DUPLICATE, at=NOW, details={}))
            await conn.commit()
        other.close()
        assert db.writable
        async with db.read() as conn:
            assert len((await conn.execute(select(lead_history))).all()) == 1


async def test_what_runs_meanwhile_runs_while_the_commit_is_on_the_connection_s_thread(tmp_path: Path) -> None:
    """The intake builds its Originates while SQLite writes its commit: the commit is queued to the
    connection's thread before ``meanwhile`` runs on the loop, so the thread commits during it. On
    SQLAlchemy's path (one of its statements in the transaction) it runs before the commit."""
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'lr.db'}") as db:
        await db.migrate()
        ran_on = await _threads_of_statements(db)
        seen: list[bool] = []

        def meanwhile() -> None:
            # Blocks the loop until the thread committed, or 10 s: a commit queued only after this
            # returned would not have run by then.
            deadline = time.monotonic() + 10
            while "COMMIT" not in ran_on and time.monotonic() < deadline:
                time.sleep(0.001)
            seen.append("COMMIT" in ran_on)

        async with SqlUnitOfWork(db) as uow:  # direct statements only: the driver's commit
            await uow.leads.add([_lead(1)])
            await uow.commit(meanwhile)
        ran_on.clear()
        async with SqlUnitOfWork(db) as uow:  # and one of SQLAlchemy's: its commit, after meanwhile
            await uow.leads.add([_lead(2)])
            assert await uow.history.add(HistoryEntry(1, HistoryKind.DUPLICATE, NOW, {"phone": "+79160000002"}))
            await uow.commit(lambda: seen.append("COMMIT" in ran_on))
        assert seen == [True, False]
        assert "COMMIT" in ran_on

        def failing() -> None:
            raise RuntimeError("a bug beside the commit")

        async with SqlUnitOfWork(db) as uow:  # either path: the commit's outcome is what the caller hears
            await uow.leads.add([_lead(3)])
            await uow.commit(failing)
        async with SqlUnitOfWork(db) as uow:
            await uow.leads.add([_lead(4)])
            assert await uow.history.add(HistoryEntry(1, HistoryKind.DUPLICATE, NOW, {"phone": "+79160000004"}))
            await uow.commit(failing)
        async with db.read() as conn:
            assert len((await conn.execute(select(leads.c.id))).all()) == 4


async def test_what_runs_then_runs_on_the_connection_s_thread_after_the_caller_is_told(tmp_path: Path) -> None:
    """The intake writes its Originates from the thread that committed its leads (Database.commit's
    ``then``): there, once the commit succeeded, and after the waiter's wake-up is on its way to the
    loop, so the caller's next steps come before anything a reply to what ``then`` sent wakes.
    Never after a commit that failed, nor on SQLAlchemy's path; a failure of it leaves the commit."""
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'lr.db'}") as db:
        await db.migrate()
        loop_thread = threading.get_ident()
        told = threading.Event()  # set by the caller once its commit returned
        ran: list[tuple[bool, bool]] = []  # (off the loop's thread, the caller told within 10 s)

        finished = threading.Event()

        def then() -> None:
            # Holds the thread until the caller is told: had ``then`` run before the waiter's wake-up
            # was queued, the caller would never be told, and this would give up after 10 s.
            ran.append((threading.get_ident() != loop_thread, told.wait(10)))
            finished.set()

        async with SqlUnitOfWork(db) as uow:  # direct statements only: the driver's commit, on its thread
            await uow.leads.add([_lead(1)])
            await uow.commit(None, then)
            told.set()
        async with db.read() as conn:  # committed before ``then`` is heard of
            assert [row.phone for row in await conn.execute(select(leads.c.phone))] == ["+79160000001"]
        assert await asyncio.to_thread(finished.wait, 10)
        assert ran == [(True, True)]

        async with SqlUnitOfWork(db) as uow:  # one of SQLAlchemy's statements: its commit, no ``then``
            await uow.leads.add([_lead(2)])
            assert await uow.history.add(HistoryEntry(1, HistoryKind.DUPLICATE, NOW, {"phone": "+79160000002"}))
            await uow.commit(None, lambda: ran.append((False, False)))
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            async with db.write() as conn:  # a commit refused on the thread: no ``then``
                await SqlLeads(conn).add([_lead(3)])
                raw = (await conn.get_raw_connection()).driver_connection.raw
                raw.execute("PRAGMA defer_foreign_keys=ON")
                raw.execute("INSERT INTO lead_history (lead_id, kind, at, details) VALUES (10000, 'x', '', '{}')")
                await db.commit(conn, None, lambda: ran.append((False, False)))

        failed = threading.Event()

        def failing() -> None:
            failed.set()
            raise RuntimeError("a bug after the commit")

        async with SqlUnitOfWork(db) as uow:
            await uow.leads.add([_lead(4)])
            await uow.commit(None, failing)
        assert await asyncio.to_thread(failed.wait, 10)
        assert ran == [(True, True)]
        await _write_lead(db, 5)  # the connection goes on
        async with db.read() as conn:
            assert [row.phone for row in await conn.execute(select(leads.c.phone).order_by(leads.c.id))] == [
                "+79160000001",
                "+79160000002",
                "+79160000004",
                "+79160000005",
            ]


@pytest.mark.parametrize(
    ("fails", "cancels"), [(False, 1), (True, 1), (False, 2)], ids=["committed", "refused", "cancelled-twice"]
)
async def test_a_wait_cancelled_while_then_may_run_ends_once_the_thread_is_done(
    tmp_path: Path, fails: bool, cancels: int
) -> None:
    """A shutdown cancelling the wait while the commit is on its thread, ``then`` to follow it: the
    caller hears CancelledError only once the thread is done, ``then`` run after a commit that
    succeeded (its caller learns from it what happened), however many cancellations come."""
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'lr.db'}") as db:
        await db.migrate()
        loop, loop_thread = asyncio.get_running_loop(), threading.get_ident()
        slow, ran = threading.Event(), threading.Event()
        task: asyncio.Task[None] | None = None

        def progress() -> int:  # holds the commit's step on the connection's thread, cancelling meanwhile
            if slow.is_set() and threading.get_ident() != loop_thread:
                slow.clear()
                assert task is not None
                loop.call_soon_threadsafe(task.cancel)
                time.sleep(0.2)
            return 0

        def then() -> None:  # slow, and cancelled again meanwhile: the caller hears only once it is done
            assert task is not None
            for _ in range(cancels - 1):
                loop.call_soon_threadsafe(task.cancel)
            time.sleep(0.2)
            ran.set()

        async def write() -> None:
            async with db.write() as conn:
                raw = (await conn.get_raw_connection()).driver_connection.raw
                raw.set_progress_handler(progress, 1)
                await SqlLeads(conn).add([_lead(1)])
                if fails:
                    raw.execute("PRAGMA defer_foreign_keys=ON")
                    raw.execute("INSERT INTO lead_history (lead_id, kind, at, details) VALUES (10000, 'x', '', '{}')")
                slow.set()
                try:
                    await db.commit(conn, None, then)
                finally:
                    seen.append(ran.is_set())

        seen: list[bool] = []
        task = asyncio.create_task(write())
        with pytest.raises(asyncio.CancelledError):
            await task
        assert seen == [not fails]  # ``then`` had run when the caller heard, after a commit that succeeded
        async with db.read() as conn:
            assert len((await conn.execute(select(leads.c.id))).all()) == (0 if fails else 1)
        await _write_lead(db, 2)  # the next writer writes


async def test_the_direct_path_stores_exactly_what_sqlalchemy_stores(tmp_path: Path) -> None:
    """The hot path's statements skip SQLAlchemy's execution on SQLite (storage.uow._Direct) but
    borrow its conversions: a lead with a value of every kind is stored byte for byte as
    SQLAlchemy's own insert stores it, and read back by either path as it was."""
    local = datetime(2026, 11, 24, 13, 0, 0, 123456, tzinfo=timezone(timedelta(hours=3)))

    def rich() -> Lead:
        return Lead(phone="+79160000001", name="Лид 'x' \"q\"", source="web", external_id=None,
                    payload={"nested": {"a": [1, 2.5, None, True, "ü"]}, "big": 2**62}, created_at=local,
                    status=LeadStatus.SCHEDULED, next_attempt_at=local + timedelta(minutes=5), backlog_rank=0.25,
                    last_disposition=Disposition.BUSY, pbx="office")  # fmt: skip

    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'lr.db'}") as db:
        await db.migrate()
        direct = rich()
        async with SqlUnitOfWork(db) as uow:
            await uow.leads.add([direct])
            await uow.commit()
        async with db.engine.begin() as conn:  # SQLAlchemy's own path: no write lock held inline
            await SqlLeads(conn).add([rich()])
        async with SqlUnitOfWork(db) as uow:  # read back through the direct path
            (by_direct, by_core) = sorted(
                await uow.leads.of_phones(["+79160000001"], local), key=lambda lead: lead.id or 0
            )
        async with db.read() as conn:  # ... and through SQLAlchemy's
            read = [lead_from_row(r) for r in (await conn.execute(select(leads).order_by(leads.c.id))).mappings()]
    stored = sqlite3.connect(tmp_path / "lr.db").execute("SELECT * FROM leads ORDER BY id").fetchall()
    assert stored[0][1:] == stored[1][1:]  # all but the id
    for lead in (by_direct, by_core, *read):
        assert lead.created_at == local and lead.next_attempt_at == local + timedelta(minutes=5)
        assert lead.created_at.tzinfo is UTC and lead.next_attempt_at.tzinfo is UTC
        assert (lead.name, lead.payload, lead.status, lead.last_disposition, lead.backlog_rank, lead.pbx) == (
            direct.name, direct.payload, LeadStatus.SCHEDULED, Disposition.BUSY, 0.25, "office"
        )  # fmt: skip


def test_utc_datetimes_convert_on_sqlite_exactly_as_sqlalchemy_converts_them() -> None:
    """The direct path converts UtcDateTime in one step (UtcDateTime.to_sqlite, from_sqlite): the
    text it writes and the values it reads are SQLAlchemy's own, whatever the offset or digits."""
    dialect = SQLiteDialect_aiosqlite()  # the daemon's
    column_type = leads.c.created_at.type.dialect_impl(dialect)  # as SQLAlchemy's execution takes it
    to_text, from_text = column_type.bind_processor(dialect), column_type.result_processor(dialect, None)
    assert to_text is not None and from_text is not None
    values = [
        None,
        datetime(2026, 11, 24, 13, 0, 0, 123456, tzinfo=timezone(timedelta(hours=3))),
        datetime(2026, 1, 1, tzinfo=UTC),  # no microseconds: still six digits
        datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),  # a three-digit year: still four
        datetime(2026, 6, 30, 22, 30, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),  # the next day in UTC
    ]
    for value in values:
        assert UtcDateTime.to_sqlite(value) == to_text(value)
    for naive in (datetime(2026, 1, 1), None):
        if naive is not None:
            with pytest.raises(ValueError, match="naive"):
                UtcDateTime.to_sqlite(naive)
            with pytest.raises(ValueError, match="naive"):
                to_text(naive)
    texts = [
        None,
        "2026-11-24 10:00:00.123456",  # as either path writes it
        "0999-12-31 23:59:59.999999",
        "2026-11-24 10:00:00",  # as other writers might keep it
        "2026-11-24T10:00:00.123456+03:00",
        "2026-11-24 10:00:00.1+0100",  # as long as the usual form, but with an offset
    ]
    for text in texts:
        read, expected = UtcDateTime.from_sqlite(text), from_text(text)
        assert read == expected and repr(read) == repr(expected)


async def test_a_claim_reads_its_leads_as_sqlalchemy_reads_them(tmp_path: Path) -> None:
    """The claim's UPDATE ... RETURNING runs on the sqlite3 connection itself while the loop holds the
    write lock (storage.uow._Direct): the leads it returns are those SQLAlchemy's own execution returns."""
    local = datetime(2026, 11, 24, 13, 0, 0, 123456, tzinfo=timezone(timedelta(hours=3)))

    def due(number: int) -> Lead:
        return _lead(number, status=LeadStatus.SCHEDULED, next_attempt_at=local - timedelta(hours=1), backlog_rank=0.5,
                     last_disposition=Disposition.NO_ANSWER, attempts=2, pbx="office", owner_id="m1")  # fmt: skip

    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'lr.db'}") as db:
        await db.migrate()
        async with SqlUnitOfWork(db) as uow:
            await uow.leads.add([due(1), due(2)])
            await uow.commit()
        async with SqlUnitOfWork(db) as uow:
            (direct,) = await uow.leads.claim_due(NOW, 1)
            await uow.commit()
        async with db.engine.begin() as conn:  # SQLAlchemy's own execution: no write lock held inline
            (core,) = await SqlLeads(conn).claim_due(NOW, 1)
    assert (direct.id, core.id) == (1, 2)
    core.id = direct.id
    core.phone = direct.phone
    core.name = direct.name
    core.payload = direct.payload
    assert direct == core
    assert repr(direct) == repr(core)  # the same types too: enums, UTC datetimes
