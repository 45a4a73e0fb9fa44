"""Progressive against predictive pacing on the simulator, when 30 % of clients answer.

Each run is the real daemon (SQLite, no MQTT) against the PBX simulator over TCP on a compressed
clock: a backlog of leads, each dialled once; 30 % of clients answer after 4 s and talk 60 s, the
others ring out (20 s). Managers answer in 1 s. Progressive dials one client per free manager;
predictive dials ahead by the measured answer rate, held back by the abandon rate (answered
clients who got no manager: given up after the 20 s hold limit, or hanging up while waiting).

It prints, per mode, the median over the runs of talks per manager-hour and of the abandon rate
over the measured period (after a warm-up in which predictive measures its first answer rate),
and predictive's ratio to progressive.

Run: .venv/bin/python -m bench.pacing [--runs 3] [--minutes 20] [--managers 12] [--scale 20]  (~12 min)
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml

from ami_adapter.asterisk import SHIPPED_DIALPLAN
from config.routing import RoutingSource
from config.settings import Settings, load_settings
from leadrouter.daemon import Daemon
from leadrouter.demo import simulator_settings
from leadrouter.logs import configure_logging
from pbxsim import Behaviour, ScaledClock, Simulator, World

TOKEN = "bench-token-0123456789abcdef"
ANSWER_RATE = 0.30
HOLD_LIMIT = 20.0
WARM_UP = timedelta(minutes=5)  # simulated: predictive needs a window of attempts to measure


@dataclass(frozen=True)
class Figures:
    talks_per_manager_hour: float
    abandon_rate: float
    answered: int
    dialled: int


def routing(managers: int, mode: str) -> dict[str, Any]:
    return {
        "version": 2,
        "timezone": "UTC",
        "pacing": {"mode": mode, "abandon_cap": "3%", "window": "5m", "max_ratio": 4, "min_sample": 20},
        "managers": [{"id": f"m{n}", "name": f"Manager {n}", "extension": str(101 + n)} for n in range(managers)],
        "scenarios": [
            {
                "name": "default",
                "hold_limit": f"{HOLD_LIMIT:g}s",
                "ring_timeout": "10s",
                "max_attempts": 1,
                "duplicate_window": "off",
                "sla_release": {"after": "off"},
            }
        ],
    }


def world(phones: list[str], seed: int) -> World:
    rng = random.Random(seed)
    answers = Behaviour(answer_after=4, talk=60)
    rings_out = Behaviour(answer_after=None)
    return World(
        clients={phone[1:]: answers if rng.random() < ANSWER_RATE else rings_out for phone in phones},
        default_manager=lambda _extension: Behaviour(answer_after=1),
    )


def write_files(folder: Path, mode: str, managers: int, ami_port: int) -> Settings:
    """The daemon's settings and routing file for one run, as ops would write them."""
    folder.mkdir(parents=True, exist_ok=True)
    routing_file = folder / "routing.yaml"
    routing_file.write_text(yaml.safe_dump(routing(managers, mode), sort_keys=False))
    config = simulator_settings(ami_port=ami_port, database=folder / "lr.db", mqtt_port=None, token=TOKEN)
    config["pbx"] |= {"originate_timeout": "20s", "max_channels": 200}
    settings_file = folder / "leadrouter.yaml"
    settings_file.write_text(yaml.safe_dump(config | {"routing_file": str(routing_file)}, sort_keys=False))
    return load_settings(settings_file, env={})


