"""Outcomes from the CRM: what became of a lead after the call.

The report and its ``lead.outcome`` event commit together; only then does the routing hear of
it (``on_reported``): closing_rate credits the owner, and a decided lead leaves his open leads.
"""

from __future__ import annotations

from collections.abc import Callable

from dialer.ports import Clock, UnitOfWorkFactory
from router.model import Lead, Outcome, OutcomeReport


class LeadOutcomes:
    def __init__(self, *, uow: UnitOfWorkFactory, clock: Clock, on_reported: Callable[[OutcomeReport], None]) -> None:
        self._uow = uow
        self._clock = clock
        self._on_reported = on_reported

    async def report(self, lead_id: int, outcome: Outcome, *, reason: str, author: str) -> Lead | None:
        """Store the outcome; returns the lead with it, or None if there is no such lead."""
        async with self._uow() as uow:
            # Locked to the commit: two reports at once would otherwise both read, and record as
            # "previous", the outcome in force before either.
            lead = await uow.leads.get(lead_id, for_update=True)
            if lead is None:
                return None
            now = self._clock.now()
            calls = await uow.calls.for_lead(lead_id)
            report, event = lead.report_outcome(outcome, reason=reason, author=author, calls=calls, now=now)
            await uow.outcomes.add(report)
            uow.outbox.add([event], now)
            await uow.commit()
        self._on_reported(report)
        return lead
