"""A reload parses and checks routing.yaml in a process of its own: the event loop (AMI reader, API)
runs on meanwhile, the running plan stays until the new one is ready, an oversized file is
refused unread and a check that takes too long is given up."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml

from config.routing import RoutingSource

SMALL = {
    "version": 1,
    "managers": [{"id": "m1", "name": "M 1", "extension": "101"}],
    "scenarios": [{"name": "default"}],
}


def _big_routing(managers: int) -> str:
    listed = [{"id": f"m{n}", "name": f"Manager {n}", "extension": str(1000 + n)} for n in range(managers)]
    return yaml.safe_dump({"version": 1, "managers": listed, "scenarios": [{"name": "default"}]})


async def _ticks_while(work: asyncio.Future[object] | asyncio.Task[object]) -> int:
    """How many turns the loop gave a ticker while ``work`` ran: none if the work held the loop."""
    ticks = 0
    while not work.done():
        await asyncio.sleep(0)
        ticks += 1
    return ticks


async def test_a_big_file_is_checked_off_the_loop_and_the_old_plan_runs_until_it_is_ready(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(yaml.safe_dump(SMALL))
    source = RoutingSource.load(path)
    path.write_text(_big_routing(4001))  # ~270 kB: a tenth of a second or more to parse and check

    reload = asyncio.create_task(source.reload_off_loop(max_bytes=1 << 20, time_cap=60))
    await asyncio.sleep(0)
    assert len(source.plan.managers) == 1  # still the old plan while the new one is checked
    # The loop keeps turning while the check runs elsewhere; how long its longest stall is, is a
    # figure for bench (reload_max_loop_stall_ms), not an assertion here.
    assert await _ticks_while(reload) > 1
    assert await reload == [] and len(source.plan.managers) == 4001


async def test_an_oversized_file_is_refused_unread_and_a_slow_check_is_given_up(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(yaml.safe_dump(SMALL))
    source = RoutingSource.load(path)
    with path.open("w") as out:  # 50 MB of managers, valid YAML all the way
        line = "  - {id: m, name: M, extension: '101'}\n"
        out.write("version: 1\nscenarios: [{name: default}]\nmanagers:\n" + line * (50_000_000 // len(line)))

    problems = await source.reload_off_loop(max_bytes=1 << 20, time_cap=60)
    assert [problem.message for problem in problems] == [
        f"is {path.stat().st_size} bytes, over the cap of 1048576 (routing_max_bytes)"
    ]
    assert len(source.plan.managers) == 1

    path.write_text(_big_routing(2000))
    problems = await source.reload_off_loop(max_bytes=1 << 20, time_cap=0.05)
    assert "took over 0.05 s to check" in problems[0].message and len(source.plan.managers) == 1

    path.write_text("version: 1\nmanagers: [{id: m1, name: M, extension: '101'}]\nscenarios: []\nbogus: 1\n")
    problems = await source.reload_off_loop(max_bytes=1 << 20, time_cap=60)
    assert problems and all(problem.line for problem in problems), problems  # file:line:col, as before
    assert len(source.plan.managers) == 1
