"""The demo: the real daemon against the PBX simulator, SQLite and MQTT, on a fast clock.

It writes its own leadrouter.yaml and routing.yaml into the work directory and loads them
through the same code as production, starts the simulator with a realistic mix of clients
and managers, posts leads over HTTP like a CRM would, prints progress, and ends with what a
supervisor would ask: who talked, how long, and what happened to every lead.

With ``--routing FILE`` ops try their own routing.yaml: its managers become the simulator's,
and ``--report-json`` writes the result for a script to check (how a strategy shared the leads).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import yaml

from ami_adapter.asterisk import SHIPPED_DIALPLAN
from config.routing import RoutingSource, load_routing
from config.settings import load_settings
from leadrouter.broker import private_mosquitto, reachable
from leadrouter.cli import print_manager_table
from leadrouter.daemon import Daemon
from pbxsim import Behaviour, ScaledClock, Simulator, World
from router.routing import RoutingPlan

TOKEN = "demo-token-0123456789"
SOURCES = ("site-form", "landing-credit", "yandex-direct", "vk-ads")
MANAGERS = [
    ("anna", "Anna Petrova"),
    ("boris", "Boris Ivanov"),
    ("vera", "Vera Smirnova"),
    ("gleb", "Gleb Kuznetsov"),
    ("dina", "Dina Popova"),
    ("egor", "Egor Sokolov"),
    ("zoya", "Zoya Lebedeva"),
    ("ilya", "Ilya Kozlov"),
    ("kira", "Kira Novikova"),
    ("lev", "Lev Morozov"),
]
FIRST_NAMES = ("Иван", "Ольга", "Пётр", "Мария", "Алексей", "Наталья", "Сергей", "Елена", "Дмитрий", "Анна")


def demo_world(rng: random.Random, numbers: list[str]) -> World:
    """Clients and managers as a sales floor sees them; every behaviour fixed by the seed."""
    managers = {f"{101 + index}": Behaviour(answer_after=rng.uniform(1.5, 5)) for index in range(len(MANAGERS))}
    managers["110"] = Behaviour(answer_after=None)  # Lev is away from his desk: leads move on
    return World(clients=_mixed_clients(rng, numbers), managers=managers)


def routing_world(rng: random.Random, numbers: list[str], plan: RoutingPlan, *, quick: bool) -> World:
    """The managers of an ops' routing file, all at their desks; clients mixed, or all quick to
    answer and brief, so that only the strategy decides who gets whom (fairness runs)."""
    managers = {manager.extension: Behaviour(answer_after=rng.uniform(0.5, 1.5)) for manager in plan.managers}
    if not quick:
        return World(clients=_mixed_clients(rng, numbers), managers=managers)
    clients = {e164.removeprefix("+"): Behaviour(answer_after=1, talk=rng.uniform(3, 5)) for e164 in numbers}
    return World(clients=clients, managers=managers)


def _mixed_clients(rng: random.Random, numbers: list[str]) -> dict[str, Behaviour]:
    clients: dict[str, Behaviour] = {}
    for number in (e164.removeprefix("+") for e164 in numbers):  # the PBX dials digits
        roll = rng.random()
        if roll < 0.62:  # answers and talks
            clients[number] = Behaviour(answer_after=rng.uniform(2, 9), talk=rng.uniform(40, 300))
        elif roll < 0.74:
            clients[number] = Behaviour(busy=True)
        elif roll < 0.85:
            clients[number] = Behaviour(answer_after=None)  # never picks up
        elif roll < 0.95:  # picks up, then gives up on hold or after a few words
            clients[number] = Behaviour(answer_after=rng.uniform(2, 6), talk=rng.uniform(4, 25))
        else:
            clients[number] = Behaviour(unavailable=True)
    return clients


def simulator_settings(
    *, ami_port: int, database: Path, mqtt_port: int | None, token: str, mqtt_client_id: str = "leadrouter-demo"
) -> dict[str, Any]:
    """leadrouter.yaml for a daemon pointed at the PBX simulator: the demo's, and the integration tests'."""
    return {
        # The simulator's own AMI account (the one the recorded transcripts were captured with).
        "ami": {"port": ami_port, "secret": "s3cret", "ping_interval": 2, "ping_timeout": 2},
        "pbx": {
            # The simulator answers these like the contexts of the transcripts' test dialplan.
            "client_channel": "Local/{phone}@sim-clients",
            "manager_channel": "Local/{extension}@sim-managers",
            "manager_device": "Local/{extension}@sim-managers",
            "originate_timeout": "25s",
            # The demo and tests compress time 30-50x: a loaded machine reading an event 100 ms
            # late is seconds of simulated time, and the simulator shares our clock anyway.
            "stamp_window": "120s",
        },
        "database": {"url": f"sqlite+aiosqlite:///{database.resolve()}"},
        "mqtt": {"enabled": mqtt_port is not None, "port": mqtt_port or 1883, "client_id": mqtt_client_id},
        "http": {"port": 0, "token": token},
        # The simulator writes its recordings here (next to the database), as MixMonitor would
        # into the PBX's monitor folder: the dashboard's player plays them.
        "recordings": {
            "url_template": "https://pbx.example.com/recordings/{file}",
            "directory": str(monitor_folder(database.parent)),
        },
    }


def monitor_folder(workdir: Path) -> Path:
    return (workdir / "monitor").resolve()


def write_config(
    workdir: Path, ami_port: int, mqtt_port: int | None, run_id: str, routing_file: Path | None = None
) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    routing: dict[str, Any] = {
        "version": 1,
        "managers": [
            {"id": manager_id, "name": name, "extension": str(101 + index)}
            for index, (manager_id, name) in enumerate(MANAGERS)
        ],
        "scenarios": [
            {
                "name": "ads",
                "sources": ["yandex-direct", "vk-ads"],
                "hold_limit": "40s",
                "ring_timeout": "15s",
                "max_attempts": 3,
                "retry_delays": ["2m", "5m"],
            },
            {"name": "default", "hold_limit": "60s", "ring_timeout": "15s", "max_attempts": 3, "retry_delays": ["3m"]},
        ],
    }
    # The broker may be the machine's shared one: a client id of its own, or two demos would
    # take the broker connection from each other.
    settings = simulator_settings(
        ami_port=ami_port,
        database=workdir / "leadrouter.db",
        mqtt_port=mqtt_port,
        token=TOKEN,
        mqtt_client_id=f"leadrouter-demo-{run_id}",
    ) | {"routing_file": "routing.yaml", "log": {"level": "warning"}}
    if routing_file is None:
        (workdir / "routing.yaml").write_text(yaml.safe_dump(routing, allow_unicode=True, sort_keys=False))
    else:
        settings["routing_file"] = str(routing_file.resolve())
    path = workdir / "leadrouter.yaml"
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    for stale in workdir.glob("leadrouter.db*"):
        stale.unlink()
    return path


@contextlib.contextmanager
def broker() -> Iterator[int | None]:
    """The local broker on 1883 if there is one, else a private mosquitto, else none."""
    if reachable("127.0.0.1", 1883):
        yield 1883
        return
    with contextlib.ExitStack() as stack:
        try:
            port: int | None = stack.enter_context(private_mosquitto())
        except FileNotFoundError as exc:
            print(f"MQTT off: {exc}; events stay in the outbox table")
            port = None
        yield port


class CrmListener:
    """A CRM's view of the daemon: every event that arrives on MQTT, in arrival order.

    With a persistent session the broker queues events for it while it is away, as for a
    CRM that must not miss any; the demo's listener is transient, so no run inherits another's.
    """

    def __init__(self, identifier: str, *, persistent_session: bool = False, topics: str = "leadrouter/#") -> None:
        self.identifier = identifier
        self.persistent_session = persistent_session
        self.topics_filter = topics
        self.received: list[dict[str, Any]] = []
        self.topics: list[str] = []
        self.subscribed = asyncio.Event()

    async def run(self, port: int) -> None:
        async with aiomqtt.Client(
            "127.0.0.1", port, identifier=self.identifier, clean_session=not self.persistent_session
        ) as client:
            await client.subscribe(self.topics_filter, qos=1)
            self.subscribed.set()
            async for message in client.messages:
                self.topics.append(str(message.topic))
                self.received.append(json.loads(bytes(message.payload)))


@dataclass(frozen=True)
class RoutingTrial:
    """``demo --routing``: an ops' routing file tried on the simulator."""

    file: Path
    quick_clients: bool = False  # every client answers at once and talks briefly
    win_rates: dict[str, float] = field(default_factory=dict)  # the CRM reports won at these rates, by owner


