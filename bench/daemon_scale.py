"""The daemon with 10,000 managers: how long it takes to start, its memory with 1,000 bridged calls,
and how long a routing reload of that size stalls the event loop.

* startup: from exec of ``leadrouter run`` to its first healthy /health (database migrated, the
  board built, the PBX read), 10,000 managers in routing.yaml, the median of three starts on
  fresh databases; beside it the CPU the start took, in the daemon and in the copy of it that
  reads routing.yaml meanwhile (on a busy machine the wall clock measures the machine);
* memory: the daemon's resident set once 1,000 clients talk to 1,000 managers (bridged on the
  fake PBX, every call live in the dialer);
* reload: in this process, the longest gap a 1 ms ticker sees while a routing.yaml of 10,000
  managers padded to 1 MB is checked off the loop and the board is rebuilt from it — what
  SIGHUP does (``Daemon.reload_routing``). Each reload renames every manager (the file alternates
  between two spellings), the median of several is taken, and beside it the same ticker over the
  same spans with nothing to do: on a shared machine the scheduler alone stalls a loop for
  milliseconds to tens of them, and the difference is what the reload costs.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.dial import Child, daemon, fake_pbx, numbers, post_leads
from config.routing import RoutingSource
from router.board import ManagerBoard

RELOAD_BYTES = 1 << 20


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _cpu(pid: int) -> tuple[float, float]:
    """(CPU seconds the process used so far, and its waited-for children: the copy that read
    routing.yaml at start), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


@dataclass(frozen=True)
class Start:
    seconds: float  # exec of ``leadrouter run`` -> its first healthy /health
    cpu: float  # the daemon's CPU seconds by then
    copy_cpu: float  # and its copy's, which read routing.yaml beside it (on another core, if free)


async def startup_and_memory(managers: int, calls: int, starts: int = 3) -> tuple[Start, float]:
    """(the median of ``starts`` starts, each on a fresh database; resident MB with ``calls`` bridged
    after the last one)."""
    measured, rss = [], 0.0
    with tempfile.TemporaryDirectory(prefix="lr-bench-scale-") as tmp:
        async with fake_pbx("talk") as (pbx, ami_port):
            for start in range(starts):
                async with daemon(Path(tmp) / str(start), ami_port, managers=managers) as (process, port, seconds):
                    measured.append(Start(seconds, *_cpu(process.process.pid)))
                    if start == starts - 1:
                        await _bridge(pbx, port, calls)
                        rss = resident_mb(process.process.pid)
    return sorted(measured, key=lambda each: each.seconds)[len(measured) // 2], rss


async def _bridge(pbx: Child, port: int, calls: int) -> None:
    """Post ``calls`` leads and wait until each client talks to a manager."""
    posted = await post_leads(port, numbers(500, calls), 500)
    if len(posted.answered) != calls:
        raise RuntimeError(f"{calls - len(posted.answered)} leads refused")
    deadline = time.perf_counter() + 120
    while int(await pbx.ask("bridged")) < calls:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"only {await pbx.ask('bridged')} of {calls} calls bridged in 120 s")
        await asyncio.sleep(0.2)


def _padded_routing(managers: int, size: int, pad: str = "x") -> str:
    """routing.yaml of ``managers`` managers, with names long enough that the file is ``size`` bytes."""
    plain = yaml.safe_dump({"version": 1, "managers": [], "scenarios": [{"name": "default"}]})
    per_manager = (size - len(plain)) // managers
    listed = []
    for n in range(managers):
        entry = {"id": f"m{n}", "name": "", "extension": str(10_000 + n)}
        room = per_manager - len(yaml.safe_dump([entry], default_flow_style=False))
        entry["name"] = f"Manager {n} " + pad * max(room - len(f"Manager {n} ") - 2, 0)
        listed.append(entry)
    return yaml.safe_dump({"version": 1, "managers": listed, "scenarios": [{"name": "default"}]}, sort_keys=False)


@dataclass(frozen=True)
class Stall:
    wall: float  # the longest gap (seconds) a 1 ms ticker saw
    cpu: float  # the most CPU time the loop's thread spent within one such gap: the work that ran
    # without a turn for the ticker, whatever else the machine's scheduler did meanwhile


async def _stall(work: Awaitable[Any]) -> Stall:
    """How long a 1 ms ticker waited at most while ``work`` ran."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    last, last_cpu = loop.time(), time.thread_time()
    longest = longest_cpu = 0.0
    while not task.done():
        await asyncio.sleep(0.001)
        now, cpu = loop.time(), time.thread_time()
        longest, last = max(longest, now - last), now
        longest_cpu, last_cpu = max(longest_cpu, cpu - last_cpu), cpu
    task.result()
    return Stall(longest, longest_cpu)


def _write(path: Path, text: str) -> None:
    path.write_text(text)


async def ticker_alone(seconds: float = 2.0) -> Stall:
    """The longest gap the ticker sees with nothing else to do: what the machine's scheduling costs."""
    return await _stall(asyncio.sleep(seconds))


@dataclass(frozen=True)
class ReloadStall:
    wall: float  # seconds: the median over the reloads of the longest gap the ticker saw
    idle: float  # the same over as long spans with nothing to do, between the reloads
    cpu: float  # the median of the most CPU time the loop spent in one gap (Stall.cpu)


async def reload_stall(managers: int, size: int = RELOAD_BYTES, rounds: int = 5) -> ReloadStall:
    """Over ``rounds`` reloads, medians of the longest loop stall each caused, beside the ticker alone."""
    with tempfile.TemporaryDirectory(prefix="lr-bench-reload-") as tmp:
        path = Path(tmp) / "routing.yaml"
        spellings = [_padded_routing(managers, size, pad) for pad in "xy"]
        _write(path, spellings[1])
        source = RoutingSource.load(path)
        board = ManagerBoard(source.plan, random.Random(1))
        gc.freeze()  # as the daemon does once it has started

        async def reload() -> None:  # what Daemon.reload_routing does
            checked = await source.check_off_loop(max_bytes=size + 1024, time_cap=60)
            assert not isinstance(checked, list), checked
            for _ in board.rebuild(checked):
                await asyncio.sleep(0)
            source.adopt(checked)
            gc.collect(1)
            gc.freeze()

        stalls, idle = [], []
        for round_ in range(rounds):
            _write(path, spellings[round_ % 2])  # every manager's name changes
            started = time.perf_counter()
            stalls.append(await _stall(reload()))
            idle.append(await ticker_alone(time.perf_counter() - started))
        return ReloadStall(
            wall=statistics.median(stall.wall for stall in stalls),
            idle=statistics.median(stall.wall for stall in idle),
            cpu=statistics.median(stall.cpu for stall in stalls),
        )
