"""Lead and Call: what each step of a call does to its state, its durations and the lead."""

from __future__ import annotations

import pytest

from router import events as ev
from router.model import MAX_PBX_FAILURES, PBX_RETRY_DELAY, Call, CallState, Disposition, Lead, LeadStatus, LegResult
from router.pbx_events import CallEndRecord
from router.sla import SlaPolicy
from tests.router.plans import T0, at, scenario

SCENARIO = scenario("default", retry_delays=(60, 300))


def lead(**fields: object) -> Lead:
    return Lead(phone="+79161234567", name="Иван", source="site", external_id=None, payload={}, created_at=T0,
                id=7, **fields)  # fmt: skip


def call() -> Call:
    return Call(lead_id=7, attempt=1, scenario="default", channel_id="lr-1", phone="+79161234567", started_at=T0, id=3)


def holding(answered: float = 3) -> Call:
    subject = call()
    subject.client_answered(at(answered))
    return subject


# -- Lead ---------------------------------------------------------------------------------


def test_a_new_lead_is_due_at_once() -> None:
    assert lead().next_attempt_at == T0
    assert lead(status=LeadStatus.SCHEDULED).next_attempt_at is None  # a stored lead keeps what it had


def test_assigning_an_owner_reports_the_previous_one() -> None:
    subject = lead(owner_id="m1")
    assigned = subject.assign_owner("m2", call_id=3, now=at(5), sla=SlaPolicy(release_after=3600))
    assert assigned == ev.LeadAssigned(lead_id=7, call_id=3, owner_id="m2", previous_owner_id="m1")
    assert subject.owner_id == "m2" and subject.updated_at == at(5)
    assert subject.sla_due_at == at(3605)  # the new owner has until then to work it
    subject.assign_owner("m3", call_id=4, now=at(6), sla=None)
    assert subject.sla_due_at is None  # a scenario with sla_release off


def test_a_completed_attempt_assigns_the_lead_and_publishes_nothing_more() -> None:
    subject = lead(status=LeadStatus.DIALING, attempts=1)
    assert subject.finish_attempt(Disposition.COMPLETED, SCENARIO, at(100)) is None
    assert subject.status is LeadStatus.ASSIGNED and subject.last_disposition is Disposition.COMPLETED


def test_a_failed_attempt_is_retried_after_the_delay_for_that_attempt() -> None:
    subject = lead(status=LeadStatus.DIALING, attempts=1)
    scheduled = subject.finish_attempt(Disposition.BUSY, SCENARIO, at(10))
    assert subject.status is LeadStatus.SCHEDULED and subject.next_attempt_at == at(10 + 60)
    assert scheduled == ev.LeadScheduled(lead_id=7, attempts=1, next_attempt_at=at(70), last_disposition="busy")
    subject.attempts = 2
    subject.finish_attempt(Disposition.NO_ANSWER, SCENARIO, at(500))
    assert subject.next_attempt_at == at(500 + 300)


def test_the_last_retry_delay_repeats() -> None:
    rule = SCENARIO.retry_policy.rule("busy")
    assert [rule.delay(attempts) for attempts in (1, 2, 3, 4)] == [60, 300, 300, 300]


def test_the_last_allowed_attempt_fails_the_lead() -> None:
    subject = lead(status=LeadStatus.DIALING, attempts=3)
    failed = subject.finish_attempt(Disposition.NO_MANAGER, SCENARIO, at(10))
    assert failed == ev.LeadFailed(lead_id=7, attempts=3, last_disposition="no_manager", final_state="failed")
    assert subject.status is LeadStatus.FAILED


@pytest.mark.parametrize("disposition", [Disposition.PBX_FAILED, Disposition.LOST_TRACK])
def test_an_attempt_the_pbx_failed_is_given_back_and_due_again_soon(disposition: Disposition) -> None:
    first = lead(status=LeadStatus.DIALING, attempts=1)
    scheduled = first.finish_attempt(disposition, SCENARIO, at(10))
    assert (first.status, first.attempts, first.next_attempt_at) == (LeadStatus.NEW, 0, at(10 + PBX_RETRY_DELAY))
    assert scheduled == ev.LeadScheduled(
        lead_id=7, attempts=0, next_attempt_at=at(10 + PBX_RETRY_DELAY), last_disposition=disposition.value
    )
    # Even on the last allowed attempt: the client's line was never the reason.
    last = lead(status=LeadStatus.DIALING, attempts=3)
    last.finish_attempt(disposition, SCENARIO, at(10))
    assert (last.status, last.attempts, last.pbx_failures) == (LeadStatus.SCHEDULED, 2, 1)


