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
other hears no. A promise whose call has ended (its release was lost with its daemon) is taken.

On SQLite one daemon owns the file: it runs every job, a call steered by any other id is a
previous run's, and the in-memory board is the whole truth about its managers (no rows written).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Collection, Coroutine
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import structlog
from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.engine import Database
from storage.schema import calls, manager_reservations

log = structlog.get_logger("cluster")


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for a name (Python's hash() changes per process)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class Cluster:
    def __init__(self, db: Database, daemon_id: str, clock_now: Callable[[], datetime]) -> None:
        self._db = db
        self.daemon_id = daemon_id
        self._now = clock_now
        self.shared = db.engine.dialect.name == "postgresql"  # several daemons possible
        self._lease: AsyncConnection | None = None
        self._lease_lock = asyncio.Lock()  # one statement at a time on the lease connection
        self.jobs: set[str] = set()  # the singleton jobs this daemon holds

    async def __aenter__(self) -> Self:
        if self.shared:
            lease = await self._db.engine.connect()
            self._lease = await lease.execution_options(isolation_level="AUTOCOMMIT")
            await self._lease.execute(select(func.pg_advisory_lock(lock_key(self.daemon_id))))
        log.info("cluster.joined", daemon_id=self.daemon_id, shared=self.shared)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._lease is not None:
            # Ends the session, not just hands the connection back to the pool: every lock of ours goes with it.
            await self._lease.invalidate()
            await self._lease.close()
            self._lease = None

    async def _try_lock(self, name: str) -> bool:
        assert self._lease is not None
        async with self._lease_lock:
            return bool((await self._lease.execute(select(func.pg_try_advisory_lock(lock_key(name))))).scalar_one())

    async def _unlock(self, name: str) -> None:
        assert self._lease is not None
        async with self._lease_lock:
            await self._lease.execute(select(func.pg_advisory_unlock(lock_key(name))))

    async def gone(self, daemon_ids: Collection[str | None]) -> set[str | None]:
        """Which of these daemons no longer run (None: a call stored before daemons had ids)."""
        found: set[str | None] = set()
        for daemon_id in daemon_ids:
            if daemon_id == self.daemon_id:
                continue
            if daemon_id is None or not self.shared:
                found.add(daemon_id)
            elif await self._try_lock(daemon_id):
                await self._unlock(daemon_id)
                found.add(daemon_id)
        return found

    async def elected(self, job: str, run: Callable[[], Coroutine[Any, Any, None]], poll: float) -> None:
        """Run ``run`` for good once this daemon holds the job; until then try for it every ``poll`` s."""
        if self.shared:
            waited = False
            while not await self._try_lock(f"job:{job}"):
                if not waited:
                    log.info("cluster.standby", job=job, daemon_id=self.daemon_id)
                    waited = True
                await asyncio.sleep(poll)
        self.jobs.add(job)
        log.info("cluster.elected", job=job, daemon_id=self.daemon_id)
        await run()

    async def reserve(self, manager_id: str, call_id: int) -> bool:
        """Promise the manager to the call; False when another live call has him."""
        if not self.shared:
            return True
        row = {"manager_id": manager_id, "call_id": call_id, "daemon_id": self.daemon_id, "reserved_at": self._now()}
        ended = select(calls.c.id).where(calls.c.id == manager_reservations.c.call_id, calls.c.ended_at.is_not(None))
        # Taken when free, when already this call's, or when its call has ended (a release lost with its daemon).
        statement = (
            postgresql.insert(manager_reservations)
            .values(row)
            .on_conflict_do_update(
                index_elements=[manager_reservations.c.manager_id],
                set_={"call_id": call_id, "daemon_id": self.daemon_id, "reserved_at": row["reserved_at"]},
                where=(manager_reservations.c.call_id == call_id) | ended.exists(),
            )
            .returning(manager_reservations.c.manager_id)
        )
        async with self._db.write() as conn:
            taken = (await conn.execute(statement)).first() is not None
            await conn.commit()
        return taken

    async def release(self, manager_id: str, call_id: int) -> None:
        if not self.shared:
            return
        async with self._db.write() as conn:
            await conn.execute(
                delete(manager_reservations).where(
                    manager_reservations.c.manager_id == manager_id, manager_reservations.c.call_id == call_id
                )
            )
            await conn.commit()
