"""Several daemons on one PostgreSQL (storage.cluster): who is alive, who runs a singleton job,
which manager is promised to which call, who takes over a gone daemon's calls."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
from sqlalchemy import text

from pbxsim.tests.amitools import wait_until
from router.model import Call, Disposition, Lead
from storage.cluster import _DAEMONS, Cluster, SharedChanges, _daemon_key
from storage.engine import Database, lock_key
from storage.uow import SqlUnitOfWork

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
on_postgresql = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def _now() -> datetime:
    return NOW


async def _call(db: Database, daemon_id: str, channel_id: str) -> Call:
    async with SqlUnitOfWork(db, daemon_id=daemon_id) as uow:
        lead = Lead(phone="+79161234567", name="", source="site", external_id=None, payload={}, created_at=NOW)
        await uow.leads.add([lead])
        assert lead.id is not None
        call = Call(lead_id=lead.id, attempt=1, scenario="s", channel_id=channel_id, phone=lead.phone, started_at=NOW)
        await uow.calls.add([call])
        await uow.commit()
    return call


@on_postgresql
async def test_a_daemon_seen_alive_is_gone_two_polls_after_its_connection_ends(db: Database) -> None:
    async with Cluster(db, "pbx#b", _now, poll=0.1) as b:
        async with Cluster(db, "pbx#a", _now):
            assert await b.gone({"pbx#a", "pbx#b", None}) == {None}  # None: a call stored before daemons had ids
            assert (
                await b.gone({"pbx#a", "office2#x"}) == set()
            )  # another PBX's daemon is its own daemons' to judge  # looking did not take a's life away
        # Seen alive: its lock free is not yet its death (its connection alone may have dropped).
        assert await b.gone({"pbx#a", "pbx#b"}) == set()
        await wait_until(partial(_judged_gone, b, "pbx#a"), 5, "a judged gone")
        assert await b.gone({"pbx#never-seen"}) == {"pbx#never-seen"}  # a past run's: gone at once


async def _judged_gone(cluster: Cluster, daemon_id: str) -> bool:
    return await cluster.gone({daemon_id}) == {daemon_id}


@on_postgresql
async def test_a_daemon_whose_connection_is_killed_takes_its_lock_back_before_it_is_judged_gone(db: Database) -> None:
    async with Cluster(db, "pbx#a", _now, poll=0.1) as a, Cluster(db, "pbx#b", _now) as b:
        assert await b.gone({"pbx#a"}) == set()  # b has seen a alive
        await _terminate(db, "pbx#a")
        await wait_until(lambda: a.others == 1 and a._leased.is_set() and not a._lost.is_set(), 5, "a back")
        for _ in range(30):  # b looks for longer than its two polls: a is never found gone
            assert await b.gone({"pbx#a"}) == set()
            await asyncio.sleep(0.1)


@on_postgresql
async def test_a_standby_takes_a_singleton_job_over_when_its_holder_goes(db: Database) -> None:
    ran: list[str] = []

    async def job(name: str) -> None:
        ran.append(name)
        await asyncio.Event().wait()

    async with Cluster(db, "pbx#b", _now) as b:
        async with Cluster(db, "pbx#a", _now) as a:
            holder = asyncio.create_task(a.elected("publisher", lambda: job("a"), poll=0.05))
            await wait_until(lambda: ran == ["a"], 5, "a elected")
            standby = asyncio.create_task(b.elected("publisher", lambda: job("b"), poll=0.05))
            await asyncio.sleep(0.3)  # six of b's tries while a holds the job
            assert ran == ["a"] and "publisher" not in b.jobs
            holder.cancel()
        await wait_until(lambda: ran == ["a", "b"], 5, "b taking the job over")
        standby.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await standby


@on_postgresql
async def test_a_manager_is_promised_to_one_live_call_at_a_time(db: Database) -> None:
    first, second = await _call(db, "pbx#a", "lr-1"), await _call(db, "pbx#b", "lr-2")
    assert first.id is not None and second.id is not None
    async with Cluster(db, "pbx#a", _now, poll=0.1) as a, Cluster(db, "pbx#b", _now, poll=0.1) as b:
        await wait_until(lambda: a.shared and b.shared, 5, "each to see the other")
        assert (a.others, b.others) == (1, 1)
        got = await asyncio.gather(a.reserve("anna", first.id), b.reserve("anna", second.id))
        assert sorted(got) == [False, True]  # one of the two at once, whichever came first
        if got[1]:
            await b.release("anna", second.id)
            assert await a.reserve("anna", first.id)
        done = await _call(db, "pbx#a", "lr-done")  # another promise's call ending frees nobody else
        assert done.id is not None and await a.reserve("olga", done.id)
        done.end(Disposition.COMPLETED, NOW)
        async with SqlUnitOfWork(db) as uow:
            await uow.calls.update([done])
            await uow.commit()
        assert not await b.reserve("anna", second.id)
        assert await a.reserve("anna", first.id)  # his own call asks again: still his
        await b.release("anna", second.id)  # not b's promise: nothing changes
        assert not await b.reserve("anna", second.id)
        await a.release("anna", first.id)
        assert await b.reserve("anna", second.id)
        # A promise whose call ended (its daemon died before releasing it) is taken.
        second.end(Disposition.COMPLETED, NOW)
        async with SqlUnitOfWork(db) as uow:
            await uow.calls.update([second])
            await uow.commit()
        assert await a.reserve("anna", first.id)


@on_postgresql
async def test_a_gone_daemons_calls_are_taken_over_once(db: Database) -> None:
    await _call(db, "pbx#a", "lr-1")
    await _call(db, "pbx#b", "lr-2")
    async with SqlUnitOfWork(db, daemon_id="pbx#c") as c, SqlUnitOfWork(db, daemon_id="pbx#d") as d:
        assert await c.calls.steered_by() == {"pbx#a", "pbx#b"}
        taken = await c.calls.take_over({"pbx#a"})
        raced = asyncio.create_task(d.calls.take_over({"pbx#a"}))  # waits for c's row locks
        await asyncio.sleep(0.2)
        await c.commit()
        assert [call.channel_id for call in taken] == ["lr-1"]
        assert await raced == []
    async with SqlUnitOfWork(db) as uow:
        assert await uow.calls.steered_by() == {"pbx#b", "pbx#c"}


async def test_alone_on_the_database_every_other_daemon_is_a_past_run(db: Database) -> None:
    async with Cluster(db, "pbx#me", _now) as me:
        assert not me.shared
        assert await me.gone({"pbx#me", "pbx#earlier", None}) == {"pbx#earlier", None}
        assert await me.reserve("anna", 1) and await me.reserve("anna", 2)  # the board alone decides


async def _terminate_holder(db: Database, job: str) -> None:
    """What a PostgreSQL restart or an admin's pg_terminate_backend does to the job holder's session."""
    key = lock_key(f"job:{job}") & 0xFFFFFFFFFFFFFFFF  # pg_locks shows a bigint key as two unsigned halves
    await _kill_backend(db, "objsubid = 1 AND classid = :high AND objid = :low", high=key >> 32, low=key & 0xFFFFFFFF)


async def _terminate(db: Database, daemon_id: str) -> None:
    """The same, found by the daemon's own lock (storage.cluster's two-key space for daemons)."""
    key = _daemon_key(daemon_id) & 0xFFFFFFFF
    await _kill_backend(db, "objsubid = 2 AND classid = :space AND objid = :key", space=_DAEMONS, key=key)


async def _kill_backend(db: Database, which: str, **keys: int) -> None:
    async with db.write() as conn:
        pid = (
            await conn.execute(
                text(
                    f"SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND {which}"
                    # Other tests' databases on the server hold the same keys.
                    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                ),
                keys,
            )
        ).scalar_one()
        assert (await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})).scalar_one()


@on_postgresql
async def test_a_holder_whose_session_is_killed_stops_its_job_and_the_standby_takes_it_never_two_at_once(
    db: Database,
) -> None:
    running: list[str] = []  # who runs the job now
    ran: list[str] = []  # who ran it, in order
    most = 0

    async def job(name: str) -> None:
        nonlocal most
        running.append(name)
        ran.append(name)
        most = max(most, len(running))
        try:
            while True:  # a publisher's loop: each turn would publish a batch
                await asyncio.sleep(0.01)
                most = max(most, len(running))
        finally:
            running.remove(name)

    async with Cluster(db, "pbx#a", _now, poll=0.1) as a, Cluster(db, "pbx#b", _now, poll=0.1) as b:
        holder = asyncio.create_task(a.elected("publisher", lambda: job("a"), poll=0.05))
        await wait_until(lambda: running == ["a"], 5, "a elected")
        standby = asyncio.create_task(b.elected("publisher", lambda: job("b"), poll=0.05))
        await asyncio.sleep(0.3)  # b's tries while a holds the job
        assert running == ["a"] and "publisher" not in b.jobs
        await _terminate_holder(db, "publisher")
        # a notices within its watch's poll and stops; b (or a again, from a new session) runs it.
        await wait_until(lambda: len(ran) == 2 and len(running) == 1, 5, "the job taken over")
        assert "publisher" in a.jobs or "publisher" in b.jobs
        assert most == 1, ran
        # The daemon that lost its session campaigns again: it takes the job once the other lets go.
        winner, loser = (holder, standby) if running == ["a"] else (standby, holder)
        winner.cancel()
        await asyncio.wait({winner})
        await wait_until(lambda: len(ran) == 3, 5, "the other daemon taking the job back")
        assert most == 1 and ran[2] != ran[1], ran
        loser.cancel()
        await asyncio.wait({loser})
    assert running == []


async def test_shared_changes_are_read_on_in_order_and_only_unexpired_logouts_outlive_a_day(db: Database) -> None:
    now = [NOW]
    a, b = SharedChanges(db, "pbx#a", lambda: now[0]), SharedChanges(db, "pbx#b", lambda: now[0])
    start = await b.last_seq()
    await a.record("pause", "anna", reason="lunch")
    await b.record("logout", "nonce-1", until=NOW + timedelta(days=2))
    await b.record("logout", "nonce-2", until=NOW + timedelta(hours=1))
    await a.record("resume", "anna")
    changes = await b.since(start)
    assert [(c.kind, c.subject, c.reason, c.daemon_id) for c in changes] == [
        ("pause", "anna", "lunch", "pbx#a"),
        ("logout", "nonce-1", None, "pbx#b"),
        ("logout", "nonce-2", None, "pbx#b"),
        ("resume", "anna", None, "pbx#a"),
    ]
    assert await b.since(changes[-1].seq) == []
    assert sorted(nonce for nonce, _ in await a.logged_out(NOW + timedelta(hours=2))) == ["nonce-1"]
    now[0] = NOW + timedelta(days=1, hours=1)
    await a.record("routing", "vera")  # a day on: what every daemon has read goes, a live logout stays
    assert [(c.kind, c.subject) for c in await b.since(start)] == [("logout", "nonce-1"), ("routing", "vera")]
