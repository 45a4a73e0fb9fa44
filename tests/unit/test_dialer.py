"""The dialer's decisions, with in-memory ports and a clock the test moves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta

import pytest

from dialer.engine import DialerStopped
from dialer.intake import Claimed
from dialer.ports import PbxError, PbxNoAnswer, PbxNotSent
from pbxsim.tests.amitools import wait_until
from router.breaker import BreakerSettings
from router.events import CallAnswered, LeadCreated
from router.matching import Match, Patterns
from router.model import PBX_RETRY_DELAY, Call, CallState, Disposition, Lead, LeadStatus, LegResult
from router.pbx_events import (
    Billed,
    Bridged,
    CallEndRecord,
    DeviceState,
    DialEnded,
    DialOutcome,
    ExtensionState,
    HungUp,
    InboundCall,
    LegStage,
    OriginateOutcome,
    OriginateResult,
    PbxBooted,
    PbxShuttingDown,
    RecordingStarted,
)
from router.routing import Manager, OwnerFirst, RoutingPlan
from storage.engine import Database
from storage.queries import SqlQueries
from storage.uow import SqlUnitOfWork
from tests.fakes import FakeDb, FakeUnitOfWork, ManualClock
from tests.router.plans import offered, scenario
from tests.unit.dialer_rig import Rig, make_rig, team

SCENARIO = scenario("default", max_attempts=2)

BREAKER = BreakerSettings(failures=2, window=10, pause=15)


def plan(managers: int = 2) -> RoutingPlan:
    return RoutingPlan(team(managers), (SCENARIO,))


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with make_rig(plan()) as ready:
        yield ready


async def test_answered_client_is_bridged_and_the_manager_becomes_owner(rig: Rig) -> None:
    lead_id = await rig.lead()
    (channel,) = await rig.dialled()
    assert rig.db.leads[lead_id].status is LeadStatus.DIALING
    rig.clock.advance(3)
    rig.dialer.pbx_event(OriginateResult(channel, OriginateOutcome.ANSWERED))
    await rig.settle()
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
    types = [event.type for event in rig.db.outbox if event.type != "manager.state"]
    assert types == ["lead.created", "call.dialing", "call.answered", "lead.assigned", "call.ended"]
    assert rig.board.free_count == 2  # the manager is free again
    # Every change of the manager's state is stored and published, in order.
    assert [(change.manager_id, change.state) for change in rig.db.manager_states] == [
        ("m0", "ringing"),
        ("m0", "on_call"),
        ("m0", "available"),
    ]
    assert [event for event in rig.db.outbox if event.type == "manager.state"] == rig.db.manager_states


async def test_a_manager_who_does_not_answer_is_skipped_for_the_next(rig: Rig) -> None:
    await rig.lead()
    (channel,) = await rig.dialled()
    rig.dialer.pbx_event(OriginateResult(channel, OriginateOutcome.ANSWERED))
    await rig.settle()
    assert len(rig.pbx.of_kind("connect")) == 1
    rig.clock.advance(15)
    rig.dialer.pbx_event(DialEnded(channel, DialOutcome.NO_ANSWER))
    await rig.settle()
    assert [action[2] for action in rig.pbx.of_kind("connect")] == ["101", "102"]
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
    async with make_rig(plan(1)) as rig:
        await rig.lead()
        (channel,) = await rig.dialled()
        # The only manager picks up their personal phone after we dialled.
        rig.dialer.pbx_event(ExtensionState("101", DeviceState.IN_USE))
        rig.dialer.pbx_event(OriginateResult(channel, OriginateOutcome.ANSWERED))
        await rig.settle()
        assert rig.pbx.of_kind("connect") == []
        rig.clock.advance(10)
        rig.dialer.pbx_event(ExtensionState("101", DeviceState.FREE))
        await rig.settle()
        assert rig.pbx.of_kind("connect") == [("connect", channel, "101")]


async def _on_hold_while_101_is_busy(rig: Rig) -> str:
    """A lead dialled and answered while the only manager (101) is on another call: its channel."""
    await rig.lead()
    (channel,) = await rig.dialled()
    rig.dialer.pbx_event(ExtensionState("101", DeviceState.IN_USE))
    rig.dialer.pbx_event(OriginateResult(channel, OriginateOutcome.ANSWERED))
    await rig.settle()
    return channel


async def test_nobody_free_within_the_hold_limit_apologises_and_schedules_a_retry() -> None:
    async with make_rig(plan(1)) as rig:
        lead_id = await rig.lead()
        (channel,) = await rig.dialled()
        rig.dialer.pbx_event(ExtensionState("101", DeviceState.IN_USE))
        rig.dialer.pbx_event(OriginateResult(channel, OriginateOutcome.ANSWERED))
        await rig.settle()
        rig.clock.advance(30)
        await rig.settle()
        assert rig.pbx.of_kind("apologize") == [("apologize", channel)]
        rig.dialer.pbx_event(HungUp(channel, 16))
        await rig.settle()
        assert rig.call(channel).disposition is Disposition.NO_MANAGER
        lead = rig.db.leads[lead_id]
        assert lead.status is LeadStatus.SCHEDULED
        assert lead.next_attempt_at == rig.clock.now() + timedelta(seconds=60)
        assert [event.type for event in rig.db.outbox][-2:] == ["call.ended", "lead.scheduled"]


async def test_an_apology_the_link_lost_is_sent_after_the_reconnect() -> None:
    """The hold limit ran out while the AMI link was down: the client is still on hold at the PBX,
    so the listing after the login shows the apology never happened, and it is sent then."""
    async with make_rig(plan(1)) as rig:
        channel = await _on_hold_while_101_is_busy(rig)
        rig.dialer.pbx_disconnected()
        rig.pbx.apologize_error = PbxNotSent("Redirect not sent: AMI is not connected")
        rig.clock.advance(30)
        await rig.settle()
        assert rig.pbx.of_kind("apologize") == [("apologize", channel)]  # tried, not sent
        rig.pbx.apologize_error = None
        rig.pbx.lists(channel, LegStage.ON_HOLD)
        rig.pbx.devices["101"] = DeviceState.IN_USE
        await rig.dialer.pbx_connected()
        await rig.settle()
        assert rig.pbx.of_kind("apologize") == [("apologize", channel)] * 2
        rig.dialer.pbx_event(HungUp(channel, 16))
        await rig.settle()
        assert rig.call(channel).disposition is Disposition.NO_MANAGER


async def test_an_apology_whose_answer_never_came_is_not_cut_off_by_a_hangup() -> None:
    """The Redirect to the apology went out and the PBX did not answer it: the client may be
    hearing the apology, so no Hangup follows. The link is dropped for it; the listing after the
    login shows him still on hold (the Redirect was lost), and only then is the apology sent again."""
    async with make_rig(plan(1)) as rig:
        channel = await _on_hold_while_101_is_busy(rig)
        rig.pbx.apologize_error = PbxNoAnswer("Redirect: no answer in 10.0s")
        rig.clock.advance(30)
        await rig.settle()
        assert rig.pbx.of_kind("apologize") == [("apologize", channel)]
        assert rig.pbx.of_kind("hangup") == []
        rig.dialer.pbx_disconnected()
        rig.pbx.apologize_error = None
        rig.pbx.lists(channel, LegStage.ON_HOLD)
        rig.pbx.devices["101"] = DeviceState.IN_USE
        await rig.dialer.pbx_connected()
        await rig.settle()
        assert rig.pbx.of_kind("apologize") == [("apologize", channel)] * 2
        assert rig.pbx.of_kind("hangup") == []


async def test_an_apology_the_pbx_refused_hangs_the_client_up() -> None:
    async with make_rig(plan(1)) as rig:
        channel = await _on_hold_while_101_is_busy(rig)
        rig.pbx.apologize_error = PbxError("Redirect: Redirect failed")
        rig.clock.advance(30)
        await rig.settle()
        assert rig.pbx.of_kind("hangup") == [("hangup", channel)]


async def test_a_listed_caller_nobody_heard_is_taken_and_one_stored_already_is_left_alone() -> None:
    """After the login the listing shows two callers in the inbound context's music: one whose
    UserEvent came while the link was down, and one whose call another daemon stored (it steers
    him). The first is taken; the second costs nothing: no second call, no apology."""
    async with make_rig(plan(1), inbound_numbers=frozenset({"74951234567"})) as rig:
        other = Call(lead_id=1, attempt=1, scenario="default", channel_id="trunk-2;2", phone="+79161234562",
                     started_at=rig.clock.now())  # fmt: skip
        rig.db.calls[1] = other
        rig.dialer.pbx_disconnected()
        rig.pbx.callers = [
            InboundCall("trunk-1;2", "74951234567", "79161234561"),
            InboundCall("trunk-2;2", "74951234567", "79161234562"),
        ]
        await rig.dialer.pbx_connected()
        await rig.settle()
        assert [action[1] for action in rig.pbx.of_kind("take_inbound")] == ["trunk-1;2"]
        assert rig.pbx.of_kind("apologize") == []
        assert sorted(call.channel_id for call in rig.db.calls.values()) == ["trunk-1;2", "trunk-2;2"]
        (lead,) = [lead for lead in rig.db.leads.values() if lead.phone == "+79161234561"]
        assert lead.source == "inbound:74951234567"
        await rig.dialer.pbx_connected()  # listed again: now his call is ours, nothing more happens
        await rig.settle()
        assert len(rig.pbx.of_kind("take_inbound")) == 1 and len(rig.db.calls) == 2


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
    assert [event.type for event in rig.db.outbox][-2:] == ["call.ended", "lead.failed"]


async def test_a_call_ending_with_its_retry_later_costs_no_dispatch_pass_until_then(rig: Rig) -> None:
    lead_id = await rig.lead()
    (first,) = await rig.dialled()
    commits = rig.db.commits
    rig.dialer.pbx_event(OriginateResult(first, OriginateOutcome.BUSY))
    await rig.settle()
    # The call's end and the retry are one commit: nothing waited for the room, nothing is due yet.
    assert rig.db.commits == commits + 1
    rig.clock.advance(59)
    await rig.settle()
    assert rig.db.commits == commits + 1
    rig.clock.advance(1)
    await rig.dialled(2)
    assert rig.db.leads[lead_id].attempts == 2


async def test_client_hanging_up_on_hold_is_abandoned() -> None:
    async with make_rig(plan(1)) as rig:
        channel = await _on_hold_while_101_is_busy(rig)
        rig.clock.advance(5)
        rig.dialer.pbx_event(HungUp(channel, 16))
        await rig.settle()
        call = rig.call(channel)
        assert call.disposition is Disposition.ABANDONED and call.hold_seconds == 5 and call.talk_seconds is None


async def test_dials_no_more_clients_than_free_managers() -> None:
    async with make_rig(plan(2)) as rig:
        for digit in range(5):
            await rig.lead(phone=f"+7916123456{digit}")
        await rig.dialled(2)  # exactly two, once the dialer has nothing left to do
        assert sum(1 for lead in rig.db.leads.values() if lead.status is LeadStatus.NEW) == 3


async def test_a_reconnect_closes_calls_whose_client_vanished_meanwhile(rig: Rig) -> None:
    await rig.lead(phone="+79161234560")
    await rig.lead(phone="+79161234561")
    gone, alive = await rig.dialled(2)
    for channel in (gone, alive):
        rig.dialer.pbx_event(OriginateResult(channel, OriginateOutcome.ANSWERED))
    await rig.settle()
    assert len(rig.pbx.of_kind("connect")) == 2
    rig.dialer.pbx_event(DialEnded(alive, DialOutcome.ANSWER))
    rig.dialer.pbx_event(Bridged(alive))
    await rig.settle()
    rig.pbx.lists(alive, LegStage.BRIDGED, "101")
    rig.clock.advance(1)
    await rig.dialer.pbx_connected()  # as after an AMI reconnect
    await rig.settle()
    # The client had answered; whether they hung up or talked to the manager rung is not known.
    assert rig.call(gone).disposition is Disposition.ENDED_UNOBSERVED
    assert rig.call(alive).state is CallState.BRIDGED
    assert rig.board.free_count == 1  # only the vanished call's manager came back


async def test_a_reconnect_closes_a_vanished_call_as_the_pbx_noted_its_end(rig: Rig) -> None:
    lead_id = await rig.lead(phone="+79161234560")
    await rig.lead(phone="+79161234561")
    talked, left = await rig.dialled(2)
    for channel in (talked, left):
        rig.dialer.pbx_event(OriginateResult(channel, OriginateOutcome.ANSWERED))
    await rig.settle()
    rig.dialer.pbx_event(DialEnded(talked, DialOutcome.ANSWER))
    rig.dialer.pbx_event(Bridged(talked))
    await rig.settle()
    bridged_at = rig.call(talked).bridged_at
    assert bridged_at is not None
    rig.pbx.ended[talked] = CallEndRecord(talked, bridged_at + timedelta(seconds=12.345), 16, talked=True)
    rig.pbx.ended[left] = CallEndRecord(left, bridged_at + timedelta(seconds=3), 16, talked=False)
    rig.clock.advance(60)  # noticed a minute later
    await rig.dialer.pbx_connected()
    await rig.settle()
    call = rig.call(talked)
    assert (call.disposition, call.hangup_cause, call.talk_seconds) == (Disposition.COMPLETED, 16, 12.345)
    assert rig.db.leads[lead_id].status is LeadStatus.ASSIGNED
    # Sent to a manager whose phone rang, never put through: the client hung up (cause 16).
    call = rig.call(left)
    assert (call.disposition, call.ended_at) == (Disposition.ABANDONED, bridged_at + timedelta(seconds=3))
    assert rig.board.free_count == 2


async def test_calls_a_pbx_restart_ended_during_a_gap_cost_no_attempt(rig: Rig) -> None:
    """FullyBooted's Uptime shows the PBX restarted while we were away: that ended the calls."""
    lead_id = await rig.lead(phone="+79161234560")
    (holding,) = await rig.dialled(1)
    rig.dialer.pbx_event(OriginateResult(holding, OriginateOutcome.ANSWERED))
    await rig.settle()
    rig.clock.advance(30)
    rig.dialer.pbx_event(PbxBooted(uptime=10))  # up for 10 s: it restarted 20 s after the dial
    await rig.dialer.pbx_connected()  # the listing no longer has the client
    await rig.settle()
    call = rig.call(holding)
    assert call.disposition is Disposition.PBX_FAILED and call.pbx_failure is not None
    assert "restarted" in call.pbx_failure
    lead = rig.db.leads[lead_id]
    assert lead.attempts == 0 and lead.status is LeadStatus.NEW  # the attempt is given back: due again soon


