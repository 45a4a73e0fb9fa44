"""The simulator carries hundreds of concurrent calls correctly (how fast: bench/simulator_load.py)."""

from __future__ import annotations

from collections import Counter

from pbxsim import Behaviour, Simulator, World
from pbxsim.tests.amitools import RawAmi, connect_to, originate, wait_until
from pbxsim.world import transcript_client

CALLS = 200
# Last digit of the client number -> (Response, Reason) of its OriginateResponse in the default world.
EXPECTED = {"7": ("Failure", "5"), "8": ("Failure", "3")}


def _patient(number: str) -> Behaviour:
    """The transcript rules, except that answering clients stay on the line until a manager is done."""
    if number[-1] in "789":
        return transcript_client(number)
    return Behaviour(answer_after=1.0, talk=None)


async def test_two_hundred_concurrent_calls(world: World, sim: Simulator, ami: RawAmi) -> None:
    world.default_client = _patient
    for i in range(CALLS):
        ami.send("Originate", *originate(f"7916{i:07d}", f"load-{i}"))
    await wait_until(lambda: len(ami.events("OriginateResponse")) == CALLS)
    outcomes = {m["Uniqueid"]: (m["Response"], m["Reason"]) for m in ami.events("OriginateResponse")}
    for i in range(CALLS):
        assert outcomes[f"load-{i}"] == EXPECTED.get(str(i)[-1], ("Success", "4")), i

    # Every answered client that waits on hold (...9 ones hang up by themselves) meets a manager.
    waiting = [m["Channel"] for m in ami.events("OriginateResponse") if m["Reason"] == "4" and m["Uniqueid"][-1] != "9"]
    await wait_until(lambda: sum(c.application == "MusicOnHold" for c in sim.live_channels()) == len(waiting))
    for n, channel in enumerate(waiting):
        ami.send("Redirect", *connect_to(channel, f"1{n % 100:02d}"))
    await wait_until(lambda: not sim.live_channels())
    # Every channel ever made (a client pair per call, a manager pair per bridge) has hung up.
    await wait_until(lambda: len(ami.events("Hangup")) == 2 * CALLS + 2 * len(waiting))
    assert len(ami.events("BridgeDestroy")) == len(waiting)
    bridged = Counter(m["Uniqueid"] for m in ami.events("BridgeEnter"))
    assert len(bridged) == 2 * len(waiting) and set(bridged.values()) == {1}
    assert {f"load-{i}" for i in range(CALLS)} <= {m["Uniqueid"] for m in ami.events("Hangup")}
