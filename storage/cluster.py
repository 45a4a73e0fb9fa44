"""Several daemons on one PostgreSQL: who is alive, who runs each singleton job, and which manager
is promised to which call.

Being alive is holding a session advisory lock on one's own daemon id, taken at start on a
connection kept for the whole run. The server drops the lock the moment that connection ends (a
``kill -9`` closes the socket, and so does a host that vanishes, after TCP keepalive), so another
daemon learns of a death at its next look, within seconds, with no heartbeat table to tune and
no clock to trust. A daemon is gone when its lock can be taken; the taker lets go at once.

A singleton job (the outbox publisher) runs where the advisory lock named after it is held, on
the same connection: the others try for it every ``poll`` seconds and one of them takes it over
once its holder is gone.

A manager is promised to a call in ``manager_reservations`` before his phone rings: one row per
manager, inserted by one statement, so of two daemons picking him at once one rings and the
other hears no. A promise whose call has ended (its release was lost with its daemon) is taken,
and so is one of this daemon's own: its board, which knows its calls, says the manager is free.

On SQLite one daemon owns the file: it runs every job, a call steered by any other id is a
previous run's, and the in-memory board is the whole truth about its managers (no rows written).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import uuid
from collections.abc import Callable, Collection, Coroutine, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import structlog
from sqlalchemy import delete, func, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.engine import Database, lock_key
from storage.schema import manager_reservations

log = structlog.get_logger("cluster")

# A promise stands between a client on hold and his manager's phone: its commit does not wait for
# the disk. One lost in a server crash is harmless: the calls it guarded are re-read from the PBX.
_NO_WAIT_FOR_DISK = text("SET LOCAL synchronous_commit = off")


# Daemons' locks are two-key advisory locks in a space of their own (this first key), so that
# pg_locks counts the daemons alive; a job's lock is a one-key lock (storage.engine.lock_key).
_DAEMONS = 0x1EAD
_COUNT_DAEMONS = text(
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = :space AND objsubid = 2"
    " AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
).bindparams(space=_DAEMONS)


def new_daemon_id(pbx: str) -> str:
    """A fresh id for this run of a daemon on ``pbx`` (its AMI host:port): "<pbx>#<host>-<pid>-<random>".

    The PBX comes first because only a daemon on the same PBX can take a call over: its listing
    says what became of the call; another PBX's listing would call it vanished while it is up."""
    return f"{pbx[:30]}#{socket.gethostname()[:16]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def pbx_of(daemon_id: str) -> str:
    return daemon_id.partition("#")[0]


def _daemon_key(daemon_id: str) -> int:
    return int.from_bytes(hashlib.sha256(daemon_id.encode()).digest()[:4], "big", signed=True)


