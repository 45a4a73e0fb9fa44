"""A lead's life over time: retries per outcome, deferral to the call window, duplicates, SLA release."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from router import events as ev
from router.call_window import CallWindow, ClientZone
from router.duplicates import open_duplicate
from router.model import Disposition, Lead, LeadStatus, Outcome
from router.retries import RetryRule
from router.sla import SlaPolicy, new_owner
from tests.router.plans import T0, at, manager, scenario

MOSCOW = ZoneInfo("Europe/Moscow")
PHONE = "+74951234567"  # a Moscow landline: one zone
DAY = 24 * 3600.0


def lead(**fields: Any) -> Lead:
    base: dict[str, Any] = {
        "phone": PHONE,
        "name": "Ivan",
        "source": "site",
        "external_id": None,
        "payload": {},
        "created_at": T0,
        "id": 7,
    }
    return Lead(**(base | fields))


# -- retries per outcome ---------------------------------------------------------------------------

PER_OUTCOME = scenario(
    max_attempts=3,
    retry_delays=(600,),
    retries=(
        ("busy", RetryRule(max_attempts=5, delays=(60, 120))),
        ("unreachable", RetryRule(max_attempts=1, delays=(60,), final_state="wrong_number")),
        ("abandoned", RetryRule(max_attempts=4, delays=(15,))),
    ),
)


def test_each_outcome_has_its_own_delays() -> None:
    busy = lead(status=LeadStatus.DIALING, attempts=1)
    busy.finish_attempt(Disposition.BUSY, PER_OUTCOME, at(0))
    assert busy.next_attempt_at == at(60)
    busy.attempts = 2
    busy.finish_attempt(Disposition.BUSY, PER_OUTCOME, at(100))
    assert busy.next_attempt_at == at(100 + 120)
    hung_up_on_hold = lead(status=LeadStatus.DIALING, attempts=1)
    hung_up_on_hold.finish_attempt(Disposition.ABANDONED, PER_OUTCOME, at(0))
    assert hung_up_on_hold.next_attempt_at == at(15)
    # An outcome without a rule of its own follows the scenario's retry_delays.
    no_answer = lead(status=LeadStatus.DIALING, attempts=1)
    no_answer.finish_attempt(Disposition.NO_ANSWER, PER_OUTCOME, at(0))
    assert no_answer.next_attempt_at == at(600)


def test_each_outcome_has_its_own_limit_and_final_state() -> None:
    busy = lead(status=LeadStatus.DIALING, attempts=4)  # the scenario's 3 would have ended it
    assert isinstance(busy.finish_attempt(Disposition.BUSY, PER_OUTCOME, at(0)), ev.LeadScheduled)
    busy.attempts = 5
    failed = busy.finish_attempt(Disposition.BUSY, PER_OUTCOME, at(0))
    assert failed == ev.LeadFailed(lead_id=7, attempts=5, last_disposition="busy", final_state="failed")

    unreachable = lead(status=LeadStatus.DIALING, attempts=1)
    failed = unreachable.finish_attempt(Disposition.UNREACHABLE, PER_OUTCOME, at(0))
    assert isinstance(failed, ev.LeadFailed) and failed.final_state == "wrong_number"
    assert unreachable.status is LeadStatus.FAILED and unreachable.final_state == "wrong_number"


def test_a_retry_that_falls_outside_the_call_window_waits_for_its_opening() -> None:
    windowed = scenario(retry_delays=(3600,), call_window=CallWindow(zone=MOSCOW))
    evening = datetime(2026, 11, 24, 20, 30, tzinfo=MOSCOW)
    subject = lead(status=LeadStatus.DIALING, attempts=1)
    subject.finish_attempt(Disposition.NO_ANSWER, windowed, evening)
    assert subject.next_attempt_at == datetime(2026, 11, 25, 9, 0, tzinfo=MOSCOW)


# -- deferral at the claim -------------------------------------------------------------------------


def test_a_deferred_lead_gets_its_claim_back_and_a_place_in_the_backlog() -> None:
    subject = lead(status=LeadStatus.DIALING, attempts=1)
    deferred = subject.defer(at(3600), rank=-5.0, now=at(0))
    assert deferred == ev.LeadDeferred(lead_id=7, next_attempt_at=at(3600), reason="call_window")
    assert subject.status is LeadStatus.NEW and subject.attempts == 0
    assert subject.next_attempt_at == at(3600) and subject.backlog_rank == -5.0
    retried = lead(status=LeadStatus.DIALING, attempts=2)
    retried.defer(at(3600), rank=0.0, now=at(0))
    assert retried.status is LeadStatus.SCHEDULED and retried.attempts == 1


# -- duplicates ------------------------------------------------------------------------------------


def test_a_lead_from_the_phone_of_an_open_lead_within_the_window_is_a_duplicate() -> None:
    first = lead(created_at=T0)
    assert open_duplicate([first], PHONE, T0 + timedelta(hours=23, minutes=59), DAY) is first
    assert open_duplicate([first], PHONE, T0 + timedelta(seconds=DAY), DAY) is first  # exactly 24 h: inside


def test_outside_the_window_or_once_finished_it_is_a_new_lead() -> None:
    first = lead(created_at=T0)
    assert open_duplicate([first], PHONE, T0 + timedelta(seconds=DAY + 1), DAY) is None
    for finished in (LeadStatus.ASSIGNED, LeadStatus.FAILED):
        assert open_duplicate([lead(status=finished)], PHONE, at(60), DAY) is None
    assert open_duplicate([first], "+79160000000", at(60), DAY) is None  # another phone
    assert open_duplicate([first], PHONE, at(60), 0) is None  # duplicate_window: off


def test_a_scheduled_or_dialling_lead_is_open_and_the_newest_open_one_is_merged_into() -> None:
    older = lead(id=1, status=LeadStatus.SCHEDULED, created_at=T0)
    newer = lead(id=2, status=LeadStatus.DIALING, created_at=at(60))
    assert open_duplicate([older, newer], PHONE, at(120), DAY) is newer


def test_a_duplicate_carries_what_the_second_form_sent() -> None:
    first = lead()
    second = lead(
        id=None, name="Ivan P.", source="landing", external_id="crm-2", payload={"utm": "x"}, created_at=at(9)
    )
    assert first.duplicate(second) == ev.LeadDuplicate(
        lead_id=7,
        phone=PHONE,
        name="Ivan P.",
        source="landing",
        external_id="crm-2",
        payload={"utm": "x"},
        received_at=at(9),
    )


# -- SLA release -----------------------------------------------------------------------------------


def owned(**fields: Any) -> Lead:
    subject = lead(status=LeadStatus.ASSIGNED, **fields)
    subject.assign_owner("m1", call_id=1, now=T0, sla=SlaPolicy(release_after=DAY))
    return subject


def test_an_unworked_lead_is_overdue_at_exactly_n_hours_not_a_second_before() -> None:
    subject = owned()
    assert not subject.sla_overdue(T0 + timedelta(seconds=DAY - 1))
    assert subject.sla_overdue(T0 + timedelta(seconds=DAY))


def test_a_lead_the_crm_reported_on_is_never_overdue() -> None:
    for outcome in Outcome:
        subject = owned(outcome=outcome)
        assert not subject.sla_overdue(T0 + timedelta(days=3))


def test_release_names_both_owners_and_restarts_the_clock() -> None:
    subject = owned()
    later = T0 + timedelta(seconds=DAY)
    released = subject.release_to("m2", later, SlaPolicy(release_after=DAY), new_call=False)
    assert released == ev.LeadReassigned(lead_id=7, owner_id="m2", previous_owner_id="m1", reason="sla", new_call=False)
    assert subject.owner_id == "m2" and subject.status is LeadStatus.ASSIGNED
    assert subject.sla_due_at == later + timedelta(seconds=DAY)


def test_release_with_a_new_call_makes_the_lead_due_at_once() -> None:
    subject = owned()
    later = T0 + timedelta(seconds=DAY)
    subject.release_to("m2", later, SlaPolicy(release_after=DAY, call_new_owner=True), new_call=True)
    assert subject.status is LeadStatus.SCHEDULED and subject.next_attempt_at == later


def test_the_new_owner_is_never_a_previous_one_and_has_the_fewest_open_leads() -> None:
    pool = [manager(1), manager(2), manager(3)]
    assert new_owner(pool, {"m1"}, {"m2": 4, "m3": 1}).id == "m3"  # type: ignore[union-attr]
    assert new_owner(pool, {"m1"}, {}).id == "m2"  # type: ignore[union-attr]  # a tie: the pool's order
    assert new_owner(pool, {"m1", "m2", "m3"}, {}) is None  # everyone had it: it stays


def test_keeping_the_owner_stops_the_clock() -> None:
    subject = owned()
    subject.keep_owner()
    assert not subject.sla_overdue(T0 + timedelta(days=30))


def test_the_windowed_scenario_reads_the_clock_in_utc_too() -> None:
    # The same moment in UTC and in Moscow is the same answer.
    windowed = scenario(call_window=CallWindow(zone=MOSCOW))
    utc = datetime(2026, 11, 24, 5, 30, tzinfo=UTC)  # 08:30 Moscow
    assert windowed.next_allowed(PHONE, utc) == datetime(2026, 11, 24, 6, 0, tzinfo=UTC)


def test_a_russian_mobile_may_ring_anywhere_from_kaliningrad_to_kamchatka_so_its_window_is_narrow() -> None:
    # phonenumbers places +7 9xx in every Russian zone (and two neighbours'): 09:00 at the western
    # end (Bucharest, +02:00) is 07:00 UTC, 21:00 at the eastern end (Kamchatka, +12:00) 09:00 UTC.
    windowed = scenario(call_window=CallWindow(zone=MOSCOW))
    mobile = "+79161234567"
    morning = datetime(2026, 11, 24, 4, 0, tzinfo=UTC)
    assert windowed.next_allowed(mobile, morning) == datetime(2026, 11, 24, 7, 0, tzinfo=UTC)
    assert windowed.next_allowed(mobile, datetime(2026, 11, 24, 9, 0, tzinfo=UTC)) == datetime(
        2026, 11, 25, 7, 0, tzinfo=UTC
    )

    # Ops whose clients are local whatever their mobile says read the client hours in the company's zone.
    local = scenario(call_window=CallWindow(zone=MOSCOW, client_zone=ClientZone.COMPANY))
    assert local.next_allowed(mobile, morning) == datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
