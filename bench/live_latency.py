"""How soon the live board (GET /live, server-sent events) shows a manager's phone changing.

Issue 9 asks for the board "within a second of the PBX event". The daemon runs as a real
``leadrouter run`` process beside the PBX simulator; a supervisor's stream is open on /live. The
simulator sets the manager's device state (``DeviceStateChange`` on the wire, as a phone going
off hook does) and the time to the first board event showing the new state is taken, flip after
flip, alternately busy and free.

    .venv/bin/python -m bench.live_latency [--flips 40] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import httpx
import yaml

from ami_adapter.asterisk import SHIPPED_DIALPLAN
from bench.chaos.parts import DaemonProcess
from leadrouter.broker import free_port
from leadrouter.demo import simulator_settings
from pbxsim import ScaledClock, Simulator, World

TOKEN = "live-bench-token-0123456789"
MANAGERS = 20
# Seconds between flips, drawn at random: a fixed pause would lock the changes to one phase of
# the board's look interval and measure that phase only.
PAUSE = (0.2, 0.6)


async def _boards(http: httpx.AsyncClient) -> AsyncGenerator[dict[str, Any]]:
    async with http.stream("GET", "/live", timeout=None) as stream:
        async for line in stream.aiter_lines():
            if line.startswith("data: "):
                yield json.loads(line.removeprefix("data: "))


def _state(board: dict[str, Any], manager_id: str) -> str | None:
    return next((str(row["state"]) for row in board["managers"] if row["id"] == manager_id), None)


async def measure(flips: int) -> dict[str, float]:
    extensions = [str(101 + n) for n in range(MANAGERS)]
    with tempfile.TemporaryDirectory(prefix="leadrouter-live-") as folder:
        workdir = Path(folder)
        sim = Simulator(clock=ScaledClock(1.0), dialplan=SHIPPED_DIALPLAN, world=World(clients={}, managers={}))
        await sim.start()
        http_port = free_port()
        settings = simulator_settings(ami_port=sim.port, database=workdir / "lr.db", mqtt_port=None, token=TOKEN)
        settings["pbx"] |= {"manager_device": "Custom:{extension}"}  # a phone's cached device state
        settings["http"] |= {"port": http_port}
        settings |= {"routing_file": "routing.yaml", "log": {"level": "warning"}}
        routing = {
            "version": 1,
            "managers": [{"id": f"m{ext}", "name": f"Manager {ext}", "extension": ext} for ext in extensions],
            "scenarios": [{"name": "default"}],
        }
        (workdir / "routing.yaml").write_text(yaml.safe_dump(routing))
        config = workdir / "leadrouter.yaml"
        config.write_text(yaml.safe_dump(settings))
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", headers=headers, timeout=10) as http:
            daemon = DaemonProcess(config, workdir / "daemon.log", http)
            await daemon.start()
            try:
                return await _flips(sim, http, extensions, flips)
            finally:
                await daemon.stop()
                await sim.close()


async def _flips(sim: Simulator, http: httpx.AsyncClient, extensions: list[str], flips: int) -> dict[str, float]:
    latencies: list[float] = []
    rng = random.Random(9)
    boards = _boards(http)
    try:
        for flip in range(flips):
            extension = extensions[flip % len(extensions)]
            busy = (flip // len(extensions)) % 2 == 0
            wanted = "on_call" if busy else "available"
            await asyncio.sleep(rng.uniform(*PAUSE))
            changed_at = time.monotonic()
            sim.set_device_state(f"Custom:{extension}", "INUSE" if busy else "NOT_INUSE")
            async for board in boards:
                if _state(board, f"m{extension}") == wanted:
                    latencies.append(time.monotonic() - changed_at)
                    break
    finally:
        await boards.aclose()
    latencies.sort()
    return {
        "flips": float(len(latencies)),
        "board_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "board_p90_ms": round(latencies[int(0.9 * (len(latencies) - 1))] * 1000, 1),
        "board_max_ms": round(latencies[-1] * 1000, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flips", type=int, default=40)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    figures = asyncio.run(measure(args.flips))
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:>14}  {value:g}")


if __name__ == "__main__":
    main()
