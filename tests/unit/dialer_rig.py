"""The Dialer running on in-memory ports and a clock the test moves: the rig of the dialer's unit tests."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from dialer.engine import Dialer
from dialer.intake import LeadInput, LeadIntake
from dialer.ports import UnitOfWorkFactory
from dialer.settings import DialerSettings
from recordings.naming import RecordingNamer
from router.board import ManagerBoard
from router.breaker import BreakerSettings
from router.model import Call
from router.pbx_events import (
    Bridged,
    DeviceState,
    DialEnded,
    DialOutcome,
    ExtensionState,
    HungUp,
    OriginateOutcome,
    OriginateResult,
    PbxBooted,
)
from router.routing import Manager, RoutingPlan
from tests.fakes import FakeDb, FakePbx, FakeUnitOfWork, ManualClock, SoleDaemon


def team(count: int, **fields: Any) -> tuple[Manager, ...]:
    """Managers m0, m1... on extensions 101, 102..."""
    return tuple(Manager(f"m{index}", f"Manager {index}", str(101 + index), **fields) for index in range(count))


@dataclass
class Rig:
    db: FakeDb
    pbx: FakePbx
    clock: ManualClock
    board: ManagerBoard
    dialer: Dialer
    intake: LeadIntake
    plans: list[RoutingPlan]  # the plan in force is the last one
    running: asyncio.Task[None]  # the dialer's run()

    async def lead(self, phone: str = "+79161234567", source: str = "site", **payload: Any) -> int:
        lead, _ = await self.intake.submit(LeadInput(phone=phone, name="Иван", source=source, payload=payload))
        assert lead.id is not None
        return lead.id

    def originated(self) -> list[str]:
        """The channel ids of every client leg originated so far."""
        return [action[1] for action in self.pbx.of_kind("originate")]

    async def dialled(self, n: int = 1) -> list[str]:
        """Once settled, the channel ids of every client leg originated so far, which must be ``n``."""
        await self.settle()
        channels = self.originated()
        assert len(channels) == n, channels
        return channels

    def connected(self) -> list[str]:
        """Extensions the answered clients were sent to, in order."""
        return [action[2] for action in self.pbx.of_kind("connect")]

    async def settle(self) -> None:
        """Wait until the dialer has applied, acted on and committed everything it was told."""
        await self.dialer.idle()

    def call(self, channel_id: str) -> Call:
        return next(call for call in self.db.calls.values() if call.channel_id == channel_id)

    def events(self, type_: str) -> list[object]:
        return [event for event in self.db.outbox if event.type == type_]

    async def answered(self, channel_id: str) -> None:
        self.dialer.pbx_event(OriginateResult(channel_id, OriginateOutcome.ANSWERED))
        await self.settle()

    async def bridge(self, channel_id: str) -> None:
        """The manager rung for this client answers: they talk from now on."""
        self.dialer.pbx_event(DialEnded(channel_id, DialOutcome.ANSWER))
        self.dialer.pbx_event(Bridged(channel_id))
        await self.settle()

    async def talk(self, channel_id: str, seconds: float = 60) -> None:
        """The manager rung for this client answers, they talk, the client hangs up."""
        await self.bridge(channel_id)
        self.clock.advance(seconds)
        self.dialer.pbx_event(HungUp(channel_id, 16))
        await self.settle()

    async def personal_call(self, extension: str) -> None:
        """The manager's phone is busy and free again: he becomes the one free the shortest."""
        self.dialer.pbx_event(ExtensionState(extension, DeviceState.IN_USE))
        self.dialer.pbx_event(ExtensionState(extension, DeviceState.FREE))
        await self.settle()

    def reload(self, plan: RoutingPlan) -> None:
        """What the daemon does on SIGHUP with a good file."""
        self.plans.append(plan)
        self.board.replace(plan)
        self.dialer.leads_added()


@contextlib.asynccontextmanager
async def make_rig(
    plan: RoutingPlan,
    *,
    db: FakeDb | None = None,
    pbx: FakePbx | None = None,
    uow: UnitOfWorkFactory | None = None,
    clock: ManualClock | None = None,
    breaker: BreakerSettings | None = None,
    releasing: bool = True,
    on_pbx: str | None = None,
    inbound_numbers: frozenset[str] = frozenset(),
) -> AsyncIterator[Rig]:
    """A running dialer, logged in to a booted PBX. ``uow``: a real database instead of the
    in-memory one (``Rig.db`` then stays empty); ``db`` and ``pbx``: those of an earlier rig,
    as a restarted daemon finds them; ``releasing``: it runs the SLA job (a daemon alone does);
    ``on_pbx``: the dialer of that one of ``plan.pbxes``; ``inbound_numbers``: the company numbers it
    takes callers of."""
    db, pbx, clock = db or FakeDb(), pbx or FakePbx(), clock or ManualClock()
    daemon_id = f"rig-{uuid.uuid4().hex[:8]}"  # a fresh one per run, as the daemon's
    uow = uow or (lambda: FakeUnitOfWork(db, daemon_id))
    plans = [plan]
    settings = DialerSettings(
        channel_id_prefix="lr", max_channels=10, dial_deadline=60, inbound_numbers=inbound_numbers
    )
    if breaker is not None:
        settings = replace(settings, breaker=breaker)
    if on_pbx is not None:
        settings = replace(settings, pbx=on_pbx, other_pbxes=frozenset(plan.pbxes) - {on_pbx})
    board = ManagerBoard(plan if on_pbx is None else plan.on_pbx(on_pbx))
    dialer = Dialer(
        uow=uow,
        pbx=pbx,
        clock=clock,
        routing=lambda: plans[-1] if on_pbx is None else plans[-1].on_pbx(on_pbx),
        everyone=lambda: plans[-1],
        board=board,
        recordings=RecordingNamer("leadrouter/{channel_id}.wav", "https://rec.example/{file}"),
        settings=settings,
        peers=SoleDaemon(daemon_id),
    )
    intake = LeadIntake(
        uow=uow,
        clock=clock,
        routing=lambda: plans[-1],
        default_region="RU",
        on_new_lead=dialer.leads_added,
        claim=dialer.claim_new,
    )
    running = asyncio.create_task(dialer.run())
    sla_job = dialer.release_overdue_leads() if releasing else asyncio.Event().wait()
    sla = asyncio.create_task(sla_job)
    dialer.pbx_event(PbxBooted())  # as Asterisk says right after the login
    await dialer.pbx_connected()
    try:
        yield Rig(db, pbx, clock, board, dialer, intake, plans, running)
    finally:
        sla.cancel()
        running.cancel()
        await asyncio.wait({running, sla})
    # The test went through, yet the dialer died meanwhile: say of what (a failing test says why itself).
    if not running.cancelled():
        running.result()
