"""The dialer under a routing plan: the scenario a lead matches, its pool and strategy, shifts,
capacity, and a reload while a client holds. In-memory ports, a clock the test moves."""

from __future__ import annotations

from router.matching import Match, Patterns
from router.pbx_events import DeviceState, ExtensionState
from router.routing import Manager, RoutingPlan, Strategy
from router.schedule import Schedule, Window
from tests.router.plans import offered, scenario
from tests.unit.dialer_rig import make_rig, team


async def test_a_lead_gets_the_scenario_its_payload_matches_and_that_scenarios_pool() -> None:
    vip = scenario("vip", "m1", match=Match(payload=(("tags", Patterns.of(["vip"])),)))
    async with make_rig(RoutingPlan(team(2), (vip, scenario()))) as rig:
        await rig.lead(tags=["vip"])
        await rig.settle()
        (channel,) = rig.originated()
        await rig.answered(channel)
        assert rig.call(channel).scenario == "vip"
        assert rig.connected() == ["102"]  # m1, though m0 has been free longer


async def test_the_scenarios_strategy_chooses_among_the_free() -> None:
    async with make_rig(RoutingPlan(team(2), (scenario(strategy=Strategy.FEWEST_CALLS),))) as rig:
        await rig.lead()
        await rig.settle()
        (first,) = rig.originated()
        await rig.answered(first)
        await rig.talk(first)
        await rig.personal_call("102")  # m0 is now free the longest, but has talked once today
        await rig.lead("+79161234568")
        await rig.settle()
        second = rig.originated()[-1]
        await rig.answered(second)
        assert rig.connected() == ["101", "102"]


async def test_nobody_is_dialled_before_the_shift_starts_and_dialling_starts_with_it() -> None:
    # The clock starts on Tuesday 09:00 UTC; the only manager starts at 09:30.
    shift = Schedule((Window(frozenset(range(7)), 9 * 60 + 30, 18 * 60),))
    async with make_rig(RoutingPlan(team(1, shift=shift), (scenario(),))) as rig:
        await rig.lead()
        await rig.settle()
        assert rig.originated() == [] and rig.board.free_count == 0
        rig.clock.advance(29 * 60)
        await rig.settle()
        assert rig.originated() == []
        rig.clock.advance(60)  # 09:30: the dialler wakes by itself for the shift
        await rig.settle()
        assert len(rig.originated()) == 1


async def test_a_manager_who_owns_his_max_of_open_leads_gets_no_more_clients() -> None:
    team = (Manager("m0", "Manager 0", "101", max_open_leads=1), Manager("m1", "Manager 1", "102"))
    async with make_rig(RoutingPlan(team, (scenario(),))) as rig:
        await rig.lead()
        await rig.settle()
        (first,) = rig.originated()
        await rig.answered(first)
        await rig.talk(first)
        assert "m0" not in offered(rig.board, now=rig.clock.now())  # he owns the lead now, and that is his max
        await rig.personal_call("102")
        await rig.lead("+79161234568")
        await rig.settle()
        await rig.answered(rig.originated()[-1])
        assert rig.connected() == ["101", "102"]


async def test_a_client_holding_through_a_reload_keeps_his_scenarios_pool() -> None:
    only = {name: scenario("s", name) for name in ("m0", "m1")}
    async with make_rig(RoutingPlan(team(2), (only["m1"],))) as rig:
        rig.dialer.pbx_event(ExtensionState("102", DeviceState.IN_USE))
        await rig.lead()
        await rig.settle()
        (channel,) = rig.originated()
        await rig.answered(channel)
        assert rig.connected() == []  # m1 is on the phone: the client holds
        rig.reload(RoutingPlan(team(2), (only["m0"],)))  # the new file sends this scenario to m0
        rig.dialer.pbx_event(ExtensionState("102", DeviceState.FREE))
        await rig.settle()
        assert rig.connected() == ["102"]  # under the rules the call started with
