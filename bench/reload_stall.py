"""How long a routing reload stalls the event loop: the longest gap a 1 ms ticker sees.

Four runs on the same loop: the ticker alone for 2 s (what this machine's scheduling costs
anyway), a 50 MB file (refused by the size cap before it is read), a file just under the 1 MB
cap (~19,000 managers) checked in the reload process, and the same file loaded on the loop as
reloads were before (``RoutingSource.reload``).

Bar (DESIGN.md): a config reload stalls the loop <= 20 ms.

Run: .venv/bin/python -m bench.reload_stall
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import yaml

from config.routing import RoutingSource

CAP = 1 << 20


def _routing(managers: int) -> str:
    listed = [{"id": f"m{n}", "name": f"Manager {n}", "extension": str(1000 + n)} for n in range(managers)]
    return yaml.safe_dump({"version": 1, "managers": listed, "scenarios": [{"name": "default"}]})


async def _stall(work: Awaitable[Any]) -> tuple[float, float, Any]:
    """(longest gap, total seconds, result) while ``work`` runs beside a 1 ms ticker; prints the most
    CPU time the loop spent in one gap too (the rest of a gap is the machine's scheduling)."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    started = last = loop.time()
    last_cpu = time.thread_time()
    longest = longest_cpu = 0.0
    while not task.done():
        await asyncio.sleep(0.001)
        now, cpu = loop.time(), time.thread_time()
        longest, last = max(longest, now - last), now
        longest_cpu, last_cpu = max(longest_cpu, cpu - last_cpu), cpu
    print(f"  (the loop's most CPU in one gap: {longest_cpu * 1000:.1f} ms)")
    return longest, loop.time() - started, task.result()


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "routing.yaml"
        path.write_text(_routing(1))
        source = RoutingSource.load(path)

        longest, total, _ = await _stall(asyncio.sleep(2))
        print(f"ticker alone:             longest stall {longest * 1000:6.1f} ms over {total:.1f} s")

        line = "  - {id: m, name: M, extension: '101'}\n"
        path.write_text("version: 1\nscenarios: [{name: default}]\nmanagers:\n" + line * (50_000_000 // len(line)))
        longest, total, problems = await _stall(source.reload_off_loop(max_bytes=CAP, time_cap=60))
        print(f"50 MB file:               longest stall {longest * 1000:6.1f} ms, refused in {total * 1000:.1f} ms")
        assert problems

        managers = 19_000
        path.write_text(_routing(managers))
        size = path.stat().st_size
        longest, total, problems = await _stall(source.reload_off_loop(max_bytes=CAP, time_cap=60))
        assert problems == [] and len(source.plan.managers) == managers, problems
        print(f"{size / 1e6:.2f} MB, {managers} managers: longest stall {longest * 1000:6.1f} ms, in {total:.1f} s")

        started = time.perf_counter()
        source.reload()
        print(f"same file on the loop:    the loop blocked {(time.perf_counter() - started) * 1000:.0f} ms")


if __name__ == "__main__":
    asyncio.run(main())