def test_a_lead_the_pbx_fails_every_time_spends_its_attempts_after_all() -> None:
    # A number the trunk or dialplan cannot take would otherwise be dialled forever.
    subject = lead(status=LeadStatus.DIALING, attempts=1)
    for failures in range(1, MAX_PBX_FAILURES):
        subject.finish_attempt(Disposition.PBX_FAILED, SCENARIO, at(failures))
        assert (subject.attempts, subject.pbx_failures) == (0, failures)
        subject.attempts += 1  # claimed again
    subject.finish_attempt(Disposition.PBX_FAILED, SCENARIO, at(100))
    assert (subject.status, subject.attempts, subject.pbx_failures) == (LeadStatus.SCHEDULED, 1, 0)
    assert subject.next_attempt_at == at(100 + 60)


def test_an_attempt_the_client_decided_clears_the_run_of_pbx_failures() -> None:
    subject = lead(status=LeadStatus.DIALING, attempts=1, pbx_failures=4)
    subject.finish_attempt(Disposition.BUSY, SCENARIO, at(10))
    assert (subject.attempts, subject.pbx_failures) == (1, 0)


# -- Call ---------------------------------------------------------------------------------


def test_the_client_answering_puts_them_on_hold_once() -> None:
    subject = call()
    assert subject.client_answered(at(3)) == ev.CallAnswered(lead_id=7, call_id=3, answered_at=at(3))
    assert subject.state is CallState.HOLDING
    assert subject.client_answered(at(4)) is None  # a repeated report changes nothing
    assert subject.answered_at == at(3)


def test_only_a_client_on_hold_can_be_sent_to_a_manager() -> None:
    with pytest.raises(ValueError, match="dialing"):
        call().connect_to("m1", at(1))


def test_a_manager_who_fails_puts_the_client_back_on_hold() -> None:
    subject = holding()
    subject.connect_to("m1", at(4))
    assert subject.state is CallState.CONNECTING and subject.manager_id == "m1"
    assert subject.manager_failed(LegResult.BUSY, at(5)) == "m1"
    assert subject.state is CallState.HOLDING and subject.manager_id is None
    (leg,) = subject.legs
    assert (leg.manager_id, leg.result, leg.started_at, leg.ended_at) == ("m1", LegResult.BUSY, at(4), at(5))
    assert subject.manager_failed(LegResult.BUSY, at(6)) is None  # no manager is being tried now
    assert subject.tried_managers() == {"m1"}


def test_bridging_marks_the_manager_leg_answered() -> None:
    subject = holding()
    assert subject.bridged(at(5)) is False  # nobody is being connected
    subject.connect_to("m1", at(4))
    assert subject.bridged(at(9)) is True
    assert subject.state is CallState.BRIDGED and subject.bridged_at == at(9)
    assert subject.current_leg is not None
    assert (subject.current_leg.result, subject.current_leg.answered_at) == (LegResult.ANSWERED, at(9))


def test_a_hangup_before_the_answer_waits_for_the_originate_result() -> None:
    subject = call()
    assert subject.hung_up(at(20), cause=17) is None
    assert subject.state is CallState.DIALING and subject.hangup_cause == 17
    subject.end(Disposition.BUSY, at(21))
    assert subject.hangup_cause == 17  # the result without a cause keeps the hangup's


@pytest.mark.parametrize(
    ("expired", "bridge", "disposition"),
    [
        (False, False, Disposition.ABANDONED),
        (True, False, Disposition.NO_MANAGER),
        (False, True, Disposition.COMPLETED),
    ],
)
def test_a_hangup_after_the_answer_ends_the_call_by_how_far_it_got(
    expired: bool, bridge: bool, disposition: Disposition
) -> None:
    subject = holding()
    subject.hold_expired = expired
    if bridge:
        subject.connect_to("m1", at(4))
        subject.bridged(at(5))
    ended = subject.hung_up(at(50), cause=16)
    assert ended is not None and ended.disposition == disposition.value
    assert subject.state is CallState.ENDED and subject.hangup_cause == 16
    assert subject.hung_up(at(51), cause=16) is None  # ended once


def test_a_client_hanging_up_while_a_manager_rings_cancels_that_leg() -> None:
    subject = holding()
    subject.connect_to("m1", at(4))
    ended = subject.hung_up(at(6), cause=16)
    assert ended is not None and ended.disposition == "abandoned" and ended.manager_id is None
    assert ended.managers_tried == ["m1"]
    assert (subject.legs[0].result, subject.legs[0].ended_at) == (LegResult.CANCELLED, at(6))


