"""Outcomes from the CRM on SQLite, and what the manager board rebuilds from storage at start."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dialer.outcomes import LeadOutcomes
from router.events import LeadOutcome
from router.model import Call, Lead, LegResult, Outcome, OutcomeReport
from router.routing import ClosingRate, Manager, RoutingPlan, Scenario, Strategy
from storage.engine import Database
from storage.queries import SqlQueries
from storage.uow import SqlUnitOfWork
from tests.fakes import ManualClock

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


async def _lead(db: Database, owner: str | None = None) -> Lead:
    async with SqlUnitOfWork(db) as uow:
        lead = Lead(phone="+79161234567", name="", source="site", external_id=None, payload={}, created_at=NOW)
        lead.owner_id = owner
        await uow.leads.add([lead])
        await uow.commit()
    return lead


async def _talk(db: Database, lead_id: int, scenario: str, legs: list[str], at: datetime, talk: float = 60) -> None:
    """A call in ``scenario`` whose managers were offered it in turn; the last one talked."""
    async with SqlUnitOfWork(db) as uow:
        call = Call(lead_id=lead_id, attempt=1, scenario=scenario, channel_id=f"lr-{scenario}-{at.timestamp()}",
                    phone="+79161234567", started_at=at)  # fmt: skip
        await uow.calls.add([call])
        call.client_answered(at)
        for number, manager_id in enumerate(legs):
            call.connect_to(manager_id, at + timedelta(seconds=number))
            if number < len(legs) - 1:
                call.manager_failed(LegResult.NO_ANSWER, at + timedelta(seconds=number))
        call.bridged(at + timedelta(seconds=len(legs)))
        call.hung_up(at + timedelta(seconds=len(legs) + talk), 16)
        await uow.calls.update([call])
        await uow.commit()


async def _report(db: Database, lead_id: int, outcome: Outcome, seen: list[OutcomeReport] | None = None) -> Lead | None:
    service = LeadOutcomes(
        uow=lambda: SqlUnitOfWork(db), clock=ManualClock(NOW), on_reported=(seen if seen is not None else []).append
    )
    return await service.report(lead_id, outcome, reason="because", author="crm:olga")


async def test_an_outcome_is_stored_with_its_event_then_told_to_the_routing(db: Database) -> None:
    lead = await _lead(db, owner="anna")
    assert lead.id is not None
    await _talk(db, lead.id, "ads", ["anna"], NOW - timedelta(hours=1))
    seen: list[OutcomeReport] = []
    reported = await _report(db, lead.id, Outcome.WON, seen)
    assert reported is not None and reported.outcome is Outcome.WON
    (report,) = seen
    assert (report.manager_id, report.scenario, report.author, report.reason) == ("anna", "ads", "crm:olga", "because")
    found = await SqlQueries(db).lead_with_calls(lead.id)
    assert found is not None and found[0].outcome is Outcome.WON
    (message,) = [m for m in await SqlQueries(db).pending_outbox(10) if m.type == LeadOutcome.type]
    assert '"outcome":"won"' in message.payload and '"scenario":"ads"' in message.payload


async def test_an_unknown_lead_gets_no_outcome(db: Database) -> None:
    seen: list[OutcomeReport] = []
    assert await _report(db, 404, Outcome.LOST, seen) is None
    assert seen == [] and await SqlQueries(db).pending_outbox(10) == []


async def test_the_dialers_copy_of_a_lead_never_overwrites_a_reported_outcome(db: Database) -> None:
    lead = await _lead(db)
    assert lead.id is not None
    await _report(db, lead.id, Outcome.LOST)
    lead.attempts = 3  # the dialer's copy, read before the report, changes and is flushed
    async with SqlUnitOfWork(db) as uow:
        await uow.leads.update([lead])
        await uow.commit()
    found = await SqlQueries(db).lead_with_calls(lead.id)
    assert found is not None and (found[0].attempts, found[0].outcome) == (3, Outcome.LOST)


def _plan() -> RoutingPlan:
    managers = tuple(
        Manager(name, name.title(), str(100 + number)) for number, name in enumerate(("anna", "boris", "vera"))
    )

    def scenario(name: str, strategy: Strategy) -> Scenario:
        return Scenario(name=name, hold_limit=30, ring_timeout=15, max_attempts=3, retry_delays=(60,),
                        strategy=strategy, closing_rate=ClosingRate(fairness_window=3))  # fmt: skip

    return RoutingPlan(managers, (scenario("turns", Strategy.ROUND_ROBIN), scenario("rate", Strategy.CLOSING_RATE)))


async def test_the_board_history_rebuilds_turns_windows_today_capacity_and_records(db: Database) -> None:
    first, second, third = [await _lead(db, owner=owner) for owner in ("anna", "anna", "boris")]
    assert first.id and second.id and third.id
    # Turns: a leg is an offer and each manager's newest counts; 40 days ago is too old to matter.
    await _talk(db, first.id, "turns", ["vera"], NOW - timedelta(days=40))
    await _talk(db, first.id, "turns", ["anna", "boris"], NOW - timedelta(hours=30))
    await _talk(db, first.id, "turns", ["anna"], NOW - timedelta(hours=20))
    # The closing_rate scenario's window holds its last three offers, oldest first.
    for hours, legs in ((9, ["vera"]), (8, ["anna", "boris"]), (7, ["vera"])):
        await _talk(db, second.id, "rate", legs, NOW - timedelta(hours=hours), talk=30)
    # A correction replaces the report before it; an undecided lead stays open; a lead nobody
    # talked to is credited to no scenario.
    await _report(db, first.id, Outcome.LOST)
    await _report(db, first.id, Outcome.WON)
    await _report(db, second.id, Outcome.WORKED)
    await _report(db, third.id, Outcome.LOST)

    history = await SqlQueries(db).board_history(_plan(), NOW)

    assert history.turns["turns"] == {"anna": NOW - timedelta(hours=20), "boris": NOW - timedelta(hours=30, seconds=-1)}
    assert list(history.offers["rate"]) == ["anna", "boris", "vera"]
    assert "turns" not in history.offers  # only closing_rate keeps a window
    assert history.today == {"boris": (1, 30.0), "vera": (2, 60.0)}
    assert history.open_leads == {"anna": 1}
    assert [(report.lead_id, report.manager_id, report.scenario, report.outcome) for report in history.outcomes] == [
        (first.id, "anna", "turns", Outcome.WON)
    ]
