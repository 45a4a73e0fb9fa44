"""The dialer and the manager's side of a call: wrap-up, missed offers, pauses, AMD's verdict."""

from __future__ import annotations

from router.model import Disposition
from router.pbx_events import DialEnded, DialOutcome, HungUp, MachineDetected
from router.routing import RoutingPlan
from tests.router.plans import scenario
from tests.unit.dialer_rig import make_rig, team


async def test_after_a_talked_call_the_manager_wraps_up_before_the_next_client_is_dialled() -> None:
    async with make_rig(RoutingPlan(team(1), (scenario(wrap_up=30),))) as rig:
        await rig.lead()
        (first,) = await rig.dialled()
        await rig.answered(first)
        await rig.talk(first, 60)
        await rig.lead(phone="+79161234568")
        await rig.dialled(1)  # m0 wraps up: nobody is free for a second client yet
        rig.clock.advance(30)
        await rig.settle()
        await rig.dialled(2)
        states = [(c.state, c.previous_state) for c in rig.db.manager_states]
        assert ("wrap_up", "on_call") in states and ("available", "wrap_up") in states


async def test_offers_let_ring_out_in_a_row_pause_the_manager_with_reason_missed() -> None:
    async with make_rig(RoutingPlan(team(1), (scenario(auto_pause_after=2, hold_limit=600),))) as rig:
        for number, phone in enumerate(("+79161234567", "+79161234568"), start=1):
            await rig.lead(phone=phone)
            channel = (await rig.dialled(number))[-1]
            await rig.answered(channel)
            rig.dialer.pbx_event(DialEnded(channel, DialOutcome.NO_ANSWER))
            rig.dialer.pbx_event(HungUp(channel, 16))  # the client gives up waiting
            await rig.settle()
        assert [(c.state, c.reason) for c in rig.db.manager_states][-1] == ("paused", "missed")
        await rig.lead(phone="+79161234569")
        await rig.dialled(2)  # paused: no client is dialled for him
        rig.dialer.resume_manager("m0")
        await rig.settle()
        await rig.dialled(3)


async def test_a_machine_is_never_sent_to_a_manager_and_ends_as_machine() -> None:
    async with make_rig(RoutingPlan(team(2), (scenario(amd=True),))) as rig:
        await rig.lead()
        await rig.lead(phone="+79161234568")
        machine, person = await rig.dialled(2)
        await rig.answered(machine)
        await rig.answered(person)
        assert rig.connected() == []  # AMD listens first
        rig.dialer.pbx_event(MachineDetected(machine, True, "MACHINE LONGGREETING-1500-1500"))
        rig.dialer.pbx_event(MachineDetected(person, False, "HUMAN HUMAN-800-800"))
        await rig.settle()
        assert [action[1] for action in rig.pbx.of_kind("connect")] == [person]
        rig.dialer.pbx_event(HungUp(machine, 16))  # the dialplan hangs the machine up
        await rig.settle()
        assert rig.call(machine).disposition is Disposition.MACHINE and rig.call(machine).legs == []
