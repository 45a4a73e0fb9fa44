"""Shared fixtures: real services the tests start for themselves."""

from __future__ import annotations

import gc
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from leadrouter.broker import private_mosquitto
from leadrouter.logs import configure_logging
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
