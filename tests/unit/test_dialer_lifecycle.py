"""The dialer applying the lifecycle rules on in-memory ports and a clock the test moves:
retries per outcome across a restart, leads outside their call window, SLA release."""

from __future__ import annotations

import asyncio
from datetime import datetime
from zoneinfo import ZoneInfo

from router import events as ev
from router.call_window import CallWindow
from router.model import CallState, LeadStatus
from router.pacing import Pacing, PacingMode
from router.pbx_events import OriginateOutcome, OriginateResult
from router.retries import RetryRule
from router.routing import OwnerFirst, RoutingPlan, Scenario
from router.sla import SlaPolicy
from tests.fakes import ManualClock
from tests.router.plans import scenario
from tests.unit.dialer_rig import make_rig, team

HOUR = 3600.0
MOSCOW = ZoneInfo("Europe/Moscow")
LANDLINE = "+74951234567"  # Moscow: one zone


def plan(chosen: Scenario, managers: int = 2) -> RoutingPlan:
    return RoutingPlan(team(managers), (chosen,))


async def test_a_busy_retry_keeps_its_own_delay_across_a_restart() -> None:
    rules = scenario(retries=(("busy", RetryRule(max_attempts=4, delays=(120,))),), retry_delays=(900,))
    async with make_rig(plan(rules)) as first:
        lead_id = await first.lead()
        (channel,) = await first.dialled()
        first.dialer.pbx_event(OriginateResult(channel, OriginateOutcome.BUSY))
        await first.settle()
        due = first.db.leads[lead_id].next_attempt_at
        assert (
            due is not None and (due - first.clock.now()).total_seconds() == 120
        )  # the busy rule's, not retry_delays' 900
        db, pbx, clock = first.db, first.pbx, first.clock
    async with make_rig(plan(rules), db=db, pbx=pbx, clock=clock) as second:
        second.clock.advance(119)
        await second.dialled(1)  # nothing new yet
        second.clock.advance(1)
        await second.dialled(2)


async def test_a_retry_due_after_closing_is_dialled_at_the_opening_not_at_night() -> None:
    windowed = scenario(retry_delays=(HOUR,), call_window=CallWindow(zone=MOSCOW))  # 09:00-21:00
    evening = datetime(2026, 11, 24, 20, 30, tzinfo=MOSCOW)
    async with make_rig(plan(windowed), clock=ManualClock(evening)) as rig:
        lead_id = await rig.lead(phone=LANDLINE)
        (channel,) = await rig.dialled()
        rig.dialer.pbx_event(OriginateResult(channel, OriginateOutcome.NO_ANSWER))
        await rig.settle()
        assert rig.db.leads[lead_id].next_attempt_at == datetime(2026, 11, 25, 9, 0, tzinfo=MOSCOW)
        rig.clock.advance(12.5 * HOUR - 1)  # 08:59:59
        await rig.dialled(1)
        rig.clock.advance(1)
        await rig.dialled(2)


async def test_a_lead_outside_its_window_when_claimed_is_deferred_with_its_attempt_given_back() -> None:
    # The window is added by a reload after the lead was stored due at once (at 22:00).
    night = datetime(2026, 11, 24, 22, 0, tzinfo=MOSCOW)
    async with make_rig(plan(scenario(), managers=0), clock=ManualClock(night)) as rig:
        lead_id = await rig.lead(phone=LANDLINE)
        rig.reload(RoutingPlan(team(1), (scenario(call_window=CallWindow(zone=MOSCOW)),)))
        await rig.dialled(0)
        lead = rig.db.leads[lead_id]
        assert lead.status is LeadStatus.NEW and lead.attempts == 0
        assert lead.next_attempt_at == datetime(2026, 11, 25, 9, 0, tzinfo=MOSCOW)
        assert rig.events("lead.deferred") == [
            ev.LeadDeferred(lead_id=lead_id, next_attempt_at=lead.next_attempt_at, reason="call_window")
        ]
        rig.clock.advance(11 * HOUR)
        await rig.dialled(1)


async def test_a_duplicate_makes_no_second_call() -> None:
    async with make_rig(plan(scenario())) as rig:
        first = await rig.lead()
        assert await rig.lead() == first
        await rig.dialled(1)
        assert len(rig.events("lead.duplicate")) == 1 and len(rig.events("lead.created")) == 1


async def test_sla_release_at_exactly_n_hours_to_another_manager_who_is_called_with_the_client() -> None:
    sla = scenario(sla=SlaPolicy(release_after=24 * HOUR, call_new_owner=True))
    async with make_rig(plan(sla)) as rig:
        lead_id = await rig.lead()
        (channel,) = await rig.dialled()
        await rig.answered(channel)
        await rig.talk(channel, seconds=60)
        assert rig.db.leads[lead_id].owner_id == "m0"
        rig.clock.advance(24 * HOUR - 60 - 1)  # a second before the deadline
        await rig.settle()
        assert rig.events("lead.reassigned") == []
        rig.clock.advance(1)
        await rig.settle()
        assert rig.events("lead.reassigned") == [
            ev.LeadReassigned(lead_id=lead_id, owner_id="m1", previous_owner_id="m0", reason="sla", new_call=True)
        ]
        (entry,) = rig.db.history
        assert entry.details["previous_owner_id"] == "m0" and entry.details["owner_id"] == "m1"
        # The new call: the new owner is offered the client, though m0 has been free longer.
        _, again = await rig.dialled(2)
        await rig.answered(again)
        assert rig.connected() == ["101", "102"]
        await rig.talk(again)
        assert rig.db.leads[lead_id].owner_id == "m1"


