"""A reload parses and checks routing.yaml in a process of its own: the event loop (AMI reader, API)
runs on meanwhile, the running plan stays until the new one is ready, an oversized file is
refused unread and a check that takes too long is given up."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import yaml

from config.problems import ConfigError
from config.routing import RoutingSource

SMALL = {
    "version": 1,
    "managers": [{"id": "m1", "name": "M 1", "extension": "101"}],
    "scenarios": [{"name": "default"}],
}


def _big_routing(managers: int) -> str:
    listed = [{"id": f"m{n}", "name": f"Manager {n}", "extension": str(1000 + n)} for n in range(managers)]
    return yaml.safe_dump({"version": 1, "managers": listed, "scenarios": [{"name": "default"}]})


async def _longest_stall(work: asyncio.Future[object] | asyncio.Task[object]) -> float:
    """The longest the loop went without running a 1 ms ticker while ``work`` ran."""
    loop = asyncio.get_running_loop()
    longest, last = 0.0, loop.time()
    while not work.done():
        await asyncio.sleep(0.001)
        now = loop.time()
        longest, last = max(longest, now - last), now
    return longest


async def test_a_big_file_is_checked_off_the_loop_and_the_old_plan_runs_until_it_is_ready(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(yaml.safe_dump(SMALL))
    source = RoutingSource.load(path)
    path.write_text(_big_routing(4000))  # ~270 kB: seconds of pure-Python YAML on this machine

    started = time.perf_counter()
    assert source.reload() == []  # on the loop, as before: the loop is blocked for all of it
    on_loop = time.perf_counter() - started
    path.write_text(_big_routing(4001))

    reload = asyncio.create_task(source.reload_off_loop(max_bytes=1 << 20, time_cap=60))
    await asyncio.sleep(0)
    assert len(source.plan.managers) == 4000  # still the old plan while the new one is checked
    stall = await _longest_stall(reload)
    assert await reload == [] and len(source.plan.managers) == 4001
    print(
        f"{path.stat().st_size} bytes: {on_loop * 1000:.0f} ms on the loop, longest stall off it {stall * 1000:.1f} ms"
    )
    assert stall < on_loop / 5, (stall, on_loop)


async def test_an_oversized_file_is_refused_unread_and_a_slow_check_is_given_up(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(yaml.safe_dump(SMALL))
    source = RoutingSource.load(path)
    with path.open("w") as out:  # 50 MB of managers, valid YAML all the way
        line = "  - {id: m, name: M, extension: '101'}\n"
        out.write("version: 1\nscenarios: [{name: default}]\nmanagers:\n" + line * (50_000_000 // len(line)))

    started = time.perf_counter()
    problems = await source.reload_off_loop(max_bytes=1 << 20, time_cap=60)
    refused_in = time.perf_counter() - started
    assert [problem.message for problem in problems] == [
        f"is {path.stat().st_size} bytes, over the cap of 1048576 (routing_max_bytes)"
    ]
    assert refused_in < 0.5 and len(source.plan.managers) == 1

    path.write_text(_big_routing(2000))
    problems = await source.reload_off_loop(max_bytes=1 << 20, time_cap=0.05)
    assert "took over 0.05 s to check" in problems[0].message and len(source.plan.managers) == 1

    path.write_text("version: 1\nmanagers: [{id: m1, name: M, extension: '101'}]\nscenarios: []\nbogus: 1\n")
    problems = await source.reload_off_loop(max_bytes=1 << 20, time_cap=60)
    assert problems and all(problem.line for problem in problems), problems  # file:line:col, as before
    assert len(source.plan.managers) == 1


def test_a_load_beside_reads_the_file_in_a_copy_of_the_process_as_load_does(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(_big_routing(1200))
    loading = RoutingSource.load_beside(path)
    assert loading().plan == RoutingSource.load(path).plan

    path.write_text("version: 1\nmanagers: [{id: m1, name: M, extension: '10x'}]\nscenarios: [{name: default}]\n")
    loading = RoutingSource.load_beside(path)
    with pytest.raises(ConfigError) as caught:
        loading()
    assert [str(problem) for problem in caught.value.problems] == [
        f"{path}:2:41: managers[0].extension: may contain only digits (found 'x')"
    ]
