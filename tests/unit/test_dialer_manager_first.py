"""The dialer with ``dial_order: manager_first``: a free manager's phone rings first, the client is
dialled by the dialplan once he answers, and nobody waits on hold. In-memory ports."""

from __future__ import annotations

from router.model import CallState, Disposition, LeadStatus, LegResult
from router.pbx_events import Bridged, DialEnded, DialOutcome, HungUp, LegStage, OriginateOutcome, OriginateResult
from router.routing import DialOrder, RoutingPlan
from tests.router.plans import scenario
from tests.unit.dialer_rig import Rig, make_rig, team

FIRST = scenario("default", dial_order=DialOrder.MANAGER_FIRST, managers_to_try=2)


def rung(rig: Rig) -> list[tuple[str, str]]:
    """(channel id, extension) of every Originate to a manager, in order."""
    return [(action[1], action[2]) for action in rig.pbx.of_kind("originate_manager")]


async def test_the_manager_is_rung_first_and_the_client_never_holds() -> None:
    async with make_rig(RoutingPlan(team(2), (FIRST,))) as rig:
        await rig.lead()
        await rig.dialer.idle()
        ((channel, extension),) = rung(rig)
        assert extension == "101" and rig.originated() == []  # no client leg of our own
        assert not rig.board.is_free("m0")

        await rig.answered(channel)  # the manager picked up; the dialplan dials the client
        rig.clock.advance(4)  # the client's phone rings
        rig.dialer.pbx_event(DialEnded(channel, DialOutcome.ANSWER))
        rig.dialer.pbx_event(Bridged(channel))
        await rig.dialer.idle()
        rig.clock.advance(30)
        rig.dialer.pbx_event(HungUp(channel, 16))
        await rig.dialer.idle()

        call = rig.call(channel)
        assert (call.disposition, call.manager_id, call.hold_seconds, call.talk_seconds) == (
            Disposition.COMPLETED,
            "m0",
            0.0,
            30.0,
        )
        assert [leg.result for leg in call.legs] == [LegResult.ANSWERED]
        lead = rig.db.leads[call.lead_id]
        assert (lead.status, lead.owner_id) == (LeadStatus.ASSIGNED, "m0")
        assert rig.board.is_free("m0")
        assert [action[0] for action in rig.pbx.actions] == ["originate_manager"]  # no Redirect, no hold


async def test_a_manager_who_does_not_answer_passes_the_call_to_the_next_up_to_managers_to_try() -> None:
    async with make_rig(RoutingPlan(team(3), (FIRST,))) as rig:
        await rig.lead()
        await rig.dialer.idle()
        ((first, _),) = rung(rig)
        rig.dialer.pbx_event(OriginateResult(first, OriginateOutcome.NO_ANSWER))
        await rig.dialer.idle()
        (_, (second, extension)) = rung(rig)
        assert extension == "102" and second != first  # a new channel for a new Originate
        assert rig.board.is_free("m0")

        rig.dialer.pbx_event(OriginateResult(second, OriginateOutcome.BUSY))
        await rig.dialer.idle()
        assert len(rung(rig)) == 2  # managers_to_try: 2
        call = rig.call(second)
        assert call.disposition is Disposition.MANAGER_MISSED
        assert [(leg.manager_id, leg.result) for leg in call.legs] == [
            ("m0", LegResult.NO_ANSWER),
            ("m1", LegResult.BUSY),
        ]
        lead = rig.db.leads[call.lead_id]
        assert (lead.attempts, lead.status) == (0, LeadStatus.NEW)  # the client never rang: no attempt spent
        assert rig.board.free_count == 3


async def test_a_client_who_does_not_answer_costs_the_attempt_and_frees_the_manager() -> None:
    async with make_rig(RoutingPlan(team(1), (FIRST,))) as rig:
        await rig.lead()
        await rig.dialer.idle()
        ((channel, _),) = rung(rig)
        await rig.answered(channel)
        rig.dialer.pbx_event(DialEnded(channel, DialOutcome.NO_ANSWER))
        rig.dialer.pbx_event(HungUp(channel, 16))
        await rig.dialer.idle()
        call = rig.call(channel)
        assert (call.disposition, call.answered_at, call.hold_seconds) == (Disposition.NO_ANSWER, None, None)
        lead = rig.db.leads[call.lead_id]
        assert (lead.attempts, lead.status) == (1, LeadStatus.SCHEDULED)
        assert rig.board.is_free("m0")


async def test_with_nobody_free_no_phone_rings_and_the_lead_waits_for_a_manager() -> None:
    busy_pool = scenario(dial_order=DialOrder.MANAGER_FIRST)
    async with make_rig(RoutingPlan(team(1), (busy_pool,))) as rig:
        await rig.personal_call("101")
        rig.board.reserve("m0", call_id=999)  # on another call of ours
        await rig.lead()
        await rig.dialer.idle()
        assert rung(rig) == [] and rig.originated() == []


async def test_a_listing_under_way_leaves_the_next_managers_new_channel_alone() -> None:
    async with make_rig(RoutingPlan(team(3), (FIRST,))) as rig:
        await rig.lead()
        await rig.settle()
        ((first, _),) = rung(rig)
        rig.pbx.lists(first, LegStage.RINGING, "101")
        rig.clock.advance(10)  # past the grace a just-dialled channel has in a listing

        async def rings_out() -> None:  # just after the PBX answered the listing: m1 is rung on a new channel
            rig.pbx.after_listing = None
            del rig.pbx.legs[first]
            rig.dialer.pbx_event(OriginateResult(first, OriginateOutcome.NO_ANSWER))
            await rig.settle()

        rig.pbx.after_listing = rings_out
        await rig.dialer.pbx_connected()  # as after a relogin, or a dial deadline's recheck
        await rig.settle()
        (_, (second, extension)) = rung(rig)
        assert extension == "102"
        assert rig.call(second).state is CallState.DIALING  # m1's phone rings: not closed by the older listing
        assert rig.board.is_free("m0") and not rig.board.is_free("m1")
