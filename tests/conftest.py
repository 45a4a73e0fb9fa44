"""Shared fixtures: real services the tests start for themselves."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from leadrouter.broker import private_mosquitto


@pytest.fixture(scope="session")
def mosquitto_port() -> Iterator[int]:
    """A real mosquitto of our own on a free port, so tests never share a broker with anything."""
    with private_mosquitto() as port:
        yield port
