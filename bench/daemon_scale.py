"""The daemon with 10,000 managers: how long it takes to start, its memory with 1,000 bridged calls,
and how long a routing reload of that size stalls the event loop.

* startup: from exec of ``leadrouter run`` to its first healthy /health (database migrated, the
  board built, the PBX read), 10,000 managers in routing.yaml;
* memory: the daemon's resident set once 1,000 clients talk to 1,000 managers (bridged on the
  fake PBX, every call live in the dialer);
* reload: in this process, the longest gap a 1 ms ticker sees while a routing.yaml of 10,000
  managers padded to 1 MB is checked off the loop and the board is rebuilt from it — what
  SIGHUP does (``Daemon.reload_routing``).
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import yaml

from bench.dial import daemon, fake_pbx, numbers, post_leads
from config.routing import RoutingSource
from router.board import ManagerBoard

RELOAD_BYTES = 1 << 20


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def startup_and_memory(managers: int, calls: int) -> tuple[float, float]:
    """(seconds to a healthy start, resident MB with ``calls`` bridged)."""
    with tempfile.TemporaryDirectory(prefix="lr-bench-scale-") as tmp:
        async with fake_pbx("talk") as (pbx, ami_port), daemon(Path(tmp), ami_port, managers=managers) as started:
            process, port, startup = started
            posted = await post_leads(port, numbers(500, calls), 500)
            if len(posted.answered) != calls:
                raise RuntimeError(f"{calls - len(posted.answered)} leads refused")
            deadline = time.perf_counter() + 120
            while int(await pbx.ask("bridged")) < calls:
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"only {await pbx.ask('bridged')} of {calls} calls bridged in 120 s")
                await asyncio.sleep(0.2)
            return startup, resident_mb(process.process.pid)


def _padded_routing(managers: int, size: int) -> str:
    """routing.yaml of ``managers`` managers, with names long enough that the file is ``size`` bytes."""
    plain = yaml.safe_dump({"version": 1, "managers": [], "scenarios": [{"name": "default"}]})
    per_manager = (size - len(plain)) // managers
    listed = []
    for n in range(managers):
        entry = {"id": f"m{n}", "name": "", "extension": str(10_000 + n)}
        room = per_manager - len(yaml.safe_dump([entry], default_flow_style=False))
        entry["name"] = f"Manager {n} " + "x" * max(room - len(f"Manager {n} ") - 2, 0)
        listed.append(entry)
    return yaml.safe_dump({"version": 1, "managers": listed, "scenarios": [{"name": "default"}]}, sort_keys=False)


async def _stall(work: Awaitable[Any]) -> float:
    """The longest gap (seconds) a 1 ms ticker sees while ``work`` runs."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    last = loop.time()
    longest = 0.0
    while not task.done():
        await asyncio.sleep(0.001)
        now = loop.time()
        longest, last = max(longest, now - last), now
    task.result()
    return longest


def _write(path: Path, text: str) -> None:
    path.write_text(text)


async def ticker_alone(seconds: float = 2.0) -> float:
    """The longest gap the ticker sees with nothing else to do: what the machine's scheduling costs."""
    return await _stall(asyncio.sleep(seconds))


async def reload_stall(managers: int, size: int = RELOAD_BYTES, rounds: int = 3) -> float:
    """The median over ``rounds`` reloads of the longest loop stall (seconds) one causes."""
    with tempfile.TemporaryDirectory(prefix="lr-bench-reload-") as tmp:
        path = Path(tmp) / "routing.yaml"
        _write(path, _padded_routing(managers, size))
        source = RoutingSource.load(path)
        board = ManagerBoard(source.plan, random.Random(1))

        async def reload() -> None:
            problems = await source.reload_off_loop(max_bytes=size + 1024, time_cap=60)
            assert problems == [], problems
            await asyncio.sleep(0)  # as Daemon.reload_routing does
            board.replace(source.plan)

        stalls = sorted([await _stall(reload()) for _ in range(rounds)])
        return stalls[len(stalls) // 2]