async def test_a_pbx_up_since_before_the_call_leaves_a_vanished_call_unobserved(rig: Rig) -> None:
    await rig.lead(phone="+79161234560")
    (holding,) = await rig.dialled(1)
    rig.dialer.pbx_event(OriginateResult(holding, OriginateOutcome.ANSWERED))
    await rig.settle()
    rig.clock.advance(30)
    rig.dialer.pbx_event(PbxBooted(uptime=3600))  # no restart: the client may have hung up unheard
    await rig.dialer.pbx_connected()
    await rig.settle()
    assert rig.call(holding).disposition is Disposition.ENDED_UNOBSERVED


async def test_after_a_restart_live_calls_are_adopted_and_finish_normally() -> None:
    async with make_rig(plan()) as first:
        lead_id = await first.lead(phone="+79161234560")
        await first.lead(phone="+79161234561")
        alive, gone = await first.dialled(2)
        for channel in (alive, gone):
            first.dialer.pbx_event(OriginateResult(channel, OriginateOutcome.ANSWERED))
        await first.settle()
        assert len(first.pbx.of_kind("connect")) == 2
        first.dialer.pbx_event(DialEnded(alive, DialOutcome.ANSWER))
        first.dialer.pbx_event(Bridged(alive))
        await first.settle()
        db, pbx = first.db, first.pbx
    pbx.lists(alive, LegStage.BRIDGED, "101")
    async with make_rig(plan(), db=db, pbx=pbx) as second:
        await second.settle()
        assert second.call(gone).disposition is Disposition.ENDED_UNOBSERVED
        assert second.call(alive).state is CallState.BRIDGED
        assert second.board.free_count == 1  # the adopted call keeps its manager busy
        second.clock.advance(40)
        second.dialer.pbx_event(HungUp(alive, 16))
        await second.settle()
        assert second.call(alive).disposition is Disposition.COMPLETED
        assert db.leads[lead_id].status is LeadStatus.ASSIGNED and db.leads[lead_id].owner_id == "m0"
        assert second.board.free_count == 2


