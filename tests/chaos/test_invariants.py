"""The chaos harness's judgement on hand-made evidence: each invariant counts what it says, and only that."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bench.chaos.invariants import (
    CallRow,
    ClientLeg,
    Delivery,
    Evidence,
    LeadRow,
    OutboxRow,
    attempts_burnt_by_pbx,
    audit,
    calls_open,
    duplicates_delivered,
    events_missing,
    leads_lost,
    managers_stuck,
    order_violations,
    overlapping_attempts,
)

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def leg(
    channel_id: str,
    lead_id: int,
    created: float,
    ended: float | None,
    *,
    answered: float | None = None,
    bridged: bool = False,
    shut_down: bool = False,
) -> ClientLeg:
    return ClientLeg(
        channel_id=channel_id,
        lead_id=lead_id,
        created=at(created),
        answered=None if answered is None else at(answered),
        ended=None if ended is None else at(ended),
        bridged=bridged,
        shut_down=shut_down,
    )


def evidence(**given: Any) -> Evidence:
    empty: dict[str, Any] = {
        "posted": set(),
        "not_accepted": 0,
        "leads": [],
        "calls": [],
        "legs": [],
        "originated": set(),
        "outbox": [],
        "deliveries": [],
        "fault_marks": [],
        "managers": [],
    }
    return Evidence(**(empty | given))


def test_a_quiet_run_breaks_nothing() -> None:
    quiet = evidence(
        posted={1},
        leads=[LeadRow(1, "assigned", 1)],
        calls=[CallRow(1, "c1", "ended")],
        legs=[leg("c1", 1, 0, 5, answered=1, bridged=True)],
        originated={"c1"},
        outbox=[OutboxRow(1, "e1", "lead.created", 1, published=True)],
        deliveries=[Delivery("e1", 1)],
        managers=[(1, 1)],
    )
    assert {name: finding.value for name, finding in audit(quiet).items() if finding.value} == {}


def test_leads_lost_are_the_acknowledged_ones_missing_or_unfinished() -> None:
    found = leads_lost(
        evidence(
            posted={1, 2, 3, 4},
            not_accepted=1,
            leads=[
                LeadRow(1, "assigned", 1),
                LeadRow(2, "scheduled", 1),
                LeadRow(4, "failed", 3),
                LeadRow(9, "new", 0),
            ],
        )
    )
    assert found.value == 2
    assert found.evidence["missing"] == [3]
    assert found.evidence["unfinished_by_status"] == {"scheduled": 1}
    assert found.evidence["not_accepted_by_api"] == 1


def test_overlap_is_a_second_leg_created_while_the_first_is_up() -> None:
    found = overlapping_attempts(
        evidence(
            legs=[
                # Lead 1: the client answered, nobody steered the call, and it was dialled again.
                leg("a1", 1, 0, None, answered=1),
                leg("a2", 1, 40, 45, answered=41, bridged=True),
                # Lead 2: one attempt after the other ended.
                leg("b1", 2, 0, 3),
                leg("b2", 2, 3, 8),
                # Lead 3: the second leg came while the first still rang.
                leg("c1", 3, 0, 10),
                leg("c2", 3, 5, 6),
            ]
        )
    )
    assert found.value == 2
    assert found.evidence["leads"] == {"1": ["a1", "a2"], "3": ["c1", "c2"]}
    assert found.evidence["second_dials_while_an_answered_client_waited"] == 1


def test_attempts_burnt_are_charged_attempts_no_client_line_answered_for() -> None:
    found = attempts_burnt_by_pbx(
        evidence(
            posted={1, 2, 3},
            leads=[LeadRow(1, "failed", 3), LeadRow(2, "assigned", 2), LeadRow(3, "assigned", 1)],
            calls=[
                CallRow(1, "never-sent", "ended"),
                CallRow(1, "hung-pbx", "ended"),
                CallRow(1, "busy", "ended"),
                CallRow(2, "cut-on-hold", "ended"),
                CallRow(2, "talked", "ended"),
                CallRow(3, "cut-talking", "ended"),
            ],
            legs=[
                leg("busy", 1, 0, 1),
                leg("cut-on-hold", 2, 0, 3, answered=1, shut_down=True),
                leg("talked", 2, 5, 9, answered=6, bridged=True),
                # Talking to a manager when the PBX died: the attempt did what it was for.
                leg("cut-talking", 3, 0, 4, answered=1, bridged=True, shut_down=True),
            ],
            originated={"hung-pbx", "busy", "cut-on-hold", "talked", "cut-talking"},
        )
    )
    assert found.value == 3  # lead 1: 3 charged, 1 reached the client; lead 2: 2 charged, 1 reached
    assert found.evidence["calls_without_a_client_outcome"] == {
        "originate_never_reached_a_pbx": 1,
        "pbx_read_it_no_channel": 1,
        "leg_cut_by_pbx_restart_before_a_manager": 1,
    }


def test_open_calls_count_the_database_and_the_pbx_once_each() -> None:
    found = calls_open(
        evidence(
            calls=[
                CallRow(1, "both", "dialing"),
                CallRow(2, "db-only", "holding"),
                CallRow(3, "pbx-only", "ended"),
                CallRow(5, "waiting", "dialing"),
            ],
            legs=[
                leg("both", 1, 0, None, answered=1),  # answered while nobody listened
                leg("pbx-only", 3, 0, None),
                leg("done", 4, 0, 1),
                leg("waiting", 5, 0, None),  # still ringing
            ],
        )
    )
    assert found.value == 4
    assert (
        found.evidence["open_in_db_and_up_on_pbx"],
        found.evidence["dialing_in_db_but_answered_on_pbx"],
        found.evidence["open_in_db_gone_from_pbx"],
        found.evidence["ended_in_db_still_up_on_pbx"],
    ) == (2, 1, 1, 1)


def test_stuck_managers_are_free_on_the_pbx_and_busy_in_the_daemons_view_every_time() -> None:
    found = managers_stuck(evidence(managers=[(10, 7), (10, 7), (9, 7)]))
    assert (found.value, found.evidence["free_on_pbx_vs_daemon"]) == (2, [(9, 7), (10, 7)])
    # A call ending on the PBX before the daemon hears of it: free on one side only, once.
    assert managers_stuck(evidence(managers=[(10, 9), (10, 10)])).value == 0
    # The daemon offering a manager the PBX has busy is not this invariant's business.
    assert managers_stuck(evidence(managers=[(8, 10)])).value == 0


def test_events_missing_say_whether_the_daemon_thought_them_sent() -> None:
    found = events_missing(
        evidence(
            outbox=[
                OutboxRow(1, "e1", "lead.created", 1, published=True),
                OutboxRow(2, "e2", "call.dialing", 1, published=True),
                OutboxRow(3, "e3", "call.ended", 1, published=False),
            ],
            deliveries=[Delivery("e1", 1), Delivery("stray", 1)],
        )
    )
    assert found.value == 2
    assert found.evidence == {
        "by_type": {"call.dialing": 1, "call.ended": 1},
        "marked_published": 1,
        "received_but_not_in_outbox": 1,
    }


def test_order_is_per_lead_commit_order_of_first_arrivals() -> None:
    outbox = [OutboxRow(seq, f"e{seq}", "t", lead, True) for seq, lead in ((1, 1), (2, 2), (3, 1), (4, 1))]
    in_order_per_lead = [Delivery("e2", 2), Delivery("e1", 1), Delivery("e3", 1), Delivery("e1", 1)]
    assert order_violations(evidence(outbox=outbox, deliveries=in_order_per_lead)).value == 0
    swapped = [Delivery("e1", 1), Delivery("e4", 1), Delivery("e3", 1)]
    assert order_violations(evidence(outbox=outbox, deliveries=swapped)).value == 1


def test_duplicates_say_which_fault_came_last_before_the_repeat() -> None:
    deliveries = [Delivery("e1", 1), Delivery("e1", 1), Delivery("e2", 1), Delivery("e2", 1), Delivery("e2", 1)]
    marks = [(3, "broker_stopped"), (4, "daemon_killed")]
    found = duplicates_delivered(evidence(deliveries=deliveries, fault_marks=marks))
    assert found.value == 3
    assert found.evidence["copies_after"] == {"no_fault_before": 1, "broker_stopped": 1, "daemon_killed": 1}
