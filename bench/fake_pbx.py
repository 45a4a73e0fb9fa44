"""The benchmark's fake Asterisk: pbxsim in a process of its own, stamping when each Originate arrives.

Run as ``python -m bench.fake_pbx [--clients busy|talk]``: prints the AMI port on its first
line, then answers commands on stdin, one a line:

* ``stamps``: one JSON line ``{"<digits>": <perf_counter of the Originate's arrival>, ...}``
  of the Originates read since the last ``stamps`` (keyed by the digits of the client's
  number in the Channel header, or the Exten of a manager-first call);
* ``bridged``: one line with the number of bridges up right now (a client talking to a manager);
* end of input: the simulator stops.

``time.perf_counter`` is CLOCK_MONOTONIC on Linux, one clock for every process of the
machine: the load generator's stamp of a POST and this one are comparable.

Clients either reject at once (``busy``, the dial benchmark: calls end as soon as they start,
so only dialling is measured) or answer and talk for an hour (``talk``, the memory benchmark:
every call reaches a manager and stays bridged). Managers answer after 0.1 s and never hang up.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import re
import sys
import time
from collections.abc import Sequence

from ami_adapter.asterisk import SHIPPED_DIALPLAN
from pbxsim import Behaviour, ScaledClock, Simulator, World
from pbxsim.server import Session

_DIGITS = re.compile(r"(\d+)@")


class StampingSimulator(Simulator):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.stamps: dict[str, float] = {}

    async def handle(self, session: Session, message: Sequence[tuple[str, str]]) -> bool:
        if message and message[0][0].lower() == "action" and message[0][1].strip().lower() == "originate":
            at = time.perf_counter()
            channel = next((value for key, value in message if key.lower() == "channel"), "")
            found = _DIGITS.search(channel)
            if found:
                self.stamps[found.group(1)] = at
        return await super().handle(session, message)


async def main(clients: str) -> None:
    # The instrument, not the measured: a full collection of its heap took 14-22 ms here and
    # stamped the Originates that arrived meanwhile that much late, whichever dialer sent them.
    gc.disable()
    client = Behaviour(busy=True) if clients == "busy" else Behaviour(answer_after=0.1, talk=3600.0)
    world = World(default_client=lambda _number: client, default_manager=lambda _ext: Behaviour(answer_after=0.1))
    sim = StampingSimulator(clock=ScaledClock(1.0), dialplan=SHIPPED_DIALPLAN, world=world)
    async with sim:
        print(sim.port, flush=True)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            command = line.decode().strip()
            if command == "stamps":
                stamps, sim.stamps = sim.stamps, {}
                print(json.dumps(stamps), flush=True)
            elif command == "bridged":
                print(len({channel.bridge_id for channel in sim.live_channels() if channel.bridge_id}), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", choices=("busy", "talk"), default="busy")
    asyncio.run(main(parser.parse_args().clients))