async def test_calls_taken_over_by_a_listing_the_link_cut_short_are_adopted_by_the_next_one() -> None:
    async with make_rig(plan()) as first:
        lead_id = await first.lead()
        (channel,) = await first.dialled()
        await first.answered(channel)
        await first.bridge(channel)
        bridged_at = first.call(channel).bridged_at
        assert bridged_at is not None
        db, pbx = first.db, first.pbx
    # The call ended while no daemon ran; the restarted one takes it over (a commit), then the link
    # goes while it asks the PBX how the call ended: that listing is never applied.
    pbx.ended[channel] = CallEndRecord(channel, bridged_at + timedelta(seconds=20), 16, talked=True)
    pbx.call_end_error = PbxNoAnswer("connection lost before CDR listing was answered")
    pbx.connected = False
    async with make_rig(plan(), db=db, pbx=pbx) as second:
        await second.settle()
        assert second.call(channel).state is CallState.BRIDGED
        pbx.call_end_error, pbx.connected = None, True
        second.clock.advance(60)
        second.dialer.pbx_disconnected()
        await second.dialer.pbx_connected()  # the next login: nobody else would ever take it over
        await second.settle()
        call = second.call(channel)
        assert (call.disposition, call.talk_seconds) == (Disposition.COMPLETED, 20)
        assert db.leads[lead_id].status is LeadStatus.ASSIGNED
        assert second.board.free_count == 2