async def run(folder: Path, mode: str, *, managers: int, minutes: float, scale: float, seed: int) -> Figures:
    # Enough leads that the backlog never runs dry: at most 4 clients per manager per ~25 s.
    phones = [f"+7916{3000000 + index:07d}" for index in range(int(managers * minutes * 60 / 25 * 4) + 50)]
    clock = ScaledClock(scale)
    async with Simulator(clock=clock, dialplan=SHIPPED_DIALPLAN, world=world(phones, seed)) as sim:
        settings = write_files(folder, mode, managers, sim.port)
        async with Daemon(settings, RoutingSource.load(settings.routing_file), clock) as daemon:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{daemon.http_port}", headers={"Authorization": f"Bearer {TOKEN}"}
            ) as http:
                for phone in phones:
                    response = await http.post("/leads", json={"phone": phone, "source": "bench"})
                    response.raise_for_status()
            started = clock.now()
            await clock.sleep(minutes * 60)
            ended = clock.now()
    return figures(folder / "lr.db", started + WARM_UP, ended, managers)


def figures(database: Path, start: datetime, end: datetime, managers: int) -> Figures:
    """Talks begun in [start, end) per manager-hour; of the clients answered in [start, end - hold
    limit) whose calls ended, the share who never reached a manager."""
    with sqlite3.connect(database) as db:
        stamp = "%Y-%m-%d %H:%M:%S.%f"
        since, until = start.replace(tzinfo=None).strftime(stamp), end.replace(tzinfo=None).strftime(stamp)
        settled = (end - timedelta(seconds=HOLD_LIMIT + 5)).replace(tzinfo=None).strftime(stamp)
        (talks,) = db.execute(
            "SELECT count(*) FROM calls WHERE bridged_at >= ? AND bridged_at < ?", (since, until)
        ).fetchone()
        answered, abandoned = db.execute(
            "SELECT count(*), sum(disposition IN ('no_manager', 'abandoned')) FROM calls "
            "WHERE answered_at >= ? AND answered_at < ? AND ended_at IS NOT NULL",
            (since, settled),
        ).fetchone()
        (dialled,) = db.execute(
            "SELECT count(*) FROM calls WHERE started_at >= ? AND started_at < ?", (since, until)
        ).fetchone()
    hours = (end - start).total_seconds() / 3600
    return Figures(talks / (managers * hours), (abandoned or 0) / answered if answered else 0.0, answered, dialled)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=20.0, help="simulated minutes per run")
    parser.add_argument("--managers", type=int, default=12)
    parser.add_argument("--scale", type=float, default=20.0, help="simulated seconds per real second")
    args = parser.parse_args()
    configure_logging(level="warning")
    results: dict[str, list[Figures]] = {"progressive": [], "predictive": []}
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.runs):
            for mode in results:  # interleaved, so both modes see the same machine load
                found = await run(
                    Path(tmp) / f"{mode}-{index}",
                    mode,
                    managers=args.managers,
                    minutes=args.minutes,
                    scale=args.scale,
                    seed=index,
                )
                results[mode].append(found)
                print(
                    f"run {index + 1} {mode:<11} talks/manager-hour {found.talks_per_manager_hour:6.1f}  "
                    f"abandon {found.abandon_rate:6.2%}  ({found.answered} answered of {found.dialled} dialled)"
                )
    medians = {
        mode: (
            statistics.median(f.talks_per_manager_hour for f in runs),
            statistics.median(f.abandon_rate for f in runs),
        )
        for mode, runs in results.items()
    }
    print(
        f"\n{args.managers} managers, {ANSWER_RATE:.0%} answer rate, {args.minutes:g} simulated minutes a run "
        f"(first {WARM_UP.total_seconds() / 60:g} not counted), medians of {args.runs} runs:"
    )
    for mode, (talks, abandon) in medians.items():
        print(f"  {mode:<11} {talks:6.1f} talks per manager-hour, abandon rate {abandon:.2%}")
    ratio = medians["predictive"][0] / medians["progressive"][0] if medians["progressive"][0] else float("inf")
    cap = "under" if medians["predictive"][1] < 0.03 else "OVER"
    print(f"  predictive / progressive: {ratio:.2f}x; predictive's abandon rate is {cap} the 3 % cap")


if __name__ == "__main__":
    asyncio.run(main())
