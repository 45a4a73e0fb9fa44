"""Writers at the same moment, as two daemons (or two API workers) on one database are: on SQLite
and on PostgreSQL, where transactions really run side by side."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import select

from dialer.intake import LeadInput, LeadIntake
from dialer.outcomes import LeadOutcomes
from router.model import Lead, Outcome
from storage.engine import Database
from storage.schema import lead_history, lead_outcomes, leads, outbox
from storage.uow import SqlUnitOfWork
from tests.fakes import ManualClock
from tests.router.plans import manager, plan

PLAN = plan(manager(1))

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def _intakes(db: Database, count: int) -> list[LeadIntake]:
    """As many daemons' intakes on one database."""
    return [
        LeadIntake(
            uow=lambda: SqlUnitOfWork(db),
            clock=ManualClock(NOW),
            routing=lambda: PLAN,
            default_region="RU",
            on_new_lead=lambda: None,
        )
        for _ in range(count)
    ]


async def test_one_lead_posted_by_many_intakes_at_once_is_stored_once_and_all_get_it(db: Database) -> None:
    intakes = _intakes(db, 8)
    answers = await asyncio.gather(
        *(intake.submit(LeadInput(phone="+79161234567", external_id="crm-42")) for intake in intakes)
    )
    assert [new for _, new in answers].count(True) == 1
    assert len({lead.id for lead, _ in answers}) == 1
    async with db.read() as conn:
        assert len((await conn.execute(select(leads.c.id))).all()) == 1
        assert len((await conn.execute(select(outbox.c.id).where(outbox.c.type == "lead.created"))).all()) == 1


async def test_one_form_merged_by_many_intakes_at_once_is_kept_once_in_the_open_leads_history(db: Database) -> None:
    """The phone has an open lead: the form (its own external_id) is a duplicate of it, merged once;
    the intakes that lose the race answer with the same open lead, none with an error."""
    intakes = _intakes(db, 8)
    first, _ = await intakes[0].submit(LeadInput(phone="+79161234567", external_id="crm-1"))
    answers = await asyncio.gather(
        *(intake.submit(LeadInput(phone="+79161234567", external_id="crm-2")) for intake in intakes)
    )
    assert {(lead.id, new) for lead, new in answers} == {(first.id, False)}
    async with db.read() as conn:
        kept = (await conn.execute(select(lead_history.c.lead_id).where(lead_history.c.external_id == "crm-2"))).all()
        merged = (await conn.execute(select(outbox.c.id).where(outbox.c.type == "lead.duplicate"))).all()
    assert [lead_id for (lead_id,) in kept] == [first.id] and len(merged) == 1


async def test_leads_without_an_external_id_are_never_taken_for_duplicates(db: Database) -> None:
    async with SqlUnitOfWork(db) as uow:
        for _ in range(3):
            lead = Lead(phone="+79161234567", name="", source="site", external_id=None, payload={}, created_at=NOW)
            assert await uow.leads.add([lead]) == []  # stored: nothing refused
        await uow.commit()


async def test_outcomes_reported_at_once_each_record_the_one_in_force_before_it(db: Database) -> None:
    async with SqlUnitOfWork(db) as uow:
        lead = Lead(phone="+79161234567", name="", source="site", external_id=None, payload={}, created_at=NOW)
        await uow.leads.add([lead])
        await uow.commit()
    assert lead.id is not None
    service = LeadOutcomes(uow=lambda: SqlUnitOfWork(db), clock=ManualClock(NOW), on_reported=lambda _: None)
    sent = [Outcome.WORKED, Outcome.WON, Outcome.LOST, Outcome.WORKED, Outcome.WON, Outcome.LOST]
    await asyncio.gather(*(service.report(lead.id, outcome, reason="", author="crm") for outcome in sent))
    async with db.read() as conn:
        rows = (await conn.execute(select(lead_outcomes).order_by(lead_outcomes.c.id))).mappings().all()
        stored = (await conn.execute(select(leads.c.outcome).where(leads.c.id == lead.id))).scalar_one()
    # In commit order, each report's "previous" is the outcome the report before it set: no two
    # reports saw the same one (without the row lock, PostgreSQL let them all see None).
    assert [row["previous"] for row in rows] == [None, *(row["outcome"] for row in rows[:-1])]
    assert stored == rows[-1]["outcome"]