async def run_demo(
    *,
    leads: int,
    exit_when_done: bool,
    scale: float,
    rate: float,
    workdir: Path,
    seed: int,
    trial: RoutingTrial | None = None,
    report_json: Path | None = None,
) -> int:
    rng = random.Random(seed)
    run_id = uuid.uuid4().hex[:8]
    numbers = [f"+7916{rng.randrange(10**7):07d}" for _ in range(leads)]
    clock = ScaledClock(scale)
    since = clock.now()
    if trial is None:
        world = demo_world(rng, numbers)
    else:
        world = routing_world(rng, numbers, load_routing(trial.file), quick=trial.quick_clients)
    with broker() as mqtt_port:
        async with Simulator(
            clock=clock,
            dialplan=SHIPPED_DIALPLAN,
            world=world,
            timestamp_events=True,
            # Fairness runs (--quick-clients) measure routing: nobody listens, no files to write.
            recordings=None if trial is not None and trial.quick_clients else monitor_folder(workdir),
        ) as sim:
            routing_file = None if trial is None else trial.file
            settings = load_settings(write_config(workdir, sim.port, mqtt_port, run_id, routing_file), env={})
            routing = RoutingSource.load(settings.routing_file, settings.pbx_names)
            daemon_rng = random.Random(seed)  # the strategies' draws: the same seed, the same run
            async with (
                Daemon(settings, routing, clock, rng=daemon_rng) as daemon,
                contextlib.AsyncExitStack() as stack,
            ):
                crm = CrmListener(f"leadrouter-demo-crm-{run_id}")
                if mqtt_port is not None:
                    stack.callback(asyncio.create_task(crm.run(mqtt_port)).cancel)
                    await asyncio.wait_for(crm.subscribed.wait(), 5)
                base = f"http://127.0.0.1:{daemon.http_port}"
                print(f"leadrouter demo: {leads} leads, {len(routing.plan.managers)} managers, clock x{scale:g}")
                print(f"  simulator 127.0.0.1:{sim.port} | API {base} (token {TOKEN}) | MQTT port {mqtt_port}")
                print(f"  config and database in {workdir}/")
                print(f"  dashboard (logged in): {base}/dashboard/#token={TOKEN}")
                posted: asyncio.Queue[int] = asyncio.Queue()
                poster = asyncio.create_task(_post_leads(base, numbers, rng, rate, posted))
                if trial is not None and trial.win_rates:
                    reports = _report_outcomes(base, posted, trial.win_rates, random.Random(seed))
                    stack.callback(asyncio.create_task(reports).cancel)
                await _progress(daemon, poster, leads)
                await _summary(daemon, crm, clock, since)
                if report_json is not None:
                    report = await routing_report(daemon, clock, since)
                    text = json.dumps(report, indent=2, sort_keys=True) + "\n"
                    await asyncio.to_thread(report_json.write_text, text)
                    print(f"\nReport: {report_json}")
                if exit_when_done:
                    return 0
                print(f"\nStill running: try  curl -H 'Authorization: Bearer {TOKEN}' {base}/stats/managers")
                print("Ctrl-C to stop.")
                await asyncio.Event().wait()
    return 0


