"""Fixtures for the simulator's own tests: a simulator on a fast clock and a logged-in raw AMI client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ami_adapter.asterisk import SHIPPED_DIALPLAN
from pbxsim import ScaledClock, Simulator, World
from pbxsim.tests.amitools import SCALE, RawAmi


@pytest.fixture
def clock() -> ScaledClock:
    return ScaledClock(SCALE)


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
async def sim(clock: ScaledClock, world: World) -> AsyncIterator[Simulator]:
    async with Simulator(clock=clock, dialplan=SHIPPED_DIALPLAN, world=world, record=True) as simulator:
        yield simulator


@pytest.fixture
async def ami(sim: Simulator) -> AsyncIterator[RawAmi]:
    client = await RawAmi.connect(sim.port)
    assert (await client.login())["Response"] == "Success"
    yield client
    await client.close()
