"""Fairness on the simulator: how strategies share leads, through ``leadrouter demo --routing
--report-json`` (the daemon, the PBX simulator over TCP, SQLite), the way ops would try a file.

Three runs, each with clients that answer at once and talk a few seconds, posted slower than the
managers take them, so that every manager is free at each pick and only the strategy decides:

- round_robin, 600 leads over 6 equal managers: each should own 100 +- 2;
- weighted, weights 10:20:30 over 3 managers: shares within 3 points of 1/6, 2/6, 3/6;
- closing_rate, 2 managers whose leads the demo CRM reports won at 10 % and 40 %: clearly more
  to the second, and the first keeps at least the fairness floor (50 % of a fair share).

It prints the figures and whether each bar holds; ``tests/integration/test_fairness.py`` runs a
shorter version of the same in ``make test``.

Run: .venv/bin/python -m bench.routing_fairness [--leads 600] [--scale 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import yaml

from leadrouter.demo import RoutingTrial, run_demo
from leadrouter.logs import configure_logging


def routing(strategy: str, weights: list[int]) -> dict[str, Any]:
    return {
        "version": 2,
        "timezone": "Europe/Moscow",
        "managers": [
            {"id": f"m{number}", "name": f"Manager {number}", "extension": str(100 + number), "weight": weight}
            for number, weight in enumerate(weights, start=1)
        ],
        "scenarios": [{"name": "default", "strategy": strategy, "retry_delays": ["10s"]}],
    }


async def trial(
    folder: Path, strategy: str, weights: list[int], *, leads: int, scale: float, wins: dict[str, float] | None = None
) -> dict[str, Any]:
    """One demo run of ``leads`` leads; the report it wrote."""
    file, report = folder / f"{strategy}.yaml", folder / f"{strategy}.json"
    file.write_text(yaml.safe_dump(routing(strategy, weights)))
    # One lead per ~6 simulated seconds: a call (ring 1 s, manager 0.5-1.5 s, talk 3-5 s) ends first.
    rate = scale / 6
    await run_demo(
        leads=leads,
        exit_when_done=True,
        scale=scale,
        rate=rate,
        workdir=folder / strategy,
        seed=11,
        trial=RoutingTrial(file, quick_clients=True, win_rates=wins or {}),
        report_json=report,
    )
    result: dict[str, Any] = json.loads(report.read_text())
    return result


def owned(report: dict[str, Any]) -> dict[str, int]:
    return {manager: figures["leads_owned"] for manager, figures in sorted(report["managers"].items())}


def shares(report: dict[str, Any]) -> dict[str, float]:
    counts = owned(report)
    total = sum(counts.values()) or 1
    return {manager: count / total for manager, count in counts.items()}


async def main(leads: int, scale: float) -> int:
    failures = 0
    with tempfile.TemporaryDirectory(prefix="lr-fairness-") as tmp:
        folder = Path(tmp)

        report = await trial(folder, "round_robin", [50] * 6, leads=leads, scale=scale)
        counts, fair = owned(report), leads / 6
        ok = all(abs(count - fair) <= 2 for count in counts.values()) and sum(counts.values()) == leads
        failures += not ok
        print(f"round_robin   {leads} leads, 6 managers: {counts}  (bar {fair:g} +- 2: {'ok' if ok else 'MISSED'})")

        report = await trial(folder, "weighted", [10, 20, 30], leads=leads, scale=scale)
        got, want = shares(report), {"m1": 1 / 6, "m2": 2 / 6, "m3": 3 / 6}
        ok = all(abs(got[manager] - want[manager]) <= 0.03 for manager in want)
        failures += not ok
        shown = ", ".join(f"{manager} {share:.1%} (want {want[manager]:.1%})" for manager, share in got.items())
        print(f"weighted      {leads} leads, 1:2:3: {shown}  (bar +-3 points: {'ok' if ok else 'MISSED'})")

        report = await trial(folder, "closing_rate", [50, 50], leads=leads, scale=scale, wins={"m1": 0.10, "m2": 0.40})
        got = shares(report)
        floor = 0.5 * 0.5  # fairness_floor (default 50 %) of a fair share of two
        ok = got["m2"] >= 1.5 * got["m1"] and got["m1"] >= floor - 0.03
        failures += not ok
        print(
            f"closing_rate  {leads} leads, won 10 % vs 40 %: m1 {got['m1']:.1%}, m2 {got['m2']:.1%}  "
            f"(bar: m2 clearly more, m1 >= floor {floor:.0%}: {'ok' if ok else 'MISSED'})"
        )
    return failures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=600)
    parser.add_argument("--scale", type=float, default=50.0)
    args = parser.parse_args()
    configure_logging("error")  # the demo's progress lines stay; the daemon's log would drown the figures
    raise SystemExit(asyncio.run(main(args.leads, args.scale)))