async def _progress(daemon: Daemon, poster: asyncio.Task[None], leads: int) -> None:
    """Print a line a second until every lead is settled (assigned, failed or scheduled)."""
    started = time.monotonic()
    while True:
        await asyncio.sleep(1.0)
        live = daemon.dialer.live_calls
        counts = await daemon.queries.lead_status_counts()
        settled = counts.get("assigned", 0) + counts.get("failed", 0) + counts.get("scheduled", 0)
        print(
            f"[{time.monotonic() - started:5.1f}s] "
            + " ".join(
                f"{status} {counts.get(status, 0)}" for status in ("new", "dialing", "assigned", "scheduled", "failed")
            )
            + f" | live calls {live} | managers free {daemon.board.free_count}/"
            f"{len(daemon.board)} | MQTT sent {daemon.publisher.published if daemon.publisher else 0}"
        )
        if poster.done():
            poster.result()  # a refused lead is a demo bug: say so
            # Live calls are read on both sides of the count: a retry starting meanwhile shows in one.
            if settled == leads and live == 0 and daemon.dialer.live_calls == 0:
                return


async def _post_leads(
    base: str, numbers: list[str], rng: random.Random, rate: float, posted: asyncio.Queue[int]
) -> None:
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        for index, number in enumerate(numbers):
            response = await http.post(
                "/leads",
                json={
                    "phone": number,
                    "name": rng.choice(FIRST_NAMES),
                    "source": rng.choice(SOURCES),
                    "external_id": f"demo-{index + 1}",
                    "payload": {"form": "callback", "utm_campaign": f"demo-{index % 7}"},
                },
            )
            response.raise_for_status()
            posted.put_nowait(response.json()["id"])
            await asyncio.sleep(1 / rate)