async def test_a_caller_taken_while_a_listing_is_under_way_is_not_closed_by_it() -> None:
    async with make_rig(plan(2), inbound_numbers=frozenset({"74951234567"})) as rig:

        async def calls_in() -> None:  # just after the PBX answered the listing, a client calls
            rig.pbx.after_listing = None
            rig.dialer.pbx_event(InboundCall("trunk-1;7", "74951234567", "79161234561"))
            await rig.settle()

        rig.pbx.after_listing = calls_in
        await rig.dialer.pbx_connected()  # as after a relogin, or a dial deadline's recheck
        await rig.settle()
        (call,) = [call for call in rig.db.calls.values() if call.channel_id == "trunk-1;7"]
        assert rig.connected() == ["101"]  # m0's phone rings for him
        assert call.state is CallState.CONNECTING
        assert not rig.board.is_free("m0")


async def test_a_restarted_daemon_adopts_the_call_of_a_manager_dropped_from_routing_meanwhile() -> None:
    async with make_rig(plan()) as first:
        lead_id = await first.lead()
        (channel,) = await first.dialled()
        await first.answered(channel)
        await first.bridge(channel)
        db, pbx = first.db, first.pbx
    pbx.lists(channel, LegStage.BRIDGED, "101")
    _, m1 = team(2)  # ops took m0 out of routing.yaml before the restart; he still talks
    async with make_rig(RoutingPlan((m1,), (SCENARIO,)), db=db, pbx=pbx) as second:
        await second.settle()
        assert second.call(channel).state is CallState.BRIDGED
        await second.lead(phone="+79161234569")
        assert len(await second.dialled(2)) == 2  # the restarted daemon dials: its listing was applied
        second.clock.advance(40)
        second.dialer.pbx_event(HungUp(channel, 16))
        await second.settle()
        assert second.call(channel).disposition is Disposition.COMPLETED
        assert db.leads[lead_id].owner_id == "m0"


async def test_a_call_ending_makes_room_for_the_next_lead() -> None:
    async with make_rig(plan(1)) as rig:
        await rig.lead(phone="+79161234560")
        await rig.lead(phone="+79161234561")
        (first,) = await rig.dialled(1)
        rig.dialer.pbx_event(OriginateResult(first, OriginateOutcome.NO_ANSWER))
        _, second = await rig.dialled(2)
        assert second != first


class FailingClock(ManualClock):
    """A clock that breaks when told to: something nobody planned for, inside the dialer's loop."""

    failing = False

    def now(self) -> datetime:
        if self.failing:
            raise RuntimeError("the clock broke")
        return super().now()


async def test_idle_raises_once_the_dialer_has_died_instead_of_waiting_forever() -> None:
    clock = FailingClock()
    with pytest.raises(ExceptionGroup) as died:
        async with make_rig(plan(), clock=clock) as rig:
            clock.failing = True
            rig.dialer.pbx_event(PbxBooted())  # applying it reads the clock: the event loop dies
            with pytest.raises(DialerStopped):
                await asyncio.wait_for(rig.dialer.idle(), 5)
    assert died.group_contains(RuntimeError, match="the clock broke")


async def test_idle_raises_once_the_dialer_was_stopped() -> None:
    async with make_rig(plan()) as rig:
        await rig.lead()
        rig.running.cancel()
        await asyncio.wait({rig.running})
        rig.dialer.pbx_event(PbxBooted())  # nobody is left to apply it
        with pytest.raises(DialerStopped):
            await asyncio.wait_for(rig.dialer.idle(), 5)


