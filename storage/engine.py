"""Opening the database: engine settings per backend, the writer queue, schema migrations,
and whether the database takes writes right now.

A database that is full, read-only or gone is an outage, not a bug: every write and read
that fails for such a reason raises ``StorageUnavailable`` (callers answer 503 or retry),
the state change is logged once, and ``recover`` probes until writes succeed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import aiosqlite
import structlog
from sqlalchemy import (
    Column,
    Connection,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    delete,
    event,
    insert,
    inspect,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from storage.schema import metadata, outbox

if TYPE_CHECKING:  # Alembic is imported only to upgrade a database behind the newest revision
    from alembic.config import Config

log = structlog.get_logger("storage")

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version"  # Alembic's, where it keeps the database's revision

# PostgreSQL SQLSTATEs that mean "not now" rather than "wrong": connection (08), insufficient
# resources such as a full disk (53), operator intervention such as a shutdown (57), I/O (58),
# and a read-only transaction (25006: a standby, or default_transaction_read_only).
_UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53", "57", "58")
_UNAVAILABLE_SQLSTATES = frozenset({"25006"})

PROBE_PAYLOAD = "x" * 1024  # about what one lead and its event write
REMINDER_INTERVAL = 300.0  # seconds between "still failing" lines while an outage lasts


class StorageUnavailable(Exception):
    """The database cannot do this now (disk full, read-only, unreachable); try again later."""


def unavailable_reason(exc: BaseException) -> str | None:
    """Why ``exc`` means the database is unavailable, or None when it is some other error."""
    if isinstance(exc, OSError | TimeoutError):  # asyncpg raises these while connecting
        return str(exc) or type(exc).__name__
    if isinstance(exc, sqlite3.OperationalError):  # from InlineConnection.begin_immediate, not wrapped by SQLAlchemy
        return str(exc)
    if not isinstance(exc, DBAPIError):
        return None
    # SQLite reports a full disk, a read-only file, I/O errors and locks as OperationalError.
    if exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError):
        return str(exc.orig)
    sqlstate = getattr(exc.orig, "sqlstate", None) or ""
    if sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES or sqlstate in _UNAVAILABLE_SQLSTATES:
        return str(exc.orig)
    return None


def lock_key(name: str) -> int:
    """A stable signed 64-bit PostgreSQL advisory lock key for a name (Python's hash() changes per process)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


# Reads that must not take SQLite's write lock ask for this execution option.
_READ_ONLY = {"leadrouter_read_only": True}

INLINE_TURN = 0.002  # seconds of inline database work at most before the loop gets a turn
BUSY_TIMEOUT_MS = 10_000  # how long SQLite waits for another process's write lock

# SQLite write transactions between two checkpoints of the write-ahead log (see Database.write).
CHECKPOINT_EVERY = 100


class InlineConnection(aiosqlite.Connection):
    """aiosqlite's connection, whose calls run on the event loop's own thread while ``inline``.

    aiosqlite hands every call (cursor, execute, fetch, close, commit) to the connection's
    thread and wakes the loop with the result: a lead's transactions made ~25 such round trips,
    and each cost more CPU than the SQLite work it carried (4 ms per one-lead transaction
    against 0.1 ms for the same statements made directly). Database.write sets ``inline``
    once it holds SQLite's write lock: from there on nothing waits for another connection, and
    the statements work in SQLite's page cache. What may wait keeps the thread: the commit,
    which writes the WAL, a BEGIN that finds another process holding the lock, and reads,
    which may be long; checkpoints, which fsync, run on another connection's thread.
    """

    inline = False
    _turn_given = 0.0  # loop time when inline work last let other tasks run
    # Whether SQLite waits BUSY_TIMEOUT_MS for a lock held elsewhere, as every connection opens,
    # or not at all: the writer's setting from its first BEGIN IMMEDIATE on (begin_immediate).
    waits = True

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self.inline:
            return await super()._execute(fn, *args, **kwargs)
        if not self._running or not self._connection:  # as aiosqlite's own check
            raise ValueError("Connection closed")
        await self.turn()
        return fn(*args, **kwargs)

    @property
    def raw(self) -> sqlite3.Connection:
        return self._conn

    async def turn(self) -> None:
        """The loop's turn, once inline work has run INLINE_TURN since the last: a batch's
        transaction is many statements, and the loop got a turn between them while each went to
        the thread, so a burst must not hold everything else up."""
        loop = asyncio.get_running_loop()
        if loop.time() - self._turn_given > INLINE_TURN:
            await asyncio.sleep(0)
            self._turn_given = loop.time()

    async def commit(self) -> None:
        await self.commit_queued()

    async def close(self) -> None:
        # On the thread, behind what still runs there: SQLAlchemy closes a connection whose commit's
        # waiter was cancelled while that commit is on the thread, and on the loop the close would
        # wait beside it for SQLite's lock, the loop stalled as long.
        self.inline = False
        await super().close()

    def commit_queued(self) -> asyncio.Future[None]:
        """The commit on its way to the connection's thread when this returns, as aiosqlite queues
        a call; the future gives its outcome, and the loop may do other work before awaiting it.

        The commit is where SQLite writes the transaction to the WAL: on the connection's thread,
        so a disk busy with other writers (dirty-page throttling) never stalls the loop.
        """
        if not self._running or not self._connection:  # as aiosqlite's own check
            raise ValueError("Connection closed")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tx.put_nowait((future, self._conn.commit))
        return future

    def commit_then_queued(self, then: Callable[[], None]) -> tuple[asyncio.Future[None], _Finished]:
        """``commit_queued``, with ``then`` run on the thread once the commit succeeded, after the
        future's outcome is on its way to the loop (see Database.commit); its failure is logged.
        The second result tells when the thread is done with both."""
        if not self._running or not self._connection:  # as aiosqlite's own check
            raise ValueError("Connection closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        finished = _Finished(loop)
        # No future for aiosqlite to settle: this one is settled by _commit_then, before ``then`` runs.
        self._tx.put_nowait((None, functools.partial(_commit_then, self._conn, future, then, finished)))
        return future, finished

    async def begin_immediate(self) -> None:
        """BEGIN IMMEDIATE, then inline. Tried on the loop without waiting first: Database queues
        this process's writers, so the lock is free unless another process holds it, and only
        then is it waited for, on the connection's thread (a round trip costs as much as a
        transaction's statements).

        The writer does not wait by default: nothing it runs once the lock is its own waits for
        another connection (reads never wait in WAL mode), so it stays at no waiting, and only a
        BEGIN that found the lock taken waits, on the thread. Setting it for each BEGIN and back
        after was two more statements a transaction (~25 us of the loop's CPU at 200 leads/s).
        A connection that stops being the writer waits again once the pool lends it (``restore_wait``)."""
        self.inline = False  # until the lock is ours: waiting for it must not block the loop
        connection = self._conn
        if self.waits:
            connection.execute("PRAGMA busy_timeout=0")
            self.waits = False
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:  # SQLITE_BUSY_RECOVERY too
                raise
            self.restore_wait()
            await self.execute("BEGIN IMMEDIATE")
        self.inline = True
        self._turn_given = asyncio.get_running_loop().time()

    def restore_wait(self) -> None:
        """Wait for locks held elsewhere again, as the connection opened. Only while nothing of it
        is on its thread: set on the loop's thread directly."""
        if not self.waits:
            self._conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self.waits = True


def _commit_then(
    connection: sqlite3.Connection, future: asyncio.Future[None], then: Callable[[], None], finished: _Finished
) -> None:
    """On the connection's thread: the commit, its outcome sent to the loop, then ``then`` if it succeeded."""
    loop = future.get_loop()
    try:
        try:
            connection.commit()
        except BaseException as exc:
            loop.call_soon_threadsafe(_settle, future, exc)
            return
        loop.call_soon_threadsafe(_settle, future, None)
        try:
            then()
        except Exception:
            log.exception("storage.after_commit_failed")
    finally:
        finished.set()


class _Finished:
    """When the connection's thread is done with a commit and what follows it (``then``): asked
    for on the loop only when its wait for the commit was cancelled, so the thread costs a lock."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._done = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        """On the thread."""
        with self._lock:
            self._done = True
            waiter = self._waiter
        if waiter is not None:
            try:
                self._loop.call_soon_threadsafe(_settle, waiter, None)
            except RuntimeError:  # the loop closed meanwhile: nobody waits any more
                log.warning("storage.commit_waiter_gone")

    async def wait(self) -> None:
        """On the loop, through any cancellation: the commit's waiter was cancelled already."""
        with self._lock:
            if self._done:
                return
            waiter = self._waiter = self._loop.create_future()
        while not waiter.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(waiter)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # its waiter was cancelled
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _run_beside_commit(meanwhile: Callable[[], None] | None) -> None:
    """What a unit of work runs beside its commit; its failure is logged and changes nothing of
    the commit, whose outcome alone the caller hears (on SQLite's direct path the commit is on
    its way already, elsewhere it has not begun: a raise would have told the two apart)."""
    if meanwhile is None:
        return
    try:
        meanwhile()
    except Exception:
        log.exception("storage.beside_commit_failed")


def direct_sqlite(conn: AsyncConnection) -> InlineConnection | None:
    """The driver under ``conn`` while this loop holds SQLite's write lock on it in an open
    transaction (Database.write), else None. Statements may then run on its ``raw`` sqlite3
    connection directly, on the loop, as it runs them itself, giving the loop its ``turn``
    between them (storage.uow's hot path)."""
    proxied = conn.sync_connection.connection if conn.sync_connection is not None else None
    driver = proxied.driver_connection if proxied is not None else None
    if not isinstance(driver, InlineConnection) or not driver.inline:
        return None
    return driver if driver.raw.in_transaction else None


def _inline_connector(path: str) -> Callable[[], Any]:
    """create_async_engine's ``async_creator``: an InlineConnection to the file, as aiosqlite.connect makes one."""

    async def connect() -> InlineConnection:
        # check_same_thread=False, as SQLAlchemy's aiosqlite dialect connects: the sqlite3 module
        # is built thread-safe (serialized), and the loop's thread uses the connection too.
        connection = InlineConnection(lambda: sqlite3.connect(path, check_same_thread=False), 64)
        connection._thread.daemon = True  # as SQLAlchemy sets it: a thread never keeps the process alive
        await connection
        return connection

    return connect


def _create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(url, pool_pre_ping=True, **kwargs)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    if parsed.database and parsed.database != ":memory:" and not parsed.query:
        kwargs["async_creator"] = _inline_connector(parsed.database)
    # The connection used last again: its SQLite page cache is still valid (this process is the
    # only writer), where taking turns made each transaction re-read its pages from the file.
    engine = create_async_engine(url, pool_use_lifo=True, **kwargs)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let us emit BEGIN ourselves (below) instead of the driver's implicit deferred BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=NORMAL",
            f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
            "PRAGMA foreign_keys=ON",
            # Commits run on the event loop (Database.write): a checkpoint there would stall it
            # for its fsync. Database.write runs them on a connection's own thread instead.
            "PRAGMA wal_autocheckpoint=0",
        ):
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(_dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        # Every use starts on the connection's thread, waiting for locks as usual; only
        # Database.write moves it to the loop (and has its writer not wait).
        if isinstance(record.driver_connection, InlineConnection):
            record.driver_connection.inline = False
            record.driver_connection.restore_wait()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        driver = conn.connection.driver_connection
        if driver is not None and driver.in_transaction:
            return  # Database.write began it (begin_immediate); SQLAlchemy's begins at its first statement
        if isinstance(driver, InlineConnection):
            # A block of Database.write that goes on after its commit: this BEGIN, and what follows
            # it, wait on the connection's thread for a lock held elsewhere, as any connection's.
            driver.inline = False
            driver.restore_wait()
        # A deferred BEGIN that later writes fails with "database is locked" under
        # concurrency (761 of 1000 in our measurement); IMMEDIATE takes the write lock
        # up front and waits for it within busy_timeout instead.
        if conn.get_execution_options().get("leadrouter_read_only"):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


# Alembic's own table, as it creates it, for a database built from the schema without it (Database.migrate).
_version = Table(
    VERSION_TABLE,
    MetaData(),
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"),
)


def _stamped(connection: Connection) -> set[str]:
    if not connection.dialect.has_table(connection, VERSION_TABLE):
        return set()
    return set(connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())


def newest_revision() -> str:
    """The revision of the newest migration: each migration's file name begins with its revision,
    and the newest sorts last (tests/storage pins both against Alembic's own reading)."""
    return max(path.name for path in (MIGRATIONS / "versions").glob("[0-9]*.py")).partition("_")[0]


def _alembic_config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


class Database:
    """The engine, plus on SQLite a queue for writers in this process.

    SQLite has one writer at a time and makes the others wait in its busy handler, which
    sleeps in steps of up to 100 ms: a claim stuck behind a flush would delay an Originate
    by that much. Queueing writers on an asyncio lock instead hands the write lock over at
    once, in arrival order. PostgreSQL needs no queue.
    """

    def __init__(self, url: str) -> None:
        self.engine = _create_engine(url)
        self._writers = asyncio.Lock() if self.engine.dialect.name == "sqlite" else None
        self.failing_since: datetime | None = None  # set while writes fail for an outage
        self.last_error: str | None = None
        self._failing_started = 0.0  # monotonic, for the outage's length
        self._reminded = 0.0
        self._failing = asyncio.Event()  # wakes recover()
        self._uncheckpointed = 0  # SQLite write transactions since the last checkpoint began
        self._checkpoint: asyncio.Task[None] | None = None
        self._writer: tuple[AsyncConnection, Any] | None = None  # SQLite: see _kept_writer

    @property
    def writable(self) -> bool:
        """False from a write that failed for an outage until the next one that succeeds."""
        return self.failing_since is None

    def _failed(self, reason: str) -> None:
        now = time.monotonic()
        self.last_error = reason
        if self.failing_since is None:
            self.failing_since = datetime.now(UTC)
            self._failing_started = self._reminded = now
            self._failing.set()
            log.error("database.failing", error=reason, hint="disk full, read-only or unreachable; retrying")
        elif now - self._reminded >= REMINDER_INTERVAL:
            self._reminded = now
            log.error("database.still_failing", error=reason, failing_for=round(now - self._failing_started, 1))

    def _succeeded(self) -> None:
        if self.failing_since is not None:
            log.info("database.recovered", failed_for=round(time.monotonic() - self._failing_started, 1))
            self.failing_since = None
            self.last_error = None
            self._failing.clear()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._checkpoint is not None:
            await self._checkpoint
        writer, self._writer = self._writer, None
        try:
            if writer is not None:
                await writer[0].close()
        finally:
            await self.engine.dispose()

    @contextlib.asynccontextmanager
    async def write(self, *, long: bool = False) -> AsyncIterator[AsyncConnection]:
        """A connection in an open write transaction; the caller commits, anything else rolls back.

        The caller commits with Database.commit, or ``conn.commit()`` once a statement went through
        SQLAlchemy: on SQLite that statement begins SQLAlchemy's transaction (see below), and
        ``conn.commit()`` alone would leave statements run on the driver directly uncommitted.

        ``long``: a statement of unbounded length (an operator's bulk change) is in it. On SQLite
        it then runs on the connection's thread, not inline on the loop: other writers wait for
        it either way, but the loop (AMI, health, answers) keeps turning.

        Raises StorageUnavailable when the database cannot take the write now.
        """
        committed = False
        driver = None
        try:
            if self._writers is None:
                async with self.engine.connect() as conn:
                    await conn.begin()
                    yield conn
                    committed = not conn.in_transaction()
            else:
                async with self._writers, self._kept_writer() as (conn, driver):
                    if isinstance(driver, InlineConnection):
                        await driver.begin_immediate()  # the rest runs on the loop (see InlineConnection)
                        driver.inline = not long
                        # SQLAlchemy's transaction begins with the first statement made through it (its
                        # autobegin; _on_begin emits nothing then): the hot path's statements go to the
                        # driver directly and Database.commit commits there, and SQLAlchemy's begin and
                        # commit cost the loop ~30 and ~40 µs a transaction.
                    else:
                        await conn.begin()
                    yield conn
                    committed = not conn.in_transaction() and not driver.in_transaction
        except Exception as exc:
            reason = unavailable_reason(exc)
            if reason is None:
                raise
            self._failed(reason)
            raise StorageUnavailable(reason) from exc
        if committed:  # a block that only read proves nothing about writes
            self._succeeded()
            if isinstance(driver, InlineConnection):
                self._committed_inline()

    @contextlib.asynccontextmanager
    async def _kept_writer(self) -> AsyncIterator[tuple[AsyncConnection, Any]]:
        """SQLite's writers take turns on one connection (and its driver's), kept open between
        transactions: taking one from the pool and giving it back cost as much CPU as a lead's
        statements. A block that fails (or whose closing rollback does) gives it back to the pool,
        which rolls it back, and the next write takes another: a transaction left open would keep
        SQLite's write lock from every other process and fail this one's next BEGIN."""
        if self._writer is None:
            conn = await self.engine.connect()
            self._writer = conn, (await conn.get_raw_connection()).driver_connection
        conn, driver = self._writer
        try:
            yield self._writer
            if conn.in_transaction():  # a block that only read, or went on after its commit
                await conn.rollback()
            if driver.in_transaction:  # ...that began no SQLAlchemy transaction (see write)
                await driver.rollback()
        except BaseException:
            self._writer = None
            if isinstance(driver, InlineConnection):
                # Behind whatever still runs on the connection's thread (a commit whose waiter was
                # cancelled), not beside it on the loop.
                driver.inline = False
            try:
                with contextlib.suppress(Exception):
                    # A COMMIT that failed (a deferred constraint, a full disk) leaves its transaction
                    # open, and SQLAlchemy, whose transaction ended with it, has the pool skip its
                    # rollback: the lock would stay taken, and the next reader see the rows. (sqlite3
                    # rolls back only a transaction still open then.)
                    await driver.rollback()
            finally:
                with contextlib.suppress(Exception):
                    await conn.close()
            raise

    async def commit(
        self,
        conn: AsyncConnection,
        meanwhile: Callable[[], None] | None = None,
        then: Callable[[], None] | None = None,
    ) -> None:
        """Commit the transaction of ``conn``, a connection Database.write gave; ``meanwhile`` runs
        while the commit is on the connection's thread, or before it (a failure of it is logged).

        On SQLite, while SQLAlchemy has not begun a transaction of its own there (only direct
        statements ran: storage.uow), the driver's commit, queued here: still on its thread, but
        without SQLAlchemy's commit path and greenlet around the wait (~40 µs of the loop's CPU),
        and the loop runs ``meanwhile`` while SQLite writes the WAL.

        ``then`` runs on the connection's thread right after a commit that succeeded there (that
        direct path only; nothing calls it elsewhere), so what it sends leaves without waiting for
        the loop to hear of the commit. The waiter's wake-up is queued first, so a task that only a
        reply to what ``then`` sent wakes runs after the caller resumed; a task woken by anything
        else may run before, and see that reply (the dialer holds what the PBX says of calls not
        registered yet). Cancelled (a shutdown), this raises CancelledError only once the thread is
        done with the commit and ``then``, whatever further cancellations come meanwhile: what
        ``then`` did, the caller then finds done. ``then`` must be thread-safe; its failure is
        logged, and the commit's outcome alone is what this returns.
        """
        driver = direct_sqlite(conn)
        if driver is None or conn.in_transaction():
            _run_beside_commit(meanwhile)
            await conn.commit()
            return
        if then is None:
            committing = driver.commit_queued()
            _run_beside_commit(meanwhile)
            await committing
            return
        committing, finished = driver.commit_then_queued(then)
        _run_beside_commit(meanwhile)
        try:
            await committing
        except asyncio.CancelledError:
            # ``then`` follows the commit on its thread whatever the waiter does: the caller, giving
            # up, must find done what the thread does, so it learns from ``then`` what happened.
            await finished.wait()
            raise

    def _committed_inline(self) -> None:
        """Checkpoint the write-ahead log every CHECKPOINT_EVERY commits, off the loop: SQLite's
        automatic one would run in the committing call, on the loop, fsync included (5-12 ms
        for 450 pages here)."""
        self._uncheckpointed += 1
        if self._uncheckpointed >= CHECKPOINT_EVERY and self._checkpoint is None:
            self._uncheckpointed = 0
            self._checkpoint = asyncio.create_task(self._checkpoint_wal(), name="sqlite-checkpoint")

    async def _checkpoint_wal(self) -> None:
        try:
            # A connection of its own, on its thread, outside any transaction: PASSIVE copies what
            # no reader still needs and never waits, so writers go on meanwhile.
            async with self.engine.connect() as conn:
                driver = (await conn.get_raw_connection()).driver_connection
                assert isinstance(driver, InlineConnection) and not driver.inline
                await driver.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except Exception as exc:  # the next one tries again; an outage shows on the writes themselves
            log.warning("database.checkpoint_failed", error=repr(exc))
        finally:
            self._checkpoint = None

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """Raises StorageUnavailable when the database cannot be read now."""
        try:
            async with self.engine.connect() as conn:
                yield await conn.execution_options(**_READ_ONLY)
        except Exception as exc:
            reason = unavailable_reason(exc)
            if reason is None:
                raise
            self._failed(reason)  # reads that work say nothing about writes: only a write clears it
            raise StorageUnavailable(reason) from exc

    async def probe_write(self) -> None:
        """Commit a write that needs the room a lead needs and leaves nothing behind.

        A row is inserted and deleted in one transaction: on SQLite its pages still go to the
        write-ahead log, so a full disk fails it as it fails a lead (rewriting an existing row
        would fit where a lead does not). Raises StorageUnavailable.
        """
        probe_id = f"probe-{uuid.uuid4().hex[:24]}"
        async with self.write() as conn:
            await conn.execute(
                insert(outbox).values(
                    id=probe_id, type="probe", lead_id=0, payload=PROBE_PAYLOAD, created_at=datetime.now(UTC)
                )
            )
            await conn.execute(delete(outbox).where(outbox.c.id == probe_id))
            await conn.commit()

    async def recover(self, every: float = 5.0) -> None:
        """Run for good: while writes fail, probe every ``every`` seconds until one succeeds.

        Without it a quiet daemon would stay "failing" after the disk was freed, as nothing
        else might write, and a load balancer reading /health would never send a lead to prove it.
        """
        while True:
            await self._failing.wait()
            await asyncio.sleep(every)
            with contextlib.suppress(StorageUnavailable):
                await self.probe_write()

    async def revisions(self) -> set[str]:
        """The revisions the database is stamped with (one, unless Alembic's history branches);
        none before its first migration."""
        async with self.read() as conn:
            return await conn.run_sync(_stamped)

    async def migrate(self) -> None:
        """Upgrade the schema to the newest revision; safe to run at every start.

        A database already at the newest revision, as at every restart, is left as it is after one
        query: importing Alembic and reading its scripts cost more CPU than the rest of the start.
        An empty one (a first start) gets the newest schema from storage.schema at once, stamped
        with the newest revision, as Alembic's cookbook builds a database from scratch: running
        every migration on nothing cost ~130 ms of the first start. tests/storage checks that
        both ways build the same tables, columns and indexes.
        """
        newest = newest_revision()
        if await self.revisions() == {newest}:
            return

        def upgrade(connection: Connection) -> None:
            if connection.dialect.name == "postgresql":
                # Daemons starting together on one database take turns here (on SQLite the write
                # lock makes them); who comes second finds the work done, not a table twice.
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key("migrate")})
            if _stamped(connection) == {newest}:
                return
            if not inspect(connection).get_table_names():
                metadata.create_all(connection)
                _version.create(connection)
                connection.execute(insert(_version).values(version_num=newest))
                return
            from alembic import command

            cfg = _alembic_config()
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")

        async with self.write() as conn:
            # Begun through SQLAlchemy (on SQLite write() leaves that to the first statement): Alembic
            # then runs every migration in this one transaction, so a failing one leaves nothing behind.
            if not conn.in_transaction():
                await conn.begin()
            await conn.run_sync(upgrade)
            await conn.commit()
