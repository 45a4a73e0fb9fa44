"""Shared fixtures: real services the tests start for themselves."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from leadrouter.broker import private_mosquitto
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


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated SQLite database file of the test's own."""
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'lr.db'}") as db:
        await db.migrate()
        yield db
