"""A lead's outcome from the CRM: what is reported, and to whom and which scenario it is credited."""

from __future__ import annotations

from router import events as ev
from router.model import Call, Lead, Outcome
from tests.router.plans import T0, at


def lead(owner: str | None = None) -> Lead:
    subject = Lead(phone="+79161234567", name="Иван", source="site", external_id=None, payload={}, created_at=T0, id=7)
    subject.owner_id = owner
    return subject


def call(number: int, scenario: str, talked_to: str | None) -> Call:
    subject = Call(lead_id=7, attempt=number, scenario=scenario, channel_id=f"lr-{number}", phone="+79161234567",
                   started_at=at(number), id=number)  # fmt: skip
    subject.client_answered(at(number))
    if talked_to is not None:
        subject.connect_to(talked_to, at(number))
        subject.bridged(at(number))
    subject.hung_up(at(number + 1), 16)
    return subject


def test_an_outcome_is_credited_to_the_owner_in_the_scenario_he_took_the_lead_in() -> None:
    subject = lead(owner="anna")
    history = [call(1, "ads", "boris"), call(2, "repeat", "anna"), call(3, "default", None)]
    report, event = subject.report_outcome(Outcome.WON, reason="paid", author="crm:olga", calls=history, now=at(9))
    assert (report.manager_id, report.scenario) == ("anna", "repeat")
    assert (report.outcome, report.previous) == (Outcome.WON, None)
    assert (report.reason, report.author, report.at, report.won) == ("paid", "crm:olga", at(9), True)
    assert subject.outcome is Outcome.WON
    assert event == ev.LeadOutcome(
        lead_id=7,
        outcome="won",
        previous_outcome=None,
        reason="paid",
        author="crm:olga",
        owner_id="anna",
        scenario="repeat",
        reported_at=at(9),
    )


def test_a_later_report_replaces_the_outcome_and_names_the_one_before() -> None:
    subject = lead(owner="anna")
    subject.report_outcome(Outcome.WORKED, reason="", author="crm", calls=[], now=at(1))
    report, event = subject.report_outcome(Outcome.LOST, reason="too dear", author="crm", calls=[], now=at(2))
    assert (report.previous, report.outcome, subject.outcome) == (Outcome.WORKED, Outcome.LOST, Outcome.LOST)
    assert event.previous_outcome == "worked" and event.type == "lead.outcome"


def test_a_lead_nobody_talked_to_is_credited_to_nobody() -> None:
    report, event = lead().report_outcome(Outcome.LOST, reason="spam", author="crm", calls=[call(1, "ads", None)],
                                          now=at(5))  # fmt: skip
    assert (report.manager_id, report.scenario, event.owner_id) == (None, None, None)


def test_only_won_and_lost_are_decided() -> None:
    assert [outcome.decided for outcome in Outcome] == [False, True, True]
