"""Fixtures for the simulator's own tests: a simulator on a fast clock and a logged-in raw AMI client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from amitools import SCALE, AmiClient

from ami_adapter.simulator import Simulator, World
from leadrouter.clock import ScaledClock


@pytest.fixture
def clock() -> ScaledClock:
    return ScaledClock(SCALE)


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
async def sim(clock: ScaledClock, world: World) -> AsyncIterator[Simulator]:
    async with Simulator(clock=clock, world=world) as simulator:
        yield simulator


@pytest.fixture
async def ami(sim: Simulator) -> AsyncIterator[AmiClient]:
    client = await AmiClient.connect(sim.port)
    assert (await client.login())["Response"] == "Success"
    yield client
    await client.close()
