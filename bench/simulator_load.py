"""Simulator load: how far hundreds of concurrent calls slow the simulated world, against ten.

Both runs do the same thing on one compressed clock (scale 50) over real AMI TCP: originate
clients, redirect every answered one to a manager, wait until every channel has hung up. The
world's longest call is ~35 simulated seconds (a ...8 client rings out after 30 s), so a
simulator that keeps up finishes in ~0.7 s of real time whatever the load; the figure is the
real time taken, 200 calls beside 10, in one run (medians of interleaved rounds).

Run: .venv/bin/python -m bench.simulator_load
"""

from __future__ import annotations

import asyncio
import statistics
import time

from ami_adapter.asterisk import SHIPPED_DIALPLAN
from pbxsim import Behaviour, ScaledClock, Simulator, World
from pbxsim.tests.amitools import RawAmi, connect_to, originate, wait_until
from pbxsim.world import transcript_client

SCALE = 50.0
ROUNDS = 5


def _patient(number: str) -> Behaviour:
    if number[-1] in "789":
        return transcript_client(number)
    return Behaviour(answer_after=1.0, talk=None)


async def one_run(calls: int) -> float:
    world = World(default_client=_patient)
    async with Simulator(clock=ScaledClock(SCALE), dialplan=SHIPPED_DIALPLAN, world=world) as sim:
        ami = await RawAmi.connect(sim.port)
        await ami.login()
        started = time.perf_counter()
        for number in range(calls):
            ami.send("Originate", *originate(f"7916{number:07d}", f"load-{number}"))
        await wait_until(lambda: len(ami.events("OriginateResponse")) == calls)
        waiting = [
            response["Channel"]
            for response in ami.events("OriginateResponse")
            if response["Reason"] == "4" and response["Uniqueid"][-1] != "9"
        ]
        await wait_until(
            lambda: sum(channel.application == "MusicOnHold" for channel in sim.live_channels()) == len(waiting)
        )
        for turn, channel in enumerate(waiting):
            ami.send("Redirect", *connect_to(channel, f"1{turn % 100:02d}"))
        await wait_until(lambda: not sim.live_channels())
        elapsed = time.perf_counter() - started
        await ami.close()
        return elapsed


async def main() -> None:
    single, loaded = [], []
    for _ in range(ROUNDS):
        single.append(await one_run(10))
        loaded.append(await one_run(200))
    t_single, t_loaded = statistics.median(single), statistics.median(loaded)
    print(f"Simulator load at scale {SCALE:g} ({ROUNDS} rounds, medians; ~0.7 s is keeping up exactly)")
    print(f"  10 concurrent calls : {t_single:6.2f} s real")
    print(f"  200 concurrent calls: {t_loaded:6.2f} s real")
    print(f"  ratio 200/10: {t_loaded / t_single:.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