def test_a_vanished_call_is_closed_with_what_is_known_of_it() -> None:
    ringing = call()
    ended = ringing.vanished(at(20))
    # Rang out, busy, or answered and gone: nobody saw, so it is not put on the client's line.
    assert ended is not None and ringing.disposition is Disposition.LOST_TRACK
    waiting = holding()
    waiting.vanished(at(30))
    assert waiting.disposition is Disposition.ENDED_UNOBSERVED  # never "unreachable" once answered
    apologised = holding()
    apologised.hold_expired = True
    apologised.vanished(at(30))
    assert apologised.disposition is Disposition.NO_MANAGER
    talking = holding()
    talking.connect_to("m1", at(4))
    talking.bridged(at(5))
    ended = talking.vanished(at(60))
    assert ended is not None and talking.disposition is Disposition.COMPLETED and talking.hangup_cause is None
    assert talking.vanished(at(61)) is None


def test_a_vanished_call_the_pbx_kept_a_note_of_ends_when_and_as_the_pbx_says() -> None:
    talking = holding()
    talking.connect_to("m1", at(4))
    talking.bridged(at(5))
    # The daemon noticed at 90 s; the call ended at 42.5 s, the client's side hanging up (16).
    ended = talking.vanished(at(90), CallEndRecord("lr-1", at(42.5), 16, talked=True))
    assert ended is not None and talking.disposition is Disposition.COMPLETED
    assert (talking.ended_at, talking.hangup_cause, ended.talk_seconds) == (at(42.5), 16, 37.5)
    assert talking.legs[0].ended_at == at(42.5)
    # Never put through: ended as its Hangup would have ended it, had it been heard.
    left = holding()
    left.vanished(at(90), CallEndRecord("lr-1", at(20), 16, talked=False))
    assert (left.disposition, left.ended_at, left.hangup_cause, left.hold_seconds) == (
        Disposition.ABANDONED,
        at(20),
        16,
        17.0,
    )
    dropped = holding()  # the PBX itself hung up the waiting client (cause 0): its failure
    dropped.vanished(at(90), CallEndRecord("lr-1", at(20), 0, talked=False))
    assert dropped.disposition is Disposition.PBX_FAILED and dropped.ended_at == at(20)
    apologised = holding()
    apologised.hold_expired = True
    apologised.vanished(at(90), CallEndRecord("lr-1", at(31), 16, talked=False))
    assert apologised.disposition is Disposition.NO_MANAGER and apologised.ended_at == at(31)
    # Put through unheard: it talked, but when the bridge began (and so who owns the lead) is not known.
    sent = holding()
    sent.connect_to("m1", at(4))
    sent.vanished(at(90), CallEndRecord("lr-1", at(50), 16, talked=True))
    assert (sent.disposition, sent.ended_at, sent.bridged_at) == (Disposition.ENDED_UNOBSERVED, at(50), None)
    # A PBX clock a little behind ours never ends a call before what we saw of it.
    skewed = holding()
    skewed.connect_to("m1", at(4))
    skewed.bridged(at(5))
    skewed.vanished(at(90), CallEndRecord("lr-1", at(4.9), 16, talked=True))
    assert skewed.ended_at == at(5) and skewed.talk_seconds == 0.0
    # A call not known to be answered keeps what is known of it: nothing.
    ringing = call()
    ringing.vanished(at(90), CallEndRecord("lr-1", at(20), 16, talked=False))
    assert ringing.disposition is Disposition.LOST_TRACK


def test_the_pbx_hanging_up_a_waiting_client_is_its_failure_not_the_clients() -> None:
    # tests/fixtures/ami/resilience/pbx_restart_now.txt: the client on hold hangs up with cause 0.
    subject = holding()
    ended = subject.hung_up(at(9), cause=0)
    assert ended is not None and ended.disposition == "pbx_failed"
    assert ended.pbx_failure is not None and "cause 0" in ended.pbx_failure
    assert not Disposition.PBX_FAILED.costs_attempt


def test_durations_split_the_call_into_ring_hold_and_talk() -> None:
    subject = holding(answered=3.25)
    assert (subject.ring_seconds, subject.hold_seconds, subject.talk_seconds, subject.total_seconds) == (
        3.25,
        None,
        None,
        None,
    )
    subject.connect_to("m1", at(4))
    subject.bridged(at(5.5))
    ended = subject.hung_up(at(100.0004), cause=16)
    assert ended is not None
    assert (ended.ring_seconds, ended.hold_seconds, ended.talk_seconds, ended.total_seconds) == (
        3.25,
        2.25,
        94.5,
        100.0,  # rounded to milliseconds
    )
    assert ended.manager_id == "m1" and ended.bridged_at == at(5.5)


def test_an_unanswered_call_rings_until_it_ends() -> None:
    subject = call()
    ended = subject.end(Disposition.NO_ANSWER, at(30))
    assert (ended.ring_seconds, ended.hold_seconds, ended.talk_seconds, ended.total_seconds) == (30, None, None, 30)


def test_a_clock_stepping_back_never_gives_a_negative_duration() -> None:
    subject = call()
    subject.client_answered(at(-2))
    assert subject.ring_seconds == 0
