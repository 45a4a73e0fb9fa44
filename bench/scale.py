"""python -m bench.scale --daemons 3 --pbxes 2 --leads N [--every-pbx] [--kill-one] [--json]

Several daemon processes (``leadrouter run``) on one PostgreSQL, each logged in to one of several
simulated PBXes (daemon i to PBX i mod P: an office of its own, with its own managers), leads
posted round-robin to their APIs as a load balancer would. With ``--every-pbx`` each daemon speaks
to every PBX (leadrouter.yaml's ``pbxes:``, routing.yaml's managers each on their office's PBX,
one scenario whose pool spans them all). With ``--kill-one`` a daemon that shares its PBX with
another is ``kill -9``ed while leads arrive and stays dead: the survivor takes its calls over and,
if it held it, the outbox publisher.

Judged from independent witnesses, as the chaos harness (bench/chaos) does:
  dialled_twice            leads with two client legs up at once, on any PBX (the PBXes' records)
  managers_double_booked   managers whose phone had two calls at once (the PBXes' records)
  unsettled                leads posted 2xx that are not assigned or failed at the end, or calls left open
  share_max_min_ratio      most over fewest calls put through per manager (all managers had some)
  takeover_s               seconds from the kill until no call of the dead daemon is left unsteered

The PostgreSQL is this machine's (127.0.0.1:5432, or LEADROUTER_TEST_POSTGRES) with a scratch
database dropped afterwards, or a throwaway server when none answers (leadrouter/postgres.py).
Exit status 0 when dialled_twice, managers_double_booked and unsettled are 0, else 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy import func, select

from bench.chaos.harness import chaos_world
from bench.chaos.invariants import FINAL_STATUSES, Evidence, overlapping_attempts
from bench.chaos.parts import MANAGERS, Broker, DaemonProcess, Pbx, client_legs
from leadrouter.broker import free_port
from leadrouter.demo import simulator_settings
from leadrouter.postgres import postgres_server, scratch_database
from pbxsim import ChannelRecord, ScaledClock, World
from router.model import CallState
from storage.engine import Database
from storage.schema import calls, leads

TOKEN = "scale-token-0123456789"
POLL = 0.25
OPEN_CALLS = select(func.count()).where(calls.c.state != CallState.ENDED)


@dataclass(frozen=True)
class ScalePlan:
    daemons: int
    pbxes: int
    leads: int
    kill_one: bool = False
    every_pbx: bool = False  # each daemon speaks to every PBX, not daemon i to PBX i mod P
    # Per PBX. A lead needs ~2.6 s of a manager's line (clients who never answer, retries counted):
    # 40 per PBX take 20 leads/s with room to work off what a kill leaves behind.
    managers: int = 40
    rate: float = 20.0  # leads posted per second, over all daemons
    settle: float = 300.0  # the longest wait for every lead to finish after the last was posted
    seed: int = 1
    workdir: Path = Path("var/scale")


def _routing(offices: dict[str | None, list[str]]) -> dict[str, Any]:
    """Managers by office (None: the daemon's one PBX)."""
    return {
        "version": 1,
        "managers": [
            {"id": f"m{ext}", "name": f"Manager {ext}", "extension": ext} | ({"pbx": office} if office else {})
            for office, extensions in offices.items()
            for ext in extensions
        ],
        "scenarios": [
            {
                "name": "default",
                "hold_limit": "5s",
                "ring_timeout": "2s",
                "max_attempts": 3,
                "retry_delays": ["1s", "2s"],
            }
        ],
    }


def _write_config(
    folder: Path, *, index: int, ami_ports: dict[str | None, int], mqtt_port: int, http_port: int, database: str
) -> Path:
    """``ami_ports``: by PBX name (None: the one PBX, under ``ami:``)."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = simulator_settings(ami_port=0, database=folder / "unused.db", mqtt_port=mqtt_port, token=TOKEN)
    settings["database"] = {"url": database}
    link = settings.pop("ami") | {"ping_interval": 1, "ping_timeout": 1, "reconnect_delay": 1, "action_timeout": 2}
    if None in ami_ports:
        settings["ami"] = link | {"port": ami_ports[None]}
    else:
        settings["pbxes"] = {name: link | {"port": port} for name, port in ami_ports.items()}
    settings["pbx"] |= {"originate_timeout": "3s", "max_channels": 100}
    settings["mqtt"] |= {"client_id": f"leadrouter-scale-{index}"}
    settings["http"] |= {"port": http_port}
    settings |= {"routing_file": "routing.yaml", "log": {"level": "warning"}}
    path = folder / "leadrouter.yaml"
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    return path


def _overlaps(spans: list[tuple[datetime, datetime | None]]) -> bool:
    """Whether two of these (start, end) spans, end None while still up, overlap."""
    latest_end: datetime | None = None
    for start, end in sorted(spans, key=lambda span: span[0]):
        if latest_end is not None and start < latest_end:
            return True
        end = end or datetime.max.replace(tzinfo=UTC)
        latest_end = end if latest_end is None else max(latest_end, end)
    return False


def managers_double_booked(records: list[ChannelRecord]) -> list[str]:
    """Extensions with two channels of their phone up at once (the ;1 half of each Local channel)."""
    by_extension: dict[str, list[tuple[datetime, datetime | None]]] = defaultdict(list)
    for record in records:
        if f"@{MANAGERS}-" in record.name and record.name.endswith(";1"):
            extension = record.name.removeprefix("Local/").partition("@")[0]
            by_extension[extension].append((record.created, record.ended))
    return sorted(extension for extension, spans in by_extension.items() if _overlaps(spans))


async def _post(https: list[httpx.AsyncClient], start: int, body: dict[str, Any], deadline: float) -> int | None:
    """Post to daemon ``start``, and on to the next while one does not answer (a dead one)."""
    attempt = start
    while time.monotonic() < deadline:
        http = https[attempt % len(https)]
        with contextlib.suppress(httpx.TransportError):
            response = await http.post("/leads", json=body)
            if response.status_code in (200, 201):
                return int(response.json()["id"])
            if response.status_code < 500:
                raise RuntimeError(f"the API refused a valid lead: {response.status_code} {response.text}")
        attempt += 1
        await asyncio.sleep(0.05)
    return None


async def run_scale(plan: ScalePlan, say: Any = lambda _line: None) -> dict[str, Any]:
    rng = random.Random(plan.seed)
    numbers = [f"7916{n:07d}" for n in rng.sample(range(10**7), plan.leads)]
    offices = [[str(1000 + 100 * pbx + index) for index in range(plan.managers)] for pbx in range(plan.pbxes)]
    world = chaos_world(rng, numbers, [ext for office in offices for ext in office])
    plan.workdir.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    with postgres_server() as server:
        async with scratch_database(server, "leadrouter_scale") as url, contextlib.AsyncExitStack() as stack:
            broker = Broker(plan.workdir / "mqtt")
            (plan.workdir / "mqtt").mkdir(parents=True, exist_ok=True)
            await broker.start()
            stack.push_async_callback(broker.stop)
            pbxes = []
            for office in offices:
                pbx = Pbx(
                    ScaledClock(1.0), World(clients=world.clients, managers={e: world.managers[e] for e in office})
                )
                await pbx.start()
                stack.push_async_callback(pbx.stop)
                pbxes.append(pbx)
            db = await stack.enter_async_context(Database(url))
            await db.migrate()  # once, before the daemons race to do it
            daemons: list[DaemonProcess] = []
            https: list[httpx.AsyncClient] = []
            for index in range(plan.daemons):
                pbx_no = index % plan.pbxes
                folder = plan.workdir / f"daemon{index}"
                folder.mkdir(parents=True, exist_ok=True)
                if plan.every_pbx:
                    ami_ports: dict[str | None, int] = {f"office{no}": pbx.port for no, pbx in enumerate(pbxes)}
                    managers: dict[str | None, list[str]] = {f"office{no}": office for no, office in enumerate(offices)}
                else:
                    ami_ports, managers = {None: pbxes[pbx_no].port}, {None: offices[pbx_no]}
                (folder / "routing.yaml").write_text(yaml.safe_dump(_routing(managers), sort_keys=False))
                http_port = free_port()
                config = _write_config(
                    folder, index=index, ami_ports=ami_ports, mqtt_port=broker.port, http_port=http_port,
                    database=url,
                )  # fmt: skip
                http = await stack.enter_async_context(
                    httpx.AsyncClient(
                        base_url=f"http://127.0.0.1:{http_port}",
                        headers={"Authorization": f"Bearer {TOKEN}"},
                        timeout=5.0,
                    )
                )
                (folder / "daemon.log").unlink(missing_ok=True)
                daemon = DaemonProcess(config, folder / "daemon.log", http)
                stack.push_async_callback(daemon.stop)
                await daemon.start()
                daemons.append(daemon)
                https.append(http)
            each = "every daemon on every PBX" if plan.every_pbx else "daemon i on PBX i mod P"
            say(f"{plan.daemons} daemons, {plan.pbxes} PBXes ({each}), {plan.managers} managers per PBX")
            # The victim shares its PBX with a survivor, who can read what became of its calls.
            step = 1 if plan.every_pbx else plan.pbxes
            shares_a_pbx = [i for i in range(plan.daemons) if i + step < plan.daemons]
            victim = shares_a_pbx[0] if plan.kill_one and shares_a_pbx else None
            posted: dict[str, int] = {}
            not_accepted = 0
            killed_at: float | None = None
            victim_pid: int | None = None
            orphaned = 0  # the victim's calls not ended when it died
            takeover_s: float | None = None  # from the kill until none of them is left to the victim

            async def steered_by_victim() -> int:
                query = select(func.count()).where(
                    calls.c.state != CallState.ENDED, calls.c.daemon_id.like(f"%-{victim_pid}-%")
                )
                async with db.read() as conn:
                    return int((await conn.execute(query)).scalar_one())

            started = time.monotonic()
            deadline = started + plan.leads / plan.rate + 60
            kill_at = started + 0.4 * plan.leads / plan.rate

            async def post_one(index: int, number: str) -> None:
                nonlocal not_accepted
                body = {"phone": f"+{number}", "name": "Scale", "source": "scale", "external_id": f"scale-{index}"}
                lead_id = await _post(https, index, body, deadline)
                if lead_id is None:
                    not_accepted += 1
                else:
                    posted[number] = lead_id

            async def post_all() -> None:
                # Each lead at its moment, whatever the answers to the earlier ones: webhooks do not wait in line.
                async with asyncio.TaskGroup() as posting:
                    for index, number in enumerate(numbers):
                        await asyncio.sleep(max(started + index / plan.rate - time.monotonic(), 0))
                        posting.create_task(post_one(index, number))

            async def kill() -> None:
                nonlocal killed_at, victim_pid, orphaned, takeover_s
                if victim is None:
                    return
                await asyncio.sleep(max(kill_at - time.monotonic(), 0))
                victim_pid = daemons[victim].pid
                await daemons[victim].kill9()
                killed_at = time.monotonic()
                orphaned = await steered_by_victim()
                say(f"kill -9 of daemon {victim} (pid {victim_pid}): {orphaned} calls left unsteered")
                # The database is the witness here: polled, bounded (no takeover at all leaves takeover_s None).
                left = orphaned
                while left and time.monotonic() < killed_at + plan.settle:
                    await asyncio.sleep(0.05)
                    left = await steered_by_victim()
                if not left:
                    takeover_s = round(time.monotonic() - killed_at, 2)
                    say(f"its calls taken over after {takeover_s} s")

            async with asyncio.TaskGroup() as group:
                group.create_task(post_all())
                group.create_task(kill())
            say("every lead posted; waiting for them to finish")

            settle_deadline = time.monotonic() + plan.settle
            settled = False
            while time.monotonic() < settle_deadline:
                async with db.read() as conn:
                    statuses = dict((await conn.execute(select(leads.c.id, leads.c.status))).all())
                    open_calls = (await conn.execute(OPEN_CALLS)).scalar_one()
                if all(str(statuses.get(lead_id)) in FINAL_STATUSES for lead_id in posted.values()) and not open_calls:
                    settled = True
                    break
                await asyncio.sleep(POLL)
            async with db.read() as conn:
                statuses = dict((await conn.execute(select(leads.c.id, leads.c.status))).all())
                bridged = Counter(
                    manager
                    for (manager,) in await conn.execute(
                        select(calls.c.manager_id).where(calls.c.bridged_at.is_not(None))
                    )
                )
                open_calls = (await conn.execute(OPEN_CALLS)).scalar_one()
                by_daemon = (
                    await conn.execute(select(calls.c.daemon_id, func.count()).group_by(calls.c.daemon_id))
                ).all()
                per_daemon = sorted(count for _, count in by_daemon)
                # By the AMI host:port the steering id starts with (storage.cluster): the PBX the call was on.
                office_of = {f"127.0.0.1:{pbx.port}": f"office{no}" for no, pbx in enumerate(pbxes)}
                per_pbx: Counter[str] = Counter()
                for daemon_id, count in by_daemon:
                    per_pbx[office_of.get(str(daemon_id).partition("#")[0], "unknown")] += count
            histories = [pbx.history() for pbx in pbxes]
    legs = [leg for history in histories for leg in client_legs(history, posted)]
    twice = overlapping_attempts(
        Evidence(
            posted=set(posted.values()), not_accepted=not_accepted, leads=[], calls=[], legs=legs, originated=set(),
            outbox=[], deliveries=[], fault_marks=[], managers=[],
        )
    )  # fmt: skip
    double_booked = [ext for history in histories for ext in managers_double_booked(history)]
    # What rang each of them, to read the overlap from.
    booked_channels = {
        ext: [
            (record.name, record.created.isoformat(), record.ended.isoformat() if record.ended else None)
            for history in histories
            for record in history
            if record.name.startswith(f"Local/{ext}@{MANAGERS}-") and record.name.endswith(";1")
        ]
        for ext in double_booked
    }
    unsettled = sum(str(statuses.get(lead_id)) not in FINAL_STATUSES for lead_id in posted.values()) + int(open_calls)
    shares = [bridged.get(f"m{ext}", 0) for office in offices for ext in office]
    ratio = round(max(shares) / min(shares), 2) if min(shares) > 0 else None
    return {
        "leads": plan.leads,
        "accepted": len(posted),
        "not_accepted": not_accepted,
        "dialled_twice": twice.value,
        "managers_double_booked": len(double_booked),
        "unsettled": unsettled,
        "share_max_min_ratio": ratio,
        "put_through_per_manager": {
            "min": min(shares),
            "median": sorted(shares)[len(shares) // 2],
            "max": max(shares),
        },
        "takeover_s": takeover_s,
        "calls_orphaned_by_the_kill": orphaned,
        "calls_per_daemon_run": per_daemon,  # per daemon and PBX with --every-pbx (an id each)
        "calls_per_pbx": dict(sorted(per_pbx.items())),
        "killed": victim,
        "daemons": plan.daemons,
        "pbxes": plan.pbxes,
        "every_pbx": plan.every_pbx,
        "managers": plan.managers * plan.pbxes,
        "settled": settled,
        "seconds": round(time.monotonic() - began, 1),
        "evidence": {
            "dialled_twice": twice.evidence,
            "managers_double_booked": booked_channels,
            "unsettled_by_status": dict(
                Counter(str(statuses.get(i)) for i in posted.values() if str(statuses.get(i)) not in FINAL_STATUSES)
            ),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--daemons", type=int, default=3)
    parser.add_argument("--pbxes", type=int, default=2)
    parser.add_argument("--leads", type=int, required=True)
    parser.add_argument("--kill-one", action="store_true", help="kill -9 one daemon mid-run, for good")
    parser.add_argument("--every-pbx", action="store_true", help="each daemon speaks to every PBX (pbxes:)")
    parser.add_argument("--managers", type=int, default=40, help="per PBX")
    parser.add_argument("--rate", type=float, default=20.0, help="leads posted per second")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path("var/scale"))
    parser.add_argument("--json", action="store_true", help="print one JSON object, nothing else")
    args = parser.parse_args(argv)
    if args.daemons < 1 or args.pbxes < 1 or args.daemons < args.pbxes:
        parser.error("--daemons must be at least --pbxes (every PBX needs a daemon)")
    plan = ScalePlan(
        daemons=args.daemons, pbxes=args.pbxes, leads=args.leads, kill_one=args.kill_one, every_pbx=args.every_pbx,
        managers=args.managers, rate=args.rate, seed=args.seed, workdir=args.workdir,
    )  # fmt: skip
    say = (lambda _line: None) if args.json else (lambda line: print(line, file=sys.stderr))
    result = asyncio.run(run_scale(plan, say))
    print(json.dumps(result, indent=None if args.json else 1, default=str))
    broken = result["dialled_twice"] or result["managers_double_booked"] or result["unsettled"]
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