class Cluster:
    """``poll``: seconds between looks at how many daemons run; a daemon that joins others waits
    a little longer than that before it dials, so they all promise managers in the database by then.

    ``siblings``: a daemon speaking to several PBXes has an id per PBX (its calls on each are
    steered under that one, and only daemons on the same PBX take them over); ``daemon_id`` is its
    first PBX's, these the others'. All are held on the one lease, and count as one daemon."""

    def __init__(
        self,
        db: Database,
        daemon_id: str,
        clock_now: Callable[[], datetime],
        poll: float = 1.0,
        *,
        siblings: Sequence[str] = (),
    ) -> None:
        self._db = db
        self.daemon_id = daemon_id
        self._ids = (daemon_id, *siblings)
        self._now = clock_now
        self._poll = poll
        self.postgres = db.engine.dialect.name == "postgresql"  # several daemons possible at all
        self.others = 0  # other daemons running on the database, at the last look
        self._lease: AsyncConnection | None = None
        self._lease_lock = asyncio.Lock()  # one statement at a time on the lease connection
        self._watching: asyncio.Task[None] | None = None
        self.jobs: set[str] = set()  # the singleton jobs this daemon holds

    @property
    def shared(self) -> bool:
        """Other daemons run now: managers are promised in the database before their phones ring.

        A daemon alone (always, on SQLite) skips those writes: its board knows every call."""
        return self.others > 0

    async def __aenter__(self) -> Self:
        if self.postgres:
            lease = await self._db.engine.connect()
            self._lease = await lease.execution_options(isolation_level="AUTOCOMMIT")
            for own in self._ids:
                await self._lease.execute(select(func.pg_advisory_lock(_DAEMONS, _daemon_key(own))))
            await self._count()
            self._watching = asyncio.create_task(self._watch(), name="cluster-watch")
            if self.others:
                await asyncio.sleep(1.5 * self._poll)  # until every other daemon has seen this one
        log.info("cluster.joined", daemon_id=self.daemon_id, others=self.others)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._watching is not None:
            self._watching.cancel()
            await asyncio.wait({self._watching})
        if self._lease is not None:
            # Ends the session, not just hands the connection back to the pool: every lock of ours goes with it.
            await self._lease.invalidate()
            await self._lease.close()
            self._lease = None

    async def _count(self) -> None:
        assert self._lease is not None
        async with self._lease_lock:
            others = int((await self._lease.execute(_COUNT_DAEMONS)).scalar_one()) - len(self._ids)
        if others != self.others:
            log.info("cluster.daemons", others=others, daemon_id=self.daemon_id)
            self.others = others

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._poll)
            try:
                await self._count()
            except Exception as exc:  # the server is away: keep promising managers while unsure
                self.others = max(self.others, 1)
                log.warning("cluster.count_failed", error=repr(exc))

    async def _try_lock(self, *key: int) -> bool:
        assert self._lease is not None
        async with self._lease_lock:
            return bool((await self._lease.execute(select(func.pg_try_advisory_lock(*key)))).scalar_one())

    async def _unlock(self, *key: int) -> None:
        assert self._lease is not None
        async with self._lease_lock:
            await self._lease.execute(select(func.pg_advisory_unlock(*key)))

    def on_pbx(self, daemon_id: str) -> PbxPeers:
        """The other daemons as the dialer of the PBX this id of ours (one of ``siblings``) is on sees them."""
        assert daemon_id in self._ids
        return PbxPeers(self, daemon_id)

    async def gone(self, daemon_ids: Collection[str | None], me: str | None = None) -> set[str | None]:
        """Which of these daemons, on the PBX of our id ``me`` (by default ``daemon_id``), no longer
        run (None: a call stored before daemons had ids). Alone on SQLite every other id is a past
        run's, whatever its PBX, but for the PBXes our sibling ids are on: theirs to take."""
        me = me or self.daemon_id
        siblings = {pbx_of(own) for own in self._ids} - {pbx_of(me)}
        found: set[str | None] = set()
        for daemon_id in daemon_ids:
            if daemon_id in self._ids:
                continue
            if daemon_id is not None and pbx_of(daemon_id) != pbx_of(me):
                if self.postgres or pbx_of(daemon_id) in siblings:
                    continue  # another PBX's: its own daemons (or dialer) take it over
            if daemon_id is None or not self.postgres:
                found.add(daemon_id)
            elif await self._try_lock(_DAEMONS, key := _daemon_key(daemon_id)):
                await self._unlock(_DAEMONS, key)
                found.add(daemon_id)
        return found

    async def elected(self, job: str, run: Callable[[], Coroutine[Any, Any, None]], poll: float) -> None:
        """Run ``run`` for good once this daemon holds the job; until then try for it every ``poll`` s."""
        if self.postgres:
            waited = False
            while not await self._try_lock(lock_key(f"job:{job}")):
                if not waited:
                    log.info("cluster.standby", job=job, daemon_id=self.daemon_id)
                    waited = True
                await asyncio.sleep(poll)
        self.jobs.add(job)
        log.info("cluster.elected", job=job, daemon_id=self.daemon_id)
        await run()

    async def reserve(self, manager_id: str, call_id: int, me: str | None = None) -> bool:
        """Promise the manager to the call (steered by our id ``me``); False when another live call has him."""
        if not self.shared:
            return True
        me = me or self.daemon_id
        row = {"manager_id": manager_id, "call_id": call_id, "daemon_id": me, "reserved_at": self._now()}
        # Written out: SQLAlchemy does not correlate a subquery in ON CONFLICT's WHERE with the row in the way.
        ended = text(
            "EXISTS (SELECT 1 FROM calls WHERE calls.id = manager_reservations.call_id AND calls.ended_at IS NOT NULL)"
        )
        # Taken when free, when ours already, or when its call has ended (a release lost with its daemon).
        statement = (
            postgresql.insert(manager_reservations)
            .values(row)
            .on_conflict_do_update(
                index_elements=[manager_reservations.c.manager_id],
                set_={"call_id": call_id, "daemon_id": me, "reserved_at": row["reserved_at"]},
                # A promise of ours in the way is stale: our board, which says he is free, knows our calls.
                # (Its release, on its way from the call that ended, must not cost him the next client.)
                where=(manager_reservations.c.daemon_id == me) | ended,
            )
            .returning(manager_reservations.c.manager_id)
        )
        async with self._db.write() as conn:
            await conn.execute(_NO_WAIT_FOR_DISK)
            taken = (await conn.execute(statement)).first() is not None
            await conn.commit()
        return taken

    async def release(self, manager_id: str, call_id: int) -> None:
        if not self.shared:
            return
        async with self._db.write() as conn:
            await conn.execute(_NO_WAIT_FOR_DISK)
            await conn.execute(
                delete(manager_reservations).where(
                    manager_reservations.c.manager_id == manager_id, manager_reservations.c.call_id == call_id
                )
            )
            await conn.commit()


class PbxPeers:
    """The other daemons as one PBX's dialer sees them (dialer.ports.Peers): a Cluster under the
    daemon's id on that PBX."""

    def __init__(self, cluster: Cluster, daemon_id: str) -> None:
        self._cluster = cluster
        self.daemon_id = daemon_id

    @property
    def shared(self) -> bool:
        return self._cluster.shared

    async def gone(self, daemon_ids: Collection[str | None]) -> set[str | None]:
        return await self._cluster.gone(daemon_ids, self.daemon_id)

    async def reserve(self, manager_id: str, call_id: int) -> bool:
        return await self._cluster.reserve(manager_id, call_id, self.daemon_id)

    async def release(self, manager_id: str, call_id: int) -> None:
        await self._cluster.release(manager_id, call_id)
