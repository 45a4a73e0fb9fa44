"""Shared fixtures: real services the tests start for themselves."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import json
import logging
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
import structlog
from sqlalchemy import Connection, Engine, event

from leadrouter.broker import private_mosquitto
from leadrouter.logs import configure_logging
from leadrouter.postgres import (
    create_database,
    drop_database,
    postgres_server,
    scratch_database,
    unique_name,
    with_database,
)
from storage.engine import Database


def pytest_collection_finish(session: pytest.Session) -> None:
    # As the daemon does after start-up (leadrouter/daemon.py): keep everything imported out
    # of the collector, so a full collection cannot stall a test's compressed clock for 60 ms.
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session")
def mosquitto_port() -> Iterator[int]:
    """A real mosquitto of our own on a free port, so tests never share a broker with anything."""
    with private_mosquitto() as port:
        yield port


T = TypeVar("T")


@contextlib.contextmanager
def sqlite_read_only(engine: Engine, read_only: list[bool]) -> Iterator[None]:
    """SQLite refusing writes while ``read_only[0]``, as for a read-only file: set on each connection
    as it is checked out, and as each transaction begins through SQLAlchemy (the writer keeps its
    connection open; a transaction of storage.uow's direct statements alone does not begin there)."""

    def at_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA query_only = {int(read_only[0])}")
        cursor.close()

    def at_begin(conn: Connection) -> None:
        conn.exec_driver_sql(f"PRAGMA query_only = {int(read_only[0])}")

    event.listen(engine, "checkout", at_checkout)
    event.listen(engine, "begin", at_begin)
    try:
        yield
    finally:
        event.remove(engine, "checkout", at_checkout)
        event.remove(engine, "begin", at_begin)


def _run_apart(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on a loop of its own in a thread: a session fixture may be set up while a test's loop runs."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, coro).result()


async def _migrate(url: str) -> None:
    async with Database(url) as db:
        await db.migrate()


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[tuple[str, str]]:
    """A real PostgreSQL (this machine's, or a throwaway one) and a migrated database on it to copy.

    Yields the server URL and the template's name; the template is dropped after the session.
    """
    with postgres_server() as server:
        name = unique_name("lr_test_template")
        _run_apart(create_database(server, name))
        try:
            _run_apart(_migrate(with_database(server, name)))
            yield server, name
        finally:
            _run_apart(drop_database(server, name))


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A migrated database of the test's own: a SQLite file, or a fresh copy of the PostgreSQL template."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'lr.db'}"
        await _migrate(url)
        yield url
        return
    server, template = request.getfixturevalue("postgres_template")
    async with scratch_database(server, "lr_test", template) as url:
        yield url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A migrated database of the test's own, on SQLite and on PostgreSQL."""
    async with Database(database_url) as db:
        yield db


class JsonLog:
    """The lines the daemon logged, as ops would read them from journald."""

    def __init__(self, stream: io.StringIO) -> None:
        self._stream = stream

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self._stream.getvalue().splitlines()]

    def events(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line["event"] == event]


@pytest.fixture
def json_log() -> Iterator[JsonLog]:
    """Everything logged during the test, structlog's lines and the libraries', as JSON lines."""
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream, cache=False)
    try:
        yield JsonLog(stream)
    finally:
        logging.getLogger().handlers = []
        logging.getLogger().setLevel(logging.WARNING)
        structlog.reset_defaults()
