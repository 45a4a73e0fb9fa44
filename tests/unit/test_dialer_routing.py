"""The dialer under a routing plan: the scenario a lead matches, its pool and strategy, shifts,
capacity, and a reload while a client holds. In-memory ports, a clock the test moves."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from dialer.engine import Dialer
from dialer.intake import LeadInput, LeadIntake
from dialer.settings import DialerSettings
from recordings.naming import RecordingNamer
from router.board import ManagerBoard
from router.matching import Match, Patterns
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
from router.routing import Manager, RoutingPlan, Strategy
from router.schedule import Schedule, Window
from tests.fakes import FakeDb, FakePbx, FakeUnitOfWork, ManualClock
from tests.router.plans import offered, scenario


def managers(count: int, **fields: Any) -> tuple[Manager, ...]:
    return tuple(Manager(f"m{index}", f"Manager {index}", str(101 + index), **fields) for index in range(count))


@dataclass
class Rig:
    db: FakeDb
    pbx: FakePbx
    clock: ManualClock
    board: ManagerBoard
    dialer: Dialer
    intake: LeadIntake
    plan: list[RoutingPlan]  # the plan in force is the last one

    async def lead(self, phone: str = "+79161234567", **payload: Any) -> None:
        await self.intake.submit(LeadInput(phone=phone, name="Иван", source="site", payload=payload))

    def originated(self) -> list[str]:
        return [action[1] for action in self.pbx.of_kind("originate")]

    def connected(self) -> list[str]:
        """Extensions the answered clients were sent to, in order."""
        return [action[2] for action in self.pbx.of_kind("connect")]

    def call(self, channel_id: str) -> Call:
        return next(call for call in self.db.calls.values() if call.channel_id == channel_id)

    async def answered(self, channel_id: str) -> None:
        self.dialer.pbx_event(OriginateResult(channel_id, OriginateOutcome.ANSWERED))
        await self.dialer.idle()

    async def talk(self, channel_id: str, seconds: float = 60) -> None:
        """The manager rung for this client answers, they talk, the client hangs up."""
        self.dialer.pbx_event(DialEnded(channel_id, DialOutcome.ANSWER))
        self.dialer.pbx_event(Bridged(channel_id))
        await self.dialer.idle()
        self.clock.advance(seconds)
        self.dialer.pbx_event(HungUp(channel_id, 16))
        await self.dialer.idle()

    async def personal_call(self, extension: str) -> None:
        """The manager's phone is busy and free again: he becomes the one free the shortest."""
        self.dialer.pbx_event(ExtensionState(extension, DeviceState.IN_USE))
        self.dialer.pbx_event(ExtensionState(extension, DeviceState.FREE))
        await self.dialer.idle()

    def reload(self, plan: RoutingPlan) -> None:
        """What the daemon does on SIGHUP with a good file."""
        self.plan.append(plan)
        self.board.replace(plan)
        self.dialer.leads_added()


@contextlib.asynccontextmanager
async def make_rig(plan: RoutingPlan, clock: ManualClock | None = None) -> AsyncIterator[Rig]:
    db, pbx, clock = FakeDb(), FakePbx(), clock or ManualClock()
    plans = [plan]
    board = ManagerBoard(plan)
    routing: Callable[[], RoutingPlan] = lambda: plans[-1]  # noqa: E731
    dialer = Dialer(
        uow=lambda: FakeUnitOfWork(db),
        pbx=pbx,
        clock=clock,
        routing=routing,
        board=board,
        recordings=RecordingNamer("leadrouter/{channel_id}.wav", "https://rec.example/{file}"),
        settings=DialerSettings(channel_id_prefix="lr", max_channels=10, dial_deadline=60),
    )
    intake = LeadIntake(
        uow=lambda: FakeUnitOfWork(db), clock=clock, default_region="RU", on_new_lead=dialer.leads_added
    )
    task = asyncio.create_task(dialer.run())
    dialer.pbx_event(PbxBooted())  # as Asterisk says right after the login
    await dialer.pbx_connected()
    try:
        yield Rig(db, pbx, clock, board, dialer, intake, plans)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_lead_gets_the_scenario_its_payload_matches_and_that_scenarios_pool() -> None:
    vip = scenario("vip", "m1", match=Match(payload=(("tags", Patterns.of(["vip"])),)))
    async with make_rig(RoutingPlan(managers(2), (vip, scenario()))) as rig:
        await rig.lead(tags=["vip"])
        await rig.dialer.idle()
        (channel,) = rig.originated()
        await rig.answered(channel)
        assert rig.call(channel).scenario == "vip"
        assert rig.connected() == ["102"]  # m1, though m0 has been free longer


async def test_the_scenarios_strategy_chooses_among_the_free() -> None:
    async with make_rig(RoutingPlan(managers(2), (scenario(strategy=Strategy.FEWEST_CALLS),))) as rig:
        await rig.lead()
        await rig.dialer.idle()
        (first,) = rig.originated()
        await rig.answered(first)
        await rig.talk(first)
        await rig.personal_call("102")  # m0 is now free the longest, but has talked once today
        await rig.lead("+79161234568")
        await rig.dialer.idle()
        second = rig.originated()[-1]
        await rig.answered(second)
        assert rig.connected() == ["101", "102"]


async def test_nobody_is_dialled_before_the_shift_starts_and_dialling_starts_with_it() -> None:
    # The clock starts on Tuesday 09:00 UTC; the only manager starts at 09:30.
    shift = Schedule((Window(frozenset(range(7)), 9 * 60 + 30, 18 * 60),))
    async with make_rig(RoutingPlan(managers(1, shift=shift), (scenario(),))) as rig:
        await rig.lead()
        await rig.dialer.idle()
        assert rig.originated() == [] and rig.board.free_count == 0
        rig.clock.advance(29 * 60)
        await rig.dialer.idle()
        assert rig.originated() == []
        rig.clock.advance(60)  # 09:30: the dialler wakes by itself for the shift
        await rig.dialer.idle()
        assert len(rig.originated()) == 1


async def test_a_manager_who_owns_his_max_of_open_leads_gets_no_more_clients() -> None:
    team = (Manager("m0", "Manager 0", "101", max_open_leads=1), Manager("m1", "Manager 1", "102"))
    async with make_rig(RoutingPlan(team, (scenario(),))) as rig:
        await rig.lead()
        await rig.dialer.idle()
        (first,) = rig.originated()
        await rig.answered(first)
        await rig.talk(first)
        assert "m0" not in offered(rig.board, now=rig.clock.now())  # he owns the lead now, and that is his max
        await rig.personal_call("102")
        await rig.lead("+79161234568")
        await rig.dialer.idle()
        await rig.answered(rig.originated()[-1])
        assert rig.connected() == ["101", "102"]


async def test_a_client_holding_through_a_reload_keeps_his_scenarios_pool() -> None:
    only = {name: scenario("s", name) for name in ("m0", "m1")}
    async with make_rig(RoutingPlan(managers(2), (only["m1"],))) as rig:
        rig.dialer.pbx_event(ExtensionState("102", DeviceState.IN_USE))
        await rig.lead()
        await rig.dialer.idle()
        (channel,) = rig.originated()
        await rig.answered(channel)
        assert rig.connected() == []  # m1 is on the phone: the client holds
        rig.reload(RoutingPlan(managers(2), (only["m0"],)))  # the new file sends this scenario to m0
        rig.dialer.pbx_event(ExtensionState("102", DeviceState.FREE))
        await rig.dialer.idle()
        assert rig.connected() == ["102"]  # under the rules the call started with
