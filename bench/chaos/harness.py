"""One chaos run: the real daemon process against the PBX simulator and a private mosquitto, under faults.

The daemon runs as ``leadrouter run --config FILE`` in a subprocess, on the wall clock, so
``kill -9`` is real; the simulator (restartable on one port), the MQTT subscriber and the
lead poster run here. Behaviours and timeouts are short (clients answer within a second,
managers talk a second or two) so thousands of leads take minutes. Faults follow a schedule
drawn from the seed; every wait is bounded, so a run ends by itself whatever the daemon does.
Only 127.0.0.1 is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import yaml
from sqlalchemy import select

from bench.chaos.invariants import (
    FINAL_STATUSES,
    CallRow,
    Delivery,
    Evidence,
    Finding,
    LeadRow,
    OutboxRow,
    audit,
    witnessed,
)
from bench.chaos.parts import READY_WITHIN, Broker, DaemonProcess, Pbx, Say, client_legs
from leadrouter.broker import free_port
from leadrouter.demo import CrmListener, simulator_settings
from pbxsim import Behaviour, ScaledClock, World
from router.model import CallState
from storage.engine import Database
from storage.schema import calls, leads, outbox

TOKEN = "chaos-token-0123456789"
# Seconds after the last lead's turn during which leads are re-posted (same external_id) until
# the API answers 2xx; what is unanswered by then counts as not accepted. One deadline for all,
# so an API that never answers cannot stretch the run lead by lead.
POST_PATIENCE = 60.0
OUTBOX_WAIT = 30.0  # seconds for the outbox to drain to the subscriber once everything settled
# Looks at the managers, a fifth of a second apart: a manager stuck busy is busy in every one,
# one the daemon and the PBX merely see change at slightly different moments is not.
MANAGER_SAMPLES = 10
POLL = 0.25


@dataclass(frozen=True)
class ChaosPlan:
    leads: int
    kills: int = 0
    ami_drops: int = 0  # half of them plain drops, half a PBX that hangs for STALL seconds
    pbx_restarts: int = 0
    broker_outage: float = 0.0  # seconds mosquitto is down; 0: no outage
    # Seconds between looks for a logged-in daemon when an AMI fault is due: the fault strikes at
    # the first look that finds one. One due while the daemon is away (a kill -9, a PBX restart)
    # strikes up to this long after its next login: by default once the link carries calls again;
    # 0.02 right after the login, in the resync that follows it.
    ami_look_every: float = 1.5
    seed: int = 1
    managers: int = 80
    # Leads posted per second: about 80% of what the managers take (a lead needs ~2.6 s of a
    # manager's line, counting clients who never answer and retries), so a daemon that keeps up
    # has room to work off what each kill -9 leaves behind.
    rate: float = 25.0
    # The longest wait, after the last lead and fault, for every lead to finish; it ends as soon
    # as they have. Generous: a kill costs seconds of dialling, and that backlog drains after.
    settle: float = 120.0
    workdir: Path = Path("var/chaos")


@dataclass
class Report:
    plan: ChaosPlan
    findings: dict[str, Finding]
    witnessed: dict[str, int]
    kills_done: int
    ami_drops_done: int
    pbx_restarts_done: int
    broker_outage_done: float
    settled: bool  # every lead finished, and no call was open in the database, before the settle deadline
    seconds: float

    def as_json(self) -> dict[str, Any]:
        return {
            "leads": self.plan.leads,
            **{name: finding.value for name, finding in self.findings.items()},
            "kills_done": self.kills_done,
            "ami_drops_done": self.ami_drops_done,
            "pbx_restarts_done": self.pbx_restarts_done,
            "broker_outage_seconds": self.broker_outage_done,
            "settled": self.settled,
            "seconds": round(self.seconds, 1),
            "seed": self.plan.seed,
            "witnessed": self.witnessed,
            "evidence": {name: finding.evidence for name, finding in self.findings.items()},
        }


# ---- the simulated world ----------------------------------------------------------------


def chaos_world(rng: random.Random, numbers: list[str], extensions: list[str]) -> World:
    """Mostly clients who answer and wait on hold (as real ones do) so a call nobody steers stays up."""
    clients: dict[str, Behaviour] = {}
    for number in numbers:
        roll = rng.random()
        if roll < 0.70:
            clients[number] = Behaviour(answer_after=rng.uniform(0.2, 0.8), talk=None)
        elif roll < 0.78:  # answers, gives up after a moment (on hold, or talking)
            clients[number] = Behaviour(answer_after=rng.uniform(0.2, 0.8), talk=rng.uniform(1.0, 3.0))
        elif roll < 0.88:
            clients[number] = Behaviour(busy=True)
        elif roll < 0.95:
            clients[number] = Behaviour(answer_after=None)
        else:
            clients[number] = Behaviour(unavailable=True)
    managers = {ext: Behaviour(answer_after=rng.uniform(0.2, 0.6), talk=rng.uniform(0.5, 1.5)) for ext in extensions}
    return World(clients=clients, managers=managers)


@dataclass(frozen=True)
class Schedule:
    """When each fault strikes, in seconds from the first lead, and how long each outage lasts.

    Drawn in full from the seed before the run, so a seed names one sequence of faults.
    """

    kills: list[tuple[float, float]]  # (moment, seconds the daemon stays dead before its restart)
    ami_faults: list[tuple[float, str]]  # (moment, "drop" or "hang"), alternately
    pbx_restarts: list[tuple[float, float]]  # (moment, seconds the PBX stays down)
    broker_outage_at: float | None

    @classmethod
    def draw(cls, plan: ChaosPlan, rng: random.Random) -> Schedule:
        window = plan.leads / plan.rate  # while the leads are being posted

        def moments(count: int) -> list[float]:
            return sorted(rng.uniform(0.05 * window, 0.95 * window) for _ in range(count))

        return cls(
            kills=[(moment, rng.uniform(0.3, 2.0)) for moment in moments(plan.kills)],
            ami_faults=[(moment, ("drop", "hang")[n % 2]) for n, moment in enumerate(moments(plan.ami_drops))],
            pbx_restarts=[(moment, rng.uniform(1.0, 3.0)) for moment in moments(plan.pbx_restarts)],
            broker_outage_at=moments(1)[0] if plan.broker_outage > 0 else None,
        )

    def describe(self) -> str:
        faults = [
            *((at, f"kill -9 ({down:.1f}s dead)") for at, down in self.kills),
            *((at, f"AMI {kind}") for at, kind in self.ami_faults),
            *((at, f"PBX restart ({down:.1f}s down)") for at, down in self.pbx_restarts),
            *([(self.broker_outage_at, "broker stop")] if self.broker_outage_at is not None else []),
        ]
        return "; ".join(f"{at:.1f}s {what}" for at, what in sorted(faults)) or "no faults"


def write_config(workdir: Path, *, ami_port: int, mqtt_port: int, http_port: int, extensions: list[str]) -> Path:
    routing = {
        "version": 1,
        "managers": [{"id": f"m{ext}", "name": f"Manager {ext}", "extension": ext} for ext in extensions],
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
    settings = simulator_settings(
        ami_port=ami_port, database=workdir / "leadrouter.db", mqtt_port=mqtt_port, token=TOKEN
    )
    # Fast detection and reconnects: faults come every few seconds here, not once a month.
    settings["ami"] |= {"ping_interval": 1, "ping_timeout": 1, "reconnect_delay": 1, "action_timeout": 2}
    settings["pbx"] |= {"originate_timeout": "3s", "max_channels": max(100, 2 * len(extensions))}
    settings["mqtt"] |= {"client_id": "leadrouter-chaos"}
    settings["http"] |= {"port": http_port}
    settings |= {"routing_file": "routing.yaml", "log": {"level": "warning"}}
    (workdir / "routing.yaml").write_text(yaml.safe_dump(routing, sort_keys=False))
    path = workdir / "leadrouter.yaml"
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    return path


# ---- the run ----------------------------------------------------------------------------------


@dataclass
class _Run:
    plan: ChaosPlan
    schedule: Schedule
    pbx: Pbx
    broker: Broker
    daemon: DaemonProcess
    http: httpx.AsyncClient
    db: Database
    crm: CrmListener
    say: Say
    started: float
    posted: dict[str, int]  # number dialled -> id of the lead the API answered 2xx for
    fault_marks: list[tuple[int, str]] = field(default_factory=list)  # (messages received by then, fault)
    not_accepted: int = 0
    kills_done: int = 0
    ami_drops_done: int = 0
    pbx_restarts_done: int = 0
    broker_outage_done: float = 0.0

    def at(self, offset: float) -> float:
        return self.started + offset

    def mark(self, fault: str) -> None:
        """Note where in the subscriber's capture a fault that may justify a re-sent message struck."""
        self.fault_marks.append((len(self.crm.received), fault))

    # -- leads ----

    async def post_leads(self, numbers: list[str]) -> None:
        deadline = self.at(len(numbers) / self.plan.rate + POST_PATIENCE)
        for index, number in enumerate(numbers):
            await _sleep_until(self.at(index / self.plan.rate))
            lead_id = await self.post(f"chaos-{index}", number, "chaos", deadline)
            if lead_id is None:
                self.not_accepted += 1
            else:
                self.posted[number] = lead_id

    async def post(self, external_id: str, number: str, source: str, deadline: float) -> int | None:
        """Post until the API answers 2xx; the same external_id makes a repeat idempotent, as for a CRM."""
        while time.monotonic() < deadline:
            body = {"phone": f"+{number}", "name": "Chaos", "source": source, "external_id": external_id}
            with contextlib.suppress(httpx.TransportError):
                response = await self.http.post("/leads", json=body)
                if response.status_code in (200, 201):
                    return int(response.json()["id"])
                if response.status_code < 500:
                    raise RuntimeError(f"the API refused a valid lead: {response.status_code} {response.text}")
            await asyncio.sleep(0.2)
        return None

    # -- faults ----

    async def kill_daemon(self) -> None:
        for moment, down in self.schedule.kills:
            await _sleep_until(self.at(moment))
            await self.daemon.kill9()
            self.mark("daemon_killed")
            self.kills_done += 1
            self.say(f"kill -9 #{self.kills_done}")
            await asyncio.sleep(down)
            await self.daemon.start()

    async def cut_ami(self) -> None:
        """Each AMI fault waits until the daemon is logged in: cutting a link that is not there proves nothing."""
        for moment, kind in self.schedule.ami_faults:
            await _sleep_until(self.at(moment))
            deadline = time.monotonic() + READY_WITHIN
            while not await self.pbx.cut(kind, self.say):
                if time.monotonic() > deadline:
                    self.say(f"AMI {kind} skipped: the daemon did not log in within {READY_WITHIN:g}s")
                    break
                await asyncio.sleep(self.plan.ami_look_every)
            else:
                self.ami_drops_done += 1

    async def restart_pbx(self) -> None:
        for moment, down in self.schedule.pbx_restarts:
            await _sleep_until(self.at(moment))
            self.say("PBX restart")
            await self.pbx.restart(down)
            self.pbx_restarts_done += 1

    async def broker_outage(self) -> None:
        if self.schedule.broker_outage_at is None:
            return
        await _sleep_until(self.at(self.schedule.broker_outage_at))
        self.say(f"mosquitto down for {self.plan.broker_outage:g}s")
        self.mark("broker_stopped")
        await self.broker.stop()
        await asyncio.sleep(self.plan.broker_outage)
        # A restarted broker re-sends QoS 1 messages the subscriber had not acknowledged before
        # the stop: a copy after this mark is the broker's, not a second publish of ours. Marked
        # before the start (nothing arrives while it is down): the subscriber, retrying every
        # 0.2 s, may take the first copies before the start returns, and they were charged to
        # whatever fault came before the outage's end (a kill -9 during it, say).
        self.mark("broker_back")
        await self.broker.start()
        self.broker_outage_done = self.plan.broker_outage

    async def subscribe(self) -> None:
        """A CRM that stays subscribed with a persistent session, reconnecting whenever the broker is back."""
        while True:
            with contextlib.suppress(aiomqtt.MqttError):
                await self.crm.run(self.broker.port)
            await asyncio.sleep(0.2)

    # -- the end ----

    async def settle(self) -> bool:
        """Wait until every posted lead finished and the database has no open call; False at the deadline.

        The PBX is not waited for: a client leg the database calls ended is one nobody steers
        any more (it may sit on hold for the dialplan's 600 s), and counts as an open call.
        """
        deadline = time.monotonic() + self.plan.settle
        while time.monotonic() < deadline:
            async with self.db.read() as conn:
                statuses = (await conn.execute(select(leads.c.id, leads.c.status))).all()
                open_calls = (await conn.execute(select(calls.c.id).where(calls.c.state != CallState.ENDED))).all()
            finished = {lead_id for lead_id, status in statuses if status in FINAL_STATUSES}
            if set(self.posted.values()) <= finished and not open_calls:
                return True
            await asyncio.sleep(POLL)
        return False

    async def outbox_drained(self) -> tuple[list[OutboxRow], list[Delivery]]:
        """The outbox and the subscriber's capture once every row reached it (or at the deadline).

        The capture is taken after the rows, so a row committed meanwhile cannot look missing.
        """
        deadline = time.monotonic() + OUTBOX_WAIT
        while True:
            rows = await self.outbox()
            deliveries = [Delivery(str(message["id"]), int(message["lead_id"])) for message in self.crm.received]
            received = {delivery.id for delivery in deliveries}
            if time.monotonic() > deadline or all(row.published and row.id in received for row in rows):
                return rows, deliveries
            await asyncio.sleep(POLL)

    async def outbox(self) -> list[OutboxRow]:
        query = select(outbox.c.seq, outbox.c.id, outbox.c.type, outbox.c.lead_id, outbox.c.published_at)
        async with self.db.read() as conn:
            rows = (await conn.execute(query.order_by(outbox.c.seq))).all()
        return [
            OutboxRow(seq, id_, type_, lead_id, published is not None) for seq, id_, type_, lead_id, published in rows
        ]

    async def stored(self) -> tuple[list[LeadRow], list[CallRow]]:
        async with self.db.read() as conn:
            lead_rows = (await conn.execute(select(leads.c.id, leads.c.status, leads.c.attempts))).all()
            call_rows = (await conn.execute(select(calls.c.lead_id, calls.c.channel_id, calls.c.state))).all()
        return (
            [LeadRow(lead_id, str(status), attempts) for lead_id, status, attempts in lead_rows],
            [CallRow(lead_id, channel_id, str(state)) for lead_id, channel_id, state in call_rows],
        )

    async def managers_free(self, extensions: list[str]) -> list[tuple[int, int]]:
        """(managers free on the PBX, managers free in the daemon's view) at a few moments.

        The daemon's view is its /health ``managers_free``: its own belief is what is judged here,
        against the PBX, where a manager is free when no channel of their phone is up.
        """
        samples = []
        for _ in range(MANAGER_SAMPLES):
            on_pbx = len(set(extensions) - self.pbx.managers_up())
            try:
                health = (await self.http.get("/health")).json()
            except httpx.TransportError:
                health = {"managers_free": 0}  # a daemon that does not answer has no one to offer
            if "managers_free" not in health:
                raise RuntimeError(f"/health no longer says managers_free: {health}")
            samples.append((on_pbx, int(health["managers_free"])))
            await asyncio.sleep(0.2)
        return samples

    async def evidence(self, extensions: list[str]) -> Evidence:
        """What the witnesses saw once the run settled (or gave up settling)."""
        lead_rows, call_rows = await self.stored()
        legs = client_legs(self.pbx.history(), self.posted)
        originated = self.pbx.originated()
        outbox_rows, deliveries = await self.outbox_drained()
        managers = await self.managers_free(extensions)
        return Evidence(
            posted=set(self.posted.values()),
            not_accepted=self.not_accepted,
            leads=lead_rows,
            calls=call_rows,
            legs=legs,
            originated=originated,
            outbox=outbox_rows,
            deliveries=deliveries,
            fault_marks=self.fault_marks,
            managers=managers,
        )