async def _report_outcomes(
    base: str, posted: asyncio.Queue[int], win_rates: dict[str, float], rng: random.Random
) -> None:
    """The CRM's side: each lead, once its owner has it, is reported won at the owner's rate, else lost."""
    waiting: list[int] = []
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        while True:
            while not posted.empty():
                waiting.append(posted.get_nowait())
            still = []
            for lead_id in waiting:
                lead = (await http.get(f"/leads/{lead_id}")).json()
                if lead["status"] == "failed":
                    continue
                if lead["status"] != "assigned":
                    still.append(lead_id)
                    continue
                won = rng.random() < win_rates.get(lead["owner_id"], 0.0)
                outcome = {"outcome": "won" if won else "lost", "author": "demo-crm"}
                (await http.patch(f"/leads/{lead_id}", json=outcome)).raise_for_status()
            waiting = still
            await asyncio.sleep(0.1)


async def routing_report(daemon: Daemon, clock: ScaledClock, since: datetime) -> dict[str, Any]:
    """What ``--report-json`` writes: leads by final status, per manager and per scenario."""
    owned = await daemon.queries.leads_per_owner()
    talked = await daemon.stats.between(since, clock.now() + timedelta(seconds=1))
    matched = await daemon.queries.leads_per_scenario()
    return {
        "leads": await daemon.queries.lead_status_counts(),
        "managers": {
            manager.manager_id: {
                "calls": manager.calls,
                "talk_seconds": manager.talk_seconds,
                "leads_owned": owned.get(manager.manager_id, 0),
            }
            for manager in talked
        },
        "scenarios": {
            scenario.name: {"leads_matched": matched.get(scenario.name, 0)}
            for scenario in daemon.routing.plan.scenarios
        },
    }


async def _summary(daemon: Daemon, crm: CrmListener, clock: ScaledClock, since: datetime) -> None:
    counts = await daemon.queries.lead_status_counts()
    # The demo's clock races through hours; count the whole run rather than a calendar day.
    managers = await daemon.stats.between(since, clock.now() + timedelta(seconds=1))
    print("\nLeads:", ", ".join(f"{status} {count}" for status, count in sorted(counts.items())))
    print(f"Bridged calls: {sum(manager.calls for manager in managers)}; every assigned lead has its manager as owner.")
    print()
    print_manager_table(managers)
    if crm.subscribed.is_set():
        ours = await _delivered(daemon, crm)
        by_type = Counter(event["type"] for event in ours.values())
        print("\nMQTT events received:", ", ".join(f"{kind} {count}" for kind, count in sorted(by_type.items())))


async def _delivered(daemon: Daemon, crm: CrmListener, limit: float = 10.0) -> dict[str, dict[str, Any]]:
    """Our events the CRM received, each once (QoS 1 may deliver twice), once the outbox is drained
    and every event the broker acknowledged has reached the CRM, or ``limit`` real seconds have passed.

    The broker may be shared: events another publisher sends under the same topics are not counted.
    """
    deadline = time.monotonic() + limit
    while True:
        backlog, _ = await daemon.queries.outbox_backlog()
        published = await daemon.queries.published_ids()
        received = {event["id"]: event for event in crm.received if event["id"] in published}
        if (backlog == 0 and len(received) == len(published)) or time.monotonic() >= deadline:
            return received
        await asyncio.sleep(0.05)