async def test_a_daemon_standing_by_for_the_sla_job_releases_nothing_until_it_is_elected() -> None:
    sla = scenario(sla=SlaPolicy(release_after=60))
    async with make_rig(plan(sla), releasing=False) as rig:
        lead_id = await rig.lead()
        (channel,) = await rig.dialled()
        await rig.answered(channel)
        await rig.talk(channel, seconds=30)
        rig.clock.advance(3600)
        await rig.settle()
        assert rig.events("lead.reassigned") == [] and rig.db.leads[lead_id].owner_id == "m0"
        elected = asyncio.create_task(rig.dialer.release_overdue_leads())  # the holder died: ours now
        await asyncio.sleep(0)  # one turn: the job starts and wakes the dispatch loop
        await rig.settle()
        (released,) = rig.events("lead.reassigned")
        assert isinstance(released, ev.LeadReassigned) and released.lead_id == lead_id
        elected.cancel()
        await asyncio.wait({elected})


async def test_a_release_whose_commit_failed_moves_no_open_lead_on_the_board() -> None:
    sla = scenario(sla=SlaPolicy(release_after=60))
    async with make_rig(RoutingPlan(team(2, max_open_leads=2), (sla,))) as rig:
        lead_id = await rig.lead()
        (channel,) = await rig.dialled()
        await rig.answered(channel)
        await rig.talk(channel, seconds=30)
        rig.db.refused, rig.db.refusals = ev.LeadReassigned, 1
        rig.clock.advance(60)
        await rig.settle()
        assert rig.events("lead.reassigned") == [] and rig.db.leads[lead_id].owner_id == "m0"
        rig.clock.advance(5)  # the dispatch loop's next look after a failed pass
        await rig.settle()
        assert rig.db.leads[lead_id].owner_id == "m1"
        # m1 owns one open lead of the two he may, m0 none: both are free. Counted twice, m1 was not.
        assert rig.board.free_count == 2


async def test_the_phone_of_a_finished_lead_makes_a_new_lead_which_goes_to_its_owner_first() -> None:
    repeat = scenario(owner_first=OwnerFirst(wait=15))
    async with make_rig(plan(repeat)) as rig:
        first = await rig.lead()
        (channel,) = await rig.dialled()
        await rig.answered(channel)
        await rig.talk(channel)
        assert rig.db.leads[first].status is LeadStatus.ASSIGNED and rig.db.leads[first].owner_id == "m0"
        await rig.personal_call("101")  # m1 is now the one free longest: the pool would pick him
        second = await rig.lead()
        assert second != first and rig.events("lead.duplicate") == []
        _, again = await rig.dialled(2)
        await rig.answered(again)
        assert rig.connected() == ["101", "101"]  # the owner, m0


async def test_a_deadline_that_passed_during_the_call_releases_the_lead_within_a_minute_of_its_end() -> None:
    sla = scenario(sla=SlaPolicy(release_after=60))
    async with make_rig(plan(sla)) as rig:
        lead_id = await rig.lead()
        (channel,) = await rig.dialled()
        await rig.answered(channel)
        await rig.talk(channel, seconds=300)  # the deadline passes while they talk: not released mid-call
        rig.clock.advance(60)
        await rig.settle()
        (released,) = rig.events("lead.reassigned")
        assert isinstance(released, ev.LeadReassigned) and released.lead_id == lead_id
        assert (released.previous_owner_id, released.owner_id) == ("m0", "m1")


async def test_predictive_pacing_rings_more_clients_than_free_managers_once_few_are_seen_to_answer() -> None:
    predictive = Pacing(PacingMode.PREDICTIVE, min_sample=10, window=3600)
    async with make_rig(RoutingPlan(team(4), (scenario(max_attempts=1),), pacing=predictive)) as rig:
        for index in range(60):
            await rig.lead(phone=f"+7916100{index:04d}")
        assert len(await rig.dialled(4)) == 4  # progressive until 10 attempts have ended
        done = 0
        while done < 12:  # every third client answers and talks, the others ring out
            for channel in rig.originated()[done:]:
                if done % 3 == 0:
                    await rig.answered(channel)
                    await rig.talk(channel, seconds=30)
                else:
                    rig.dialer.pbx_event(OriginateResult(channel, OriginateOutcome.NO_ANSWER))
                    await rig.settle()
                done += 1
        ringing = [channel for channel in rig.originated()[done:] if rig.call(channel).state is CallState.DIALING]
        assert rig.board.free_count == 4 and len(ringing) > 4  # dialling ahead
        assert rig.dialer.pacing.answer_rate is not None and rig.dialer.pacing.answer_rate < 0.5
