"""The dialer's decisions, with in-memory ports and a clock the test moves."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest

from dialer.engine import Dialer, DialerSettings
from dialer.intake import LeadInput, LeadIntake
from recordings.naming import RecordingNamer
from router.board import ManagerBoard
from router.model import Call, CallState, Disposition, LeadStatus, LegResult
from router.pbx_events import (
    Billed,
    Bridged,
    DeviceState,
    DialEnded,
    DialOutcome,
    ExtensionState,
    HungUp,
    OriginateOutcome,
    OriginateResult,
    RecordingStarted,
)
from router.routing import Manager, RoutingPlan, Scenario
from tests.fakes import FakeDb, FakePbx, FakeUnitOfWork, ManualClock

SCENARIO = Scenario(
    name="default",
    sources=frozenset(),
    managers=frozenset(),
    hold_limit=30,
    ring_timeout=15,
    max_attempts=2,
    retry_delays=(60,),
)


async def until(predicate: Callable[[], bool], what: str = "condition") -> None:
    for _ in range(2000):
        if predicate():
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Rig:
    db: FakeDb
    pbx: FakePbx
    clock: ManualClock
    board: ManagerBoard
    dialer: Dialer
    intake: LeadIntake

    async def lead(self, phone: str = "+79161234567", source: str = "site") -> int:
        lead, _ = await self.intake.submit(LeadInput(phone=phone, name="Иван", source=source))
        assert lead.id is not None
        return lead.id

    async def dialled(self, n: int = 1) -> list[str]:
        await until(lambda: len(self.pbx.of_kind("originate")) >= n, f"{n} originates")
        return [a[1] for a in self.pbx.of_kind("originate")]

    async def settle(self) -> None:
        """Let the event loop apply and commit everything queued."""
        for _ in range(5):
            await asyncio.sleep(0.005)

    def call(self, channel_id: str) -> Call:
        return next(c for c in self.db.calls.values() if c.channel_id == channel_id)

    def events(self, type_: str) -> list[object]:
        return [e for e in self.db.outbox if e.type == type_]


@contextlib.asynccontextmanager
async def make_rig(managers: int = 2, db: FakeDb | None = None, pbx: FakePbx | None = None) -> AsyncIterator[Rig]:
    db, pbx, clock = db or FakeDb(), pbx or FakePbx(), ManualClock()
    plan = RoutingPlan(
        managers=tuple(Manager(f"m{i}", f"Manager {i}", str(101 + i)) for i in range(managers)),
        scenarios=(SCENARIO,),
    )
    board = ManagerBoard(plan.managers)
    dialer = Dialer(
        uow=lambda: FakeUnitOfWork(db),
        pbx=pbx,
        clock=clock,
        routing=lambda: plan,
        board=board,
        recordings=RecordingNamer("leadrouter/{channel_id}.wav", "https://rec.example/{file}"),
        settings=DialerSettings(channel_id_prefix="lr", max_channels=10, dial_deadline=60),
    )
    intake = LeadIntake(
        uow=lambda: FakeUnitOfWork(db), clock=clock, default_region="RU", on_new_lead=dialer.leads_added
    )
    task = asyncio.create_task(dialer.run())
    await dialer.pbx_connected()
    try:
        yield Rig(db, pbx, clock, board, dialer, intake)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with make_rig() as r:
        yield r


async def test_answered_client_is_bridged_and_the_manager_becomes_owner(rig: Rig) -> None:
    lead_id = await rig.lead()
    (channel,) = await rig.dialled()
    assert rig.db.leads[lead_id].status is LeadStatus.DIALING
    rig.clock.advance(3)
    rig.dialer.pbx_event(OriginateResult(channel, OriginateOutcome.ANSWERED))
    await until(lambda: rig.pbx.of_kind("connect") != [], "redirect")
    assert rig.pbx.of_kind("connect") == [("connect", channel, "101")]
    rig.clock.advance(2)
    rig.dialer.pbx_event(RecordingStarted(channel))
    rig.dialer.pbx_event(DialEnded(channel, DialOutcome.ANSWER))
    rig.dialer.pbx_event(Bridged(channel))
    await rig.settle()
    assert rig.db.leads[lead_id].owner_id == "m0"
    rig.clock.advance(95)
    rig.dialer.pbx_event(HungUp(channel, 16))
    rig.dialer.pbx_event(Billed(channel, 97))
    await rig.settle()

    call = rig.call(channel)
    assert call.state is CallState.ENDED and call.disposition is Disposition.COMPLETED
    assert (call.ring_seconds, call.hold_seconds, call.talk_seconds, call.total_seconds) == (3, 2, 95, 100)
    assert call.hangup_cause == 16 and call.manager_id == "m0"
    assert call.recording_file == f"leadrouter/{channel}.wav"
    assert call.recording_url == f"https://rec.example/leadrouter/{channel}.wav"
    assert [leg.result for leg in call.legs] == [LegResult.ANSWERED]
    assert rig.db.billing == {channel: 97}
    assert rig.db.leads[lead_id].status is LeadStatus.ASSIGNED
    types = [e.type for e in rig.db.outbox]
    assert types == ["lead.created", "call.dialing", "call.answered", "lead.assigned", "call.ended"]
    assert rig.board.free_count == 2  # the manager is free again


async def test_a_manager_who_does_not_answer_is_skipped_for_the_next(rig: Rig) -> None:
    await rig.lead()
    (channel,) = await rig.dialled()
    rig.dialer.pbx_event(OriginateResult(channel, OriginateOutcome.ANSWERED))
    await until(lambda: len(rig.pbx.of_kind("connect")) == 1, "first redirect")
    rig.clock.advance(15)
    rig.dialer.pbx_event(DialEnded(channel, DialOutcome.NO_ANSWER))
    await until(lambda: len(rig.pbx.of_kind("connect")) == 2, "second redirect")
    assert [a[2] for a in rig.pbx.of_kind("connect")] == ["101", "102"]
    rig.dialer.pbx_event(DialEnded(channel, DialOutcome.ANSWER))
    rig.dialer.pbx_event(Bridged(channel))
    rig.dialer.pbx_event(HungUp(channel, 16))
    await rig.settle()
    call = rig.call(channel)
    assert [(leg.manager_id, leg.result) for leg in call.legs] == [
        ("m0", LegResult.NO_ANSWER),
        ("m1", LegResult.ANSWERED),
    ]
    assert call.manager_id == "m1" and call.disposition is Disposition.COMPLETED


async def test_client_waits_on_hold_until_a_manager_frees_up() -> None:
    async with make_rig(managers=1) as rig:
        await rig.lead()
        (channel,) = await rig.dialled()
        # The only manager picks up their personal phone after we dialled.
        rig.dialer.pbx_event(ExtensionState("101", DeviceState.IN_USE))
        rig.dialer.pbx_event(OriginateResult(channel, OriginateOutcome.ANSWERED))
        await rig.settle()
        assert rig.pbx.of_kind("connect") == []
        rig.clock.advance(10)
        rig.dialer.pbx_event(ExtensionState("101", DeviceState.FREE))
        await until(lambda: rig.pbx.of_kind("connect") == [("connect", channel, "101")], "redirect after free")


async def test_nobody_free_within_the_hold_limit_apologises_and_schedules_a_retry() -> None:
    async with make_rig(managers=1) as rig:
        lead_id = await rig.lead()
        (channel,) = await rig.dialled()
        rig.dialer.pbx_event(ExtensionState("101", DeviceState.IN_USE))
        rig.dialer.pbx_event(OriginateResult(channel, OriginateOutcome.ANSWERED))
        await rig.settle()
        rig.clock.advance(30)
        await until(lambda: rig.pbx.of_kind("apologize") == [("apologize", channel)], "apology")
        rig.dialer.pbx_event(HungUp(channel, 16))
        await rig.settle()
        assert rig.call(channel).disposition is Disposition.NO_MANAGER
        lead = rig.db.leads[lead_id]
        assert lead.status is LeadStatus.SCHEDULED
        assert lead.next_attempt_at == rig.clock.now() + timedelta(seconds=60)
        assert [e.type for e in rig.db.outbox][-2:] == ["call.ended", "lead.scheduled"]


async def test_busy_client_is_retried_then_failed(rig: Rig) -> None:
    lead_id = await rig.lead()
    (first,) = await rig.dialled()
    rig.dialer.pbx_event(HungUp(first, 17))  # Asterisk reports the hangup before the OriginateResponse
    rig.dialer.pbx_event(OriginateResult(first, OriginateOutcome.BUSY))
    await rig.settle()
    assert rig.db.leads[lead_id].status is LeadStatus.SCHEDULED
    assert rig.call(first).disposition is Disposition.BUSY and rig.call(first).hangup_cause == 17
    rig.clock.advance(60)
    _, second = await rig.dialled(2)
    rig.dialer.pbx_event(OriginateResult(second, OriginateOutcome.NO_ANSWER))
    await rig.settle()
    lead = rig.db.leads[lead_id]
    assert lead.status is LeadStatus.FAILED and lead.attempts == 2
    assert [e.type for e in rig.db.outbox][-2:] == ["call.ended", "lead.failed"]


async def test_client_hanging_up_on_hold_is_abandoned() -> None:
    async with make_rig(managers=1) as rig:
        await rig.lead()
        (channel,) = await rig.dialled()
        rig.dialer.pbx_event(ExtensionState("101", DeviceState.IN_USE))
        rig.dialer.pbx_event(OriginateResult(channel, OriginateOutcome.ANSWERED))
        await rig.settle()
        rig.clock.advance(5)
        rig.dialer.pbx_event(HungUp(channel, 16))
        await rig.settle()
        call = rig.call(channel)
        assert call.disposition is Disposition.ABANDONED and call.hold_seconds == 5 and call.talk_seconds is None


async def test_dials_no_more_clients_than_free_managers() -> None:
    async with make_rig(managers=2) as rig:
        for i in range(5):
            await rig.lead(phone=f"+7916123456{i}")
        await rig.dialled(2)
        await rig.settle()
        assert len(rig.pbx.of_kind("originate")) == 2
        assert sum(1 for lead in rig.db.leads.values() if lead.status is LeadStatus.NEW) == 3


async def test_a_refused_originate_ends_the_attempt(rig: Rig) -> None:
    rig.pbx.refuse_originate = True
    lead_id = await rig.lead()
    (channel,) = await rig.dialled()
    await rig.settle()
    assert rig.call(channel).disposition is Disposition.FAILED
    assert rig.db.leads[lead_id].status is LeadStatus.SCHEDULED


async def test_a_reconnect_closes_calls_whose_client_vanished_meanwhile(rig: Rig) -> None:
    await rig.lead(phone="+79161234560")
    await rig.lead(phone="+79161234561")
    gone, alive = await rig.dialled(2)
    for channel in (gone, alive):
        rig.dialer.pbx_event(OriginateResult(channel, OriginateOutcome.ANSWERED))
    await until(lambda: len(rig.pbx.of_kind("connect")) == 2, "both redirected")
    rig.dialer.pbx_event(DialEnded(alive, DialOutcome.ANSWER))
    rig.dialer.pbx_event(Bridged(alive))
    await rig.settle()
    rig.pbx.live = {alive}
    rig.clock.advance(1)
    await rig.dialer.pbx_connected()  # as after an AMI reconnect
    await rig.settle()
    assert rig.call(gone).disposition is Disposition.ABANDONED
    assert rig.call(alive).state is CallState.BRIDGED
    assert rig.board.free_count == 1  # only the vanished call's manager came back


async def test_after_a_restart_live_calls_are_adopted_and_finish_normally() -> None:
    async with make_rig() as first:
        lead_id = await first.lead(phone="+79161234560")
        await first.lead(phone="+79161234561")
        alive, gone = await first.dialled(2)
        for channel in (alive, gone):
            first.dialer.pbx_event(OriginateResult(channel, OriginateOutcome.ANSWERED))
        await until(lambda: len(first.pbx.of_kind("connect")) == 2, "both redirected")
        first.dialer.pbx_event(DialEnded(alive, DialOutcome.ANSWER))
        first.dialer.pbx_event(Bridged(alive))
        await first.settle()
        db, pbx = first.db, first.pbx
    pbx.live = {alive}
    async with make_rig(db=db, pbx=pbx) as second:
        await second.settle()
        assert second.call(gone).disposition is Disposition.ABANDONED
        assert second.call(alive).state is CallState.BRIDGED
        assert second.board.free_count == 1  # the adopted call keeps its manager busy
        second.clock.advance(40)
        second.dialer.pbx_event(HungUp(alive, 16))
        await second.settle()
        assert second.call(alive).disposition is Disposition.COMPLETED
        assert db.leads[lead_id].status is LeadStatus.ASSIGNED and db.leads[lead_id].owner_id == "m0"
        assert second.board.free_count == 2
