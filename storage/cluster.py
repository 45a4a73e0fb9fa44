"""Several daemons on one PostgreSQL: who is alive, who runs each singleton job, and which manager
is promised to which call.

Being alive is holding a session advisory lock on one's own daemon id, taken at start on a
connection kept for the whole run. The server drops the lock the moment that connection ends (a
``kill -9`` closes the socket, and so does a host that vanishes, after TCP keepalive), so another
daemon learns of a death within seconds, with no heartbeat table to tune and no clock to trust.
A daemon is gone when its lock can be taken (the taker lets go at once); one seen alive before
only when it can be at two looks ``2 * poll`` apart: one whose connection alone dropped has
taken its lock again by then, and its calls stay its own.

A singleton job (the outbox publisher, webhooks, MQTT commands, SLA releases, retention sweeps)
runs where the advisory lock named after it is held, on the same connection: the others try for
it every ``poll`` seconds and one of them takes it over once its holder is gone.

That connection can end while the process lives (a PostgreSQL restart, ``pg_terminate_backend``,
a network blip): the server has dropped every lock of ours with it, so another daemon may take
the jobs. The connection is therefore asked something every ``poll`` seconds, with a deadline of
``2 * poll``; once it fails, every job held on it is cancelled and a new connection campaigns again.
A daemon that takes a job waits ``3 * poll`` more before running it: by then a holder that lost
its connection without knowing it yet has noticed and stopped, so the job never runs twice at once.

A manager is promised to a call in ``manager_reservations`` before his phone rings: one row per
manager, inserted by one statement, so of two daemons picking him at once one rings and the
other hears no. A promise whose call has ended (its release was lost with its daemon) is taken,
and so is one of this daemon's own: its board, which knows its calls, says the manager is free.

On SQLite one daemon owns the file: it runs every job, a call steered by any other id is a
previous run's, and the in-memory board is the whole truth about its managers (no rows written).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import uuid
from collections.abc import Callable, Collection, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self

import structlog
from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Executable

from storage.engine import Database, lock_key
from storage.schema import cluster_changes, manager_reservations

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


class LeaseLost(Exception):
    """No connection holds this daemon's locks at the moment (a new one is being taken)."""


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
        # Set when the lease connection is found gone: the jobs held on it stop. A fresh event per lease.
        self._lost = asyncio.Event()
        self._leased = asyncio.Event()  # a lease connection holds this daemon's lock now
        self._watching: asyncio.Task[None] | None = None
        self.jobs: set[str] = set()  # the singleton jobs this daemon holds
        self._alive: set[str] = set()  # daemons found holding their lock at a look
        self._free_since: dict[str, float] = {}  # of those, the ones found without it since: since when

    @property
    def shared(self) -> bool:
        """Other daemons run now: managers are promised in the database before their phones ring.

        A daemon alone (always, on SQLite) skips those writes: its board knows every call."""
        return self.others > 0

    async def __aenter__(self) -> Self:
        if self.postgres:
            await self._take_lease()
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
        await self._drop_lease()

    async def _take_lease(self) -> None:
        """A connection of its own, kept for the run, holding this daemon's lock and its jobs'."""
        lease = await self._db.engine.connect()
        try:
            lease = await lease.execution_options(isolation_level="AUTOCOMMIT")
            async with asyncio.timeout(2 * self._poll):  # a server that does not answer is no lease
                for own in self._ids:  # one id per PBX the daemon speaks to
                    await lease.execute(select(func.pg_advisory_lock(_DAEMONS, _daemon_key(own))))
        except BaseException:
            with contextlib.suppress(Exception):  # the error to tell is the one that got us here
                await lease.invalidate()
                await lease.close()
            raise
        self._lease, self._lost = lease, asyncio.Event()
        self._leased.set()

    async def _drop_lease(self) -> None:
        lease, self._lease = self._lease, None
        self._leased.clear()
        self._lost.set()
        if lease is not None:
            # Ends the session, not just hands the connection back to the pool: every lock of ours goes with it.
            with contextlib.suppress(Exception):
                await lease.invalidate()
            with contextlib.suppress(Exception):
                await lease.close()

    async def _ask(self, statement: Executable) -> Any:
        """One statement on the lease, within ``2 * poll`` (waiting for the one before it included)."""
        lease = self._lease
        if lease is None:
            raise LeaseLost("no connection holds this daemon's locks now")
        async with asyncio.timeout(2 * self._poll), self._lease_lock:
            return (await lease.execute(statement)).scalar_one()

    async def _count(self) -> None:
        others = int(await self._ask(_COUNT_DAEMONS)) - len(self._ids)
        if others != self.others:
            log.info("cluster.daemons", others=others, daemon_id=self.daemon_id)
            self.others = others

    async def _watch(self) -> None:
        """Every ``poll``: how many daemons run, which also proves the lease alive; a lease found
        gone stops the jobs held on it, and a new one is taken."""
        while True:
            await asyncio.sleep(self._poll)
            try:
                # Two polls to answer: a loaded server or host is not taken for a lost connection.
                async with asyncio.timeout(2 * self._poll):
                    await self._count()
                continue
            except Exception as exc:
                # The server may have dropped our locks (it did if the session ended): our jobs stop now.
                # Meanwhile keep promising managers in the database: others may be running.
                self.others = max(self.others, 1)
                log.warning("cluster.lease_lost", error=repr(exc), jobs=sorted(self.jobs), daemon_id=self.daemon_id)
            await self._drop_lease()
            tries = 0
            while True:
                try:
                    await self._take_lease()
                    break
                except Exception as exc:
                    # While the server is away, or still holds our old session's lock (it has not
                    # noticed that connection's end yet): one line, then quiet until it is back.
                    if not tries:
                        log.warning("cluster.lease_retrying", error=repr(exc), daemon_id=self.daemon_id)
                    tries += 1
                    await asyncio.sleep(self._poll)
            log.info("cluster.lease_back", daemon_id=self.daemon_id, tries=tries + 1)

    async def _try_lock(self, *key: int) -> bool:
        return bool(await self._ask(select(func.pg_try_advisory_lock(*key))))

    async def _unlock(self, *key: int) -> None:
        await self._ask(select(func.pg_advisory_unlock(*key)))

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
                if daemon_id not in self._alive:
                    found.add(daemon_id)  # a past run (a restart's predecessor), or one dead before we looked
                    continue
                # Seen alive, so gone once found without its lock for two polls: a daemon whose
                # connection alone dropped has it back by then (_watch), and keeps its calls.
                now = asyncio.get_running_loop().time()
                if now - self._free_since.setdefault(daemon_id, now) >= 2 * self._poll:
                    found.add(daemon_id)
            else:
                self._alive.add(daemon_id)
                self._free_since.pop(daemon_id, None)
        asked = set(daemon_ids)
        self._alive &= asked  # the others' calls were taken over, by us or another
        self._free_since = {daemon_id: at for daemon_id, at in self._free_since.items() if daemon_id in asked}
        return found

    async def elected(self, job: str, run: Callable[[], Coroutine[Any, Any, None]], poll: float) -> None:
        """Run ``run()`` while this daemon holds the job; until then try for it every ``poll`` s.

        A lost lease cancels the run and this daemon stands by again (it may win the job back);
        ``run`` is called afresh at every election. Returns, or raises, when a run does."""
        if not self.postgres:
            self.jobs.add(job)
            log.info("cluster.elected", job=job, daemon_id=self.daemon_id)
            await run()
            return
        key = lock_key(f"job:{job}")
        waited = False
        while True:
            await self._leased.wait()
            lost = self._lost
            try:
                taken = await self._try_lock(key)
            except Exception:  # the lease is going: the watch takes a new one
                taken = False
            if not taken:
                if not waited:
                    log.info("cluster.standby", job=job, daemon_id=self.daemon_id)
                    waited = True
                await asyncio.sleep(poll)
                continue
            waited = False
            # A holder whose lease ended without its knowing runs on until its watch notices: within
            # ``poll`` it asks, within ``2 * poll`` more it gives up. Only then is the job ours to run.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(3 * self._poll + 0.1):
                    await lost.wait()
            if lost.is_set():
                continue
            self.jobs.add(job)
            log.info("cluster.elected", job=job, daemon_id=self.daemon_id)
            running = asyncio.ensure_future(run())
            losing = asyncio.ensure_future(lost.wait())
            try:
                await asyncio.wait({running, losing}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                losing.cancel()
                self.jobs.discard(job)
                if not running.done():
                    running.cancel()
                    await asyncio.wait({running})
                if not lost.is_set():  # the run ended, or this daemon stops it: a standby may take the job
                    with contextlib.suppress(Exception):
                        await self._unlock(key)
            if lost.is_set() and running.cancelled():
                log.warning("cluster.job_lost", job=job, daemon_id=self.daemon_id)
                continue
            running.result()
            return

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


# A change is read by every daemon within seconds; after a day only a logout whose session has
# not expired yet is still wanted (by a daemon that starts).
_CHANGES_KEPT = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class SharedChange:
    seq: int
    kind: str  # pause, resume, logout, routing
    subject: str  # the manager's id (pause, resume, routing), the session's nonce (logout)
    reason: str | None  # a pause's
    until: datetime | None  # a logout's: when the session expires anyway
    daemon_id: str  # who decided it


class SharedChanges:
    """What one daemon decided that every daemon on the database applies: managers paused and
    resumed, sessions logged out, routing.yaml edited. Each daemon reads on from the last seq it
    applied; changes are written one at a time, so no seq ever commits behind one already read."""

    def __init__(self, db: Database, daemon_id: str, clock_now: Callable[[], datetime]) -> None:
        self._db = db
        self._daemon_id = daemon_id
        self._now = clock_now

    async def record(
        self, kind: str, subject: str, *, reason: str | None = None, until: datetime | None = None
    ) -> None:
        now = self._now()
        async with self._db.write() as conn:
            if conn.dialect.name == "postgresql":
                # Held to the commit: seqs are handed out and committed in one order (SQLite has one writer).
                await conn.execute(text("LOCK TABLE cluster_changes IN EXCLUSIVE MODE"))
            stale = (cluster_changes.c.until.is_(None)) | (cluster_changes.c.until < now)
            await conn.execute(delete(cluster_changes).where(cluster_changes.c.at < now - _CHANGES_KEPT, stale))
            row = {"kind": kind, "subject": subject, "reason": reason, "until": until, "daemon_id": self._daemon_id}
            await conn.execute(insert(cluster_changes).values(**row, at=now))
            await conn.commit()

    async def last_seq(self) -> int:
        async with self._db.read() as conn:
            return int((await conn.execute(select(func.coalesce(func.max(cluster_changes.c.seq), 0)))).scalar_one())

    async def since(self, seq: int, limit: int = 1000) -> list[SharedChange]:
        c = cluster_changes.c
        query = (
            select(c.seq, c.kind, c.subject, c.reason, c.until, c.daemon_id)
            .where(c.seq > seq)
            .order_by(c.seq)
            .limit(limit)
        )
        async with self._db.read() as conn:
            return [SharedChange(*row) for row in await conn.execute(query)]

    async def logged_out(self, now: datetime) -> list[tuple[str, datetime]]:
        """The sessions logged out that have not expired by ``now`` (the wall's): nonce and expiry."""
        c = cluster_changes.c
        query = select(c.subject, c.until).where(c.kind == "logout", c.until >= now)
        async with self._db.read() as conn:
            return [(nonce, until) for nonce, until in await conn.execute(query)]


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