async def _sleep_until(moment: float) -> None:
    await asyncio.sleep(max(moment - time.monotonic(), 0.0))


def _empty(workdir: Path) -> None:
    """Clear a previous run's database, daemon log and broker state out of the work directory."""
    (workdir / "mqtt").mkdir(parents=True, exist_ok=True)
    for stale in [*workdir.glob("leadrouter.db*"), workdir / "daemon.log", *workdir.glob("mqtt/*")]:
        stale.unlink(missing_ok=True)


async def run_chaos(plan: ChaosPlan, say: Say = lambda _line: None) -> Report:
    """Run the plan and audit it (also written to report.json in the workdir).

    Raises only when the harness itself cannot go on, e.g. a daemon that never starts.
    """
    rng = random.Random(plan.seed)
    numbers = [f"7916{n:07d}" for n in rng.sample(range(10**7), plan.leads)]
    extensions = [str(1000 + index) for index in range(plan.managers)]
    began = time.monotonic()
    workdir = plan.workdir
    _empty(workdir)
    pbx = Pbx(ScaledClock(1.0), chaos_world(rng, numbers, extensions))
    schedule = Schedule.draw(plan, rng)
    broker = Broker(workdir / "mqtt")
    http_port = free_port()
    async with contextlib.AsyncExitStack() as stack:
        await broker.start()
        stack.push_async_callback(broker.stop)
        await pbx.start()
        stack.push_async_callback(pbx.stop)
        config = write_config(
            workdir, ami_port=pbx.port, mqtt_port=broker.port, http_port=http_port, extensions=extensions
        )
        http = await stack.enter_async_context(
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{http_port}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5.0
            )
        )
        daemon = DaemonProcess(config, workdir / "daemon.log", http)
        stack.push_async_callback(daemon.stop)
        db = await stack.enter_async_context(Database(f"sqlite+aiosqlite:///{(workdir / 'leadrouter.db').resolve()}"))
        crm = CrmListener("chaos-crm", persistent_session=True)
        run = _Run(plan, schedule, pbx, broker, daemon, http, db, crm, say, time.monotonic(), {})
        subscriber = asyncio.create_task(run.subscribe())
        stack.push_async_callback(_cancel, subscriber)
        await asyncio.wait_for(crm.subscribed.wait(), 10)
        await daemon.start()
        say(f"{plan.leads} leads at {plan.rate:g}/s to {plan.managers} managers; workdir {workdir}")
        say(f"faults: {schedule.describe()}")
        run.started = time.monotonic()
        async with asyncio.TaskGroup() as group:
            group.create_task(run.post_leads(numbers))
            group.create_task(run.kill_daemon())
            group.create_task(run.cut_ami())
            group.create_task(run.restart_pbx())
            group.create_task(run.broker_outage())
        say("every lead posted and every fault done; waiting for the leads to finish")
        settled = await run.settle()
        evidence = await run.evidence(extensions)
    report = Report(
        plan=plan,
        findings=audit(evidence),
        witnessed=witnessed(evidence),
        kills_done=run.kills_done,
        ami_drops_done=run.ami_drops_done,
        pbx_restarts_done=run.pbx_restarts_done,
        broker_outage_done=run.broker_outage_done,
        settled=settled,
        seconds=time.monotonic() - began,
    )
    (workdir / "report.json").write_text(json.dumps(report.as_json(), indent=1, default=str))
    return report


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