class _SlowClaims:
    """SqlUnitOfWork whose claims store their calls slowly, as round trips to a busy server do;
    ``claiming`` is set while one is under way."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.claiming = asyncio.Event()

    def __call__(self) -> _SlowClaim:
        return _SlowClaim(SqlUnitOfWork(self._db), self.claiming)


class _SlowClaim:
    def __init__(self, inner: SqlUnitOfWork, claiming: asyncio.Event) -> None:
        self._inner = inner
        self._claiming = claiming

    async def __aenter__(self) -> SqlUnitOfWork:
        uow = await self._inner.__aenter__()
        add = uow.calls.add

        async def slow_add(new: Sequence[Call]) -> None:
            self._claiming.set()
            await asyncio.sleep(0.2)
            self._claiming.clear()
            await add(new)

        uow.calls.add = slow_add  # type: ignore[method-assign]
        return uow

    async def __aexit__(self, *exc: object) -> None:
        await self._inner.__aexit__(*exc)


async def test_a_claim_under_way_holds_its_room_against_the_intakes(db: Database) -> None:
    # On PostgreSQL nothing serialises a dispatch pass's claim and the intake's (SQLite's one writer does).
    uow = _SlowClaims(db)
    async with make_rig(plan(1), uow=uow) as rig:
        rig.dialer.pbx_event(ExtensionState("101", DeviceState.IN_USE))  # a personal call: no room
        await rig.lead(phone="+79161234560")  # stored, waits for room
        assert rig.originated() == []
        rig.dialer.pbx_event(ExtensionState("101", DeviceState.FREE))
        await asyncio.wait_for(uow.claiming.wait(), 5)  # the dispatch pass is claiming it
        await rig.lead(phone="+79161234561")  # the intake's own claim meanwhile
        await rig.settle()
        assert len(rig.originated()) == 1  # one client rung for the one free manager


async def test_a_client_who_answers_while_the_database_refuses_writes_is_put_through(rig: Rig) -> None:
    await rig.lead(phone="+79161234560")
    await rig.lead(phone="+79161234561")
    first, second = await rig.dialled(2)
    rig.db.refused, rig.db.refusals = CallAnswered, 1  # the flush of the first answer fails
    rig.dialer.pbx_event(OriginateResult(first, OriginateOutcome.ANSWERED))
    await wait_until(lambda: rig.db.refusals == 0, 5, "the flush refused")
    committed = rig.db.commits
    rig.dialer.pbx_event(OriginateResult(second, OriginateOutcome.ANSWERED))
    await wait_until(lambda: len(rig.pbx.of_kind("connect")) == 2, 5, "the second client put through too")
    assert rig.db.commits == committed  # not held until the database took a write again
    await rig.settle()  # the next try commits both answers
    assert rig.call(first).state is CallState.CONNECTING and rig.call(second).state is CallState.CONNECTING


async def test_a_claim_whose_commit_failed_gives_its_room_back() -> None:
    async with make_rig(plan(1)) as rig:
        rig.db.refused, rig.db.refusals = LeadCreated, 1  # the intake's transaction, its claim in it
        with pytest.raises(OSError):
            await rig.lead(phone="+79161234560")
        await rig.lead(phone="+79161234561")
        assert len(await rig.dialled(1)) == 1  # the one manager's room was not kept for the claim


async def test_idle_also_waits_for_a_real_database(db: Database) -> None:
    # SQLite answers from a worker thread, many turns of the event loop later: idle() must not
    # return while a claim or a commit is still on its way, which the in-memory fakes never show.
    async with make_rig(plan(1), uow=lambda: SqlUnitOfWork(db)) as rig:
        first_lead = await rig.lead(phone="+79161234560")
        second_lead = await rig.lead(phone="+79161234561")
        (first,) = await rig.dialled(1)
        rig.dialer.pbx_event(OriginateResult(first, OriginateOutcome.BUSY))
        _, second = await rig.dialled(2)  # the ended call made room: a claim on the database
        rig.dialer.pbx_event(OriginateResult(second, OriginateOutcome.ANSWERED))
        await rig.settle()  # the redirect is answered long before the commit that records it
        assert rig.pbx.of_kind("connect") == [("connect", second, "101")]
        # Read as the API does, without queueing behind the dialer's writes.
        queries = SqlQueries(db)
        found = await queries.lead_with_calls(first_lead)
        assert found is not None
        lead, (ended,) = found
        assert ended.channel_id == first and ended.disposition is Disposition.BUSY
        assert lead.status is LeadStatus.SCHEDULED
        found = await queries.lead_with_calls(second_lead)
        assert found is not None
        _, (connecting,) = found
        assert connecting.channel_id == second and connecting.state is CallState.CONNECTING


# -- the PBX failing, the link dropping, the daemon away ----------------------------------


async def test_an_originate_the_pbx_refuses_costs_no_attempt_and_is_dialled_again_soon(rig: Rig) -> None:
    rig.pbx.originate_error = PbxError("Originate: Asterisk is shutting down")
    lead_id = await rig.lead()
    (channel,) = await rig.dialled()
    call = rig.call(channel)
    assert call.disposition is Disposition.PBX_FAILED
    assert call.pbx_failure == "Originate: Asterisk is shutting down"
    lead = rig.db.leads[lead_id]
    assert (lead.status, lead.attempts, lead.last_disposition) == (LeadStatus.NEW, 0, Disposition.PBX_FAILED)
    assert lead.next_attempt_at == rig.clock.now() + timedelta(seconds=PBX_RETRY_DELAY)
    assert rig.dialer.pbx_failures == 1 and rig.dialer.breaker_state == "closed"  # one failure does not trip it
    rig.pbx.originate_error = None
    rig.clock.advance(PBX_RETRY_DELAY)
    _, again = await rig.dialled(2)
    assert rig.call(again).attempt == 1 and rig.db.leads[lead_id].attempts == 1


async def test_an_originate_that_never_left_the_daemon_releases_its_claim(rig: Rig) -> None:
    rig.pbx.originate_error = PbxNotSent("Originate not sent: AMI is not connected")
    lead_id = await rig.lead()
    (channel,) = await rig.dialled()
    assert rig.call(channel).pbx_failure == "not sent: Originate not sent: AMI is not connected"
    assert rig.db.leads[lead_id].attempts == 0
    await rig.lead(phone="+79161234561")
    await rig.dialled(2)  # nothing reached the PBX, so the breaker counted nothing
    assert rig.dialer.breaker_state == "closed"


async def test_an_originate_that_cannot_be_built_fails_that_call_alone_and_its_lead_is_still_taken() -> None:
    # routing.yaml refuses such a caller-name template; a plan made in code does not, and its render
    # raises where the Originate is built: right after the intake's commit, with the batch's others.
    bad = scenario("bad", caller_name="{name:d}", match=Match(sources=Patterns.of(["bad"])))
    async with make_rig(RoutingPlan(team(2), (bad, scenario("default")))) as rig:
        lead_id = await rig.lead(source="bad")  # answered as stored: a 201 stays a 201
        await rig.settle()
        (call,) = rig.db.calls.values()
        assert call.disposition is Disposition.PBX_FAILED and call.pbx_failure is not None
        assert call.pbx_failure.startswith("not sent: not built: ValueError(")
        assert rig.db.leads[lead_id].attempts == 0 and rig.dialer.breaker_state == "closed"
        await rig.lead(phone="+79161234561")  # the others dial as ever
        await rig.dialled(1)


async def _claimed_in(uow: FakeUnitOfWork, rig: Rig) -> tuple[Lead, Claimed]:
    """A new lead added in ``uow`` and claimed there as the intake claims one, its Originate built."""
    lead = Lead(phone="+79161234567", name="", source="web", external_id=None, payload={}, created_at=rig.clock.now())
    await uow.leads.add([lead])
    claimed = await rig.dialer.claim_new(uow, rig.clock.now(), [lead])
    assert claimed is not None
    claimed.prepare()
    return lead, claimed


async def test_the_intake_s_claimed_originates_are_built_while_it_commits_and_sent_once_after(rig: Rig) -> None:
    """claim_new hands the intake what to run beside its commit (the Originates built) and after it
    (each sent, once): nothing reaches the PBX before the transaction committed."""
    async with FakeUnitOfWork(rig.db) as uow:
        lead, claimed = await _claimed_in(uow, rig)
        (channel,) = rig.pbx.built
        assert not [action for action in rig.pbx.actions if action[0] == "originate"]
        await uow.commit()
    claimed.committed()
    assert [action for action in rig.pbx.actions if action[0] == "originate"] == [("originate", channel, lead.phone)]
    assert rig.pbx.built == [channel]  # sent as built, not built again
    await rig.settle()


async def test_the_intake_s_originate_leaves_from_the_committing_thread_once_and_the_call_goes_on() -> None:
    """Where the commit runs on a thread of its own (SQLite), the intake's Originates leave from there
    (UnitOfWork.commit's ``then``); the loop's send after it writes nothing more, and the call is the
    dialer's as any other: answered, the client is bridged."""
    async with make_rig(plan(), db=FakeDb(commits_then=True)) as rig:
        await rig.lead()
        (channel,) = await rig.dialled()
        assert rig.pbx.off_loop == [channel]
        rig.dialer.pbx_event(OriginateResult(channel, OriginateOutcome.ANSWERED))
        await rig.settle()
        assert rig.pbx.of_kind("connect") == [("connect", channel, "101")]
        assert rig.originated() == [channel]


async def test_what_the_pbx_says_of_a_call_before_the_loop_registered_it_is_applied_once_it_did() -> None:
    """An Originate written from the committing thread may be answered, and the answer read and
    drained by the dialer's event task, before the intake's task resumes to register the call:
    what was said meanwhile is held, then applied (here a channel the PBX could not create)."""
    async with make_rig(plan(), db=FakeDb(commits_then=True)) as rig:
        rig.pbx.on_off_loop = lambda channel: rig.dialer.pbx_event(
            OriginateResult(channel, OriginateOutcome.PBX_FAILED)
        )
        lead_id = await rig.lead()
        (channel,) = await rig.dialled()
        assert rig.pbx.off_loop == [channel]
        assert rig.call(channel).disposition is Disposition.PBX_FAILED
        assert rig.db.leads[lead_id].status is LeadStatus.NEW and rig.dialer.pbx_failures == 1


async def test_what_the_pbx_said_of_a_call_before_it_was_registered_is_applied_in_the_order_it_came() -> None:
    async with make_rig(plan(), db=FakeDb(commits_then=True)) as rig:

        def answered_then_gone(channel: str) -> None:
            rig.dialer.pbx_event(OriginateResult(channel, OriginateOutcome.ANSWERED))
            rig.dialer.pbx_event(HungUp(channel, 16))

        rig.pbx.on_off_loop = answered_then_gone
        await rig.lead()
        (channel,) = await rig.dialled()
        assert len(rig.pbx.of_kind("connect")) == 1  # answered first: sent to a manager, then hung up
        assert rig.call(channel).state is CallState.ENDED


async def test_an_intake_claim_given_up_before_its_originates_were_let_out_never_lets_them_out(rig: Rig) -> None:
    """The committing thread lets the Originates out only while the intake has not given its claim
    up (a commit that raised on the loop): in the other order the thread sends nothing."""
    async with FakeUnitOfWork(rig.db) as uow:
        _, claimed = await _claimed_in(uow, rig)
        claimed.abandoned()  # the loop first
        claimed.send()  # the thread, late
    assert rig.pbx.off_loop == [] and rig.originated() == []
    assert rig.dialer.live_calls == 0


async def test_an_originate_that_left_from_the_committing_thread_is_the_dialer_s_though_the_wait_was_cancelled() -> (
    None
):
    """The intake's commit may raise on the loop after it succeeded and the Originate left from the
    committing thread (here its wait is cancelled after ``then``, as the fake lets it): the call is
    the dialer's all the same (registered, its events applied), not given up as uncommitted."""
    async with make_rig(plan(), db=FakeDb(commits_then=True)) as rig:
        writer: list[asyncio.Task[object]] = []

        def cancel_the_intake(_channel: str) -> None:
            task = asyncio.current_task()  # the intake's writer, in its commit's ``then``
            assert task is not None
            writer.append(task)
            task.cancel()

        rig.pbx.on_off_loop = cancel_the_intake
        with pytest.raises(asyncio.CancelledError):
            await rig.lead()
        (channel,) = rig.originated()
        assert writer and writer[0].cancelled()
        rig.dialer.pbx_event(OriginateResult(channel, OriginateOutcome.ANSWERED))
        await rig.settle()
        assert rig.pbx.of_kind("connect") == [("connect", channel, "101")]
        assert rig.originated() == [channel]


async def test_pbx_failures_open_the_breaker_and_one_probe_closes_it() -> None:
    async with make_rig(plan(3), breaker=BREAKER) as rig:
        rig.pbx.originate_error = PbxError("Originate: Asterisk is shutting down")
        await rig.lead(phone="+79161234560")
        await rig.lead(phone="+79161234561")
        await rig.dialled(2)  # the two failures trip it
        assert rig.dialer.breaker_state == "open" and rig.dialer.pbx_failures == 2
        third = await rig.lead(phone="+79161234562")  # intake goes on while the breaker is open
        rig.clock.advance(PBX_RETRY_DELAY)
        await rig.dialled(2)
        rig.pbx.originate_error = None
        rig.clock.advance(BREAKER.pause)
        *_, probe = await rig.dialled(3)  # one dial only, of the lead due longest
        assert rig.call(probe).lead_id == third and rig.dialer.breaker_state == "probing"
        rig.dialer.pbx_event(OriginateResult(probe, OriginateOutcome.ANSWERED))
        await rig.dialled(5)  # the PBX dialled the client: everyone else follows
        assert rig.dialer.breaker_state == "closed"
        assert all(lead.attempts == 1 for lead in rig.db.leads.values())


async def test_the_link_down_stops_dials_until_the_pbx_is_booted_and_listed_again(rig: Rig) -> None:
    rig.dialer.pbx_disconnected()
    await rig.lead()
    await rig.dialled(0)
    assert rig.dialer.breaker_state == "open"
    await rig.dialer.pbx_connected()  # logged in again, but FullyBooted not heard yet
    await rig.dialled(0)
    rig.dialer.pbx_event(PbxBooted())
    await rig.dialled(1)
    assert rig.dialer.breaker_state == "closed"


async def test_a_pbx_shutting_down_stops_dials_before_its_link_closes(rig: Rig) -> None:
    rig.dialer.pbx_event(PbxShuttingDown(restart=True))
    await rig.lead()
    await rig.dialled(0)
    assert rig.dialer.breaker_state == "open"


async def test_an_originate_whose_answer_the_link_lost_is_found_by_its_channel_id_never_resent(rig: Rig) -> None:
    rig.pbx.originate_error = PbxNoAnswer("connection lost before Originate was answered")
    lead_id = await rig.lead()
    (channel,) = await rig.dialled()
    assert rig.call(channel).state is CallState.DIALING  # not written off: the PBX may have it
    rig.pbx.originate_error = None
    rig.pbx.lists(channel, LegStage.ON_HOLD)  # it had it, and the client answered meanwhile
    rig.dialer.pbx_disconnected()
    await rig.dialer.pbx_connected()
    rig.dialer.pbx_event(PbxBooted())
    await rig.dialled(1)
    assert rig.pbx.of_kind("connect") == [("connect", channel, "101")]
    assert rig.call(channel).state is CallState.CONNECTING
    assert [event.type for event in rig.db.outbox if event.type != "manager.state"][-1] == "call.answered"
    assert rig.db.leads[lead_id].attempts == 1


async def test_an_originate_whose_answer_the_link_lost_and_the_pbx_never_had_costs_no_attempt(rig: Rig) -> None:
    rig.pbx.originate_error = PbxNoAnswer("connection lost before Originate was answered")
    lead_id = await rig.lead()
    (channel,) = await rig.dialled()
    rig.pbx.originate_error = None
    rig.clock.advance(10)  # the listing of the next login comes well after the Originate
    await rig.dialer.pbx_connected()
    await rig.settle()
    call = rig.call(channel)
    assert call.disposition is Disposition.PBX_FAILED and call.pbx_failure is not None
    assert "no such call" in call.pbx_failure
    assert rig.db.leads[lead_id].attempts == 0


async def test_the_dial_deadline_asks_the_pbx_and_a_client_who_answered_unheard_is_put_through(rig: Rig) -> None:
    lead_id = await rig.lead()
    (channel,) = await rig.dialled()
    rig.pbx.lists(channel, LegStage.ON_HOLD)  # its OriginateResponse was lost
    rig.clock.advance(60)
    await rig.dialled(1)  # looked for, not written off and dialled again
    assert rig.pbx.listings == 2
    assert rig.pbx.of_kind("connect") == [("connect", channel, "101")]
    assert rig.db.leads[lead_id].status is LeadStatus.DIALING


async def test_the_dial_deadline_closes_a_call_the_pbx_does_not_have_without_costing_an_attempt(rig: Rig) -> None:
    lead_id = await rig.lead()
    (channel,) = await rig.dialled()
    rig.clock.advance(60)
    await rig.settle()
    assert rig.call(channel).disposition is Disposition.LOST_TRACK
    assert rig.db.leads[lead_id].attempts == 0


async def test_after_a_restart_a_client_who_answered_meanwhile_is_put_through_not_dialled_again() -> None:
    async with make_rig(plan()) as first:
        lead_id = await first.lead()
        (channel,) = await first.dialled()
        db, pbx = first.db, first.pbx
    pbx.lists(channel, LegStage.ON_HOLD)  # the client answered while the daemon was down
    async with make_rig(plan(), db=db, pbx=pbx) as second:
        await second.dialled(1)
        assert pbx.of_kind("connect") == [("connect", channel, "101")]
        call = second.call(channel)
        assert call.state is CallState.CONNECTING and call.answered_at is not None
        second.dialer.pbx_event(DialEnded(channel, DialOutcome.ANSWER))
        second.dialer.pbx_event(Bridged(channel))
        second.dialer.pbx_event(HungUp(channel, 16))
        await second.settle()
        assert second.call(channel).disposition is Disposition.COMPLETED
        assert db.leads[lead_id].status is LeadStatus.ASSIGNED


async def test_after_a_restart_a_call_bridged_meanwhile_is_adopted_with_its_manager_as_owner() -> None:
    async with make_rig(plan()) as first:
        lead_id = await first.lead()
        (channel,) = await first.dialled()
        first.dialer.pbx_event(OriginateResult(channel, OriginateOutcome.ANSWERED))
        await first.settle()  # sent to m0 (101)
        db, pbx = first.db, first.pbx
    pbx.lists(channel, LegStage.BRIDGED, "101")
    async with make_rig(plan(), db=db, pbx=pbx) as second:
        await second.settle()
        assert second.call(channel).state is CallState.BRIDGED
        assert db.leads[lead_id].owner_id == "m0"
        assert "m0" not in offered(second.board, now=second.clock.now())


async def test_phones_that_went_idle_during_a_gap_are_free_after_the_relisting(rig: Rig) -> None:
    for extension in ("101", "102"):
        rig.dialer.pbx_event(ExtensionState(extension, DeviceState.IN_USE))
    await rig.settle()
    assert rig.board.free_count == 0
    rig.pbx.devices = {"102": DeviceState.IN_USE}  # 101 hung up while nobody listened
    rig.dialer.pbx_disconnected()
    await rig.dialer.pbx_connected()
    rig.dialer.pbx_event(PbxBooted())
    await rig.settle()
    assert offered(rig.board, now=rig.clock.now()) == ["m0"]


async def test_call_times_are_the_pbxs_stamps_when_its_clock_agrees_with_ours(rig: Rig) -> None:
    """manager.conf timestampevents: durations come from the PBX, not from when the loop read them."""
    await rig.lead()
    (channel,) = await rig.dialled()
    started = rig.clock.now()
    rig.clock.advance(4)  # read 4 s after the dial; the PBX says the client answered after 3
    rig.dialer.pbx_event(OriginateResult(channel, OriginateOutcome.ANSWERED, at=started + timedelta(seconds=3)))
    await rig.settle()
    rig.clock.advance(10)
    rig.dialer.pbx_event(DialEnded(channel, DialOutcome.ANSWER))
    rig.dialer.pbx_event(Bridged(channel, at=started + timedelta(seconds=12)))
    rig.dialer.pbx_event(HungUp(channel, 16, at=started + timedelta(seconds=13.5)))
    await rig.settle()
    call = rig.call(channel)
    assert (call.ring_seconds, call.hold_seconds, call.talk_seconds) == (3, 9, 1.5)


async def test_stamps_from_a_pbx_clock_out_of_step_give_way_to_ours(rig: Rig) -> None:
    await rig.lead(phone="+79161234561")
    await rig.lead(phone="+79161234562")
    first, second = await rig.dialled(2)
    rig.clock.advance(3)
    now = rig.clock.now()
    # A PBX ten minutes behind, and one an hour ahead: neither is the moment of the event.
    rig.dialer.pbx_event(OriginateResult(first, OriginateOutcome.BUSY, at=now - timedelta(minutes=10)))
    rig.dialer.pbx_event(OriginateResult(second, OriginateOutcome.ANSWERED, at=now + timedelta(hours=1)))
    await rig.settle()
    busy, answered = rig.call(first), rig.call(second)
    assert busy.ended_at == now and busy.ring_seconds == 3
    assert answered.answered_at == now
    # The retry is scheduled from our clock, not from a stamp in the past.
    lead = rig.db.leads[busy.lead_id]
    assert lead.next_attempt_at == now + timedelta(seconds=SCENARIO.retry_delays[0])


async def test_a_client_answering_while_the_link_is_down_waits_and_no_manager_is_marked_failed(rig: Rig) -> None:
    await rig.lead()
    (channel,) = await rig.dialled()
    rig.pbx.connected = False
    rig.dialer.pbx_disconnected()
    rig.dialer.pbx_event(OriginateResult(channel, OriginateOutcome.ANSWERED))  # read just before the drop
    await rig.settle()
    # No Redirect could be sent, so none was tried, and no manager is charged with a missed call.
    assert rig.pbx.of_kind("connect") == [] and rig.call(channel).legs == []
    rig.pbx.connected = True
    rig.pbx.lists(channel, LegStage.ON_HOLD)
    rig.dialer.pbx_event(PbxBooted())
    await rig.dialer.pbx_connected()
    await rig.settle()
    assert rig.pbx.of_kind("connect") == [("connect", channel, "101")]  # put through after the login


async def test_a_new_lead_is_claimed_in_the_transaction_that_stores_it(rig: Rig) -> None:
    await rig.settle()
    commits = rig.db.commits
    lead_id = await rig.lead()
    # By the time the intake answers, the lead is stored already dialing, its call and both
    # events in the same commit, and its Originate is on its way: no dispatch pass was needed.
    assert rig.db.commits == commits + 1
    assert rig.db.leads[lead_id].status is LeadStatus.DIALING and rig.db.leads[lead_id].attempts == 1
    assert [event.type for event in rig.db.outbox] == ["lead.created", "call.dialing"]
    (channel,) = await rig.dialled()
    assert rig.call(channel).lead_id == lead_id


async def test_a_burst_beyond_the_free_managers_claims_only_as_many_and_the_rest_waits(rig: Rig) -> None:
    await rig.settle()
    ids = await asyncio.gather(*(rig.lead(phone=f"+7916123456{n}") for n in range(5)))
    await rig.settle()
    # Two free managers: two dialled (the oldest), three left due for when a manager frees up.
    assert len(rig.originated()) == 2
    assert [rig.db.leads[lead_id].status for lead_id in sorted(ids)] == [LeadStatus.DIALING] * 2 + [LeadStatus.NEW] * 3


async def test_while_the_breaker_is_open_the_intake_stores_a_lead_without_claiming_it() -> None:
    async with make_rig(plan(3), breaker=BREAKER) as rig:
        rig.pbx.originate_error = PbxError("Originate: Asterisk is shutting down")
        await rig.lead(phone="+79161234560")
        await rig.lead(phone="+79161234561")
        await rig.dialled(2)
        assert rig.dialer.breaker_state == "open"
        lead_id = await rig.lead(phone="+79161234562")
        await rig.settle()
        assert rig.db.leads[lead_id].status is LeadStatus.NEW and len(rig.originated()) == 2


async def test_a_pbx_dialer_leaves_other_pbxes_leads_and_hands_over_what_it_claimed_of_theirs() -> None:
    # m0 on north (the default), m1 on south; this is the north PBX's dialer.
    managers = (Manager("m0", "Manager 0", "101"), Manager("m1", "Manager 1", "101", pbx="south"))
    south = scenario("south", "m1", pbx="south", match=Match(sources=Patterns.of(["south"])))
    anyone = scenario("anyone", owner_first=OwnerFirst(wait=10), duplicate_window=0.0)
    async with make_rig(RoutingPlan(managers, (south, anyone), pbxes=("north", "south")), on_pbx="north") as rig:
        theirs = await rig.lead(source="south")
        await rig.settle()
        assert rig.db.leads[theirs].pbx == "south"
        assert rig.originated() == [] and rig.db.leads[theirs].status is LeadStatus.NEW  # left to the south's dialer

        # Stored before its scenario was the south's (a reload, a time rule): claimed, then handed over.
        rig.db.leads[theirs].pbx = None
        rig.dialer.leads_added()
        await rig.settle()
        handed = rig.db.leads[theirs]
        assert (handed.pbx, handed.status, handed.attempts) == ("south", LeadStatus.NEW, 0)

        # A repeat lead of a pool on both PBXes is dialled where its owner's phone is.
        rig.db.leads[theirs].owner_id = "m1"
        repeat = await rig.lead(source="site")
        await rig.settle()
        assert (rig.db.leads[repeat].pbx, rig.db.leads[repeat].attempts) == ("south", 0)
        assert rig.originated() == []
        # One of its own is dialled here as ever.
        await rig.lead(phone="+79161234599", source="site")
        (channel,) = await rig.dialled()
        assert rig.call(channel).pbx == "north"
