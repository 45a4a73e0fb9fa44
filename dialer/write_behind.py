"""The dialer's write-behind batch: what applying PBX events changed, committed together.

The event loop changes memory and acts on the PBX first (a client on hold should not wait
for a disk), and records here every call and lead it touched, the outbox events and the CDR
billing. One flush then commits them in one transaction: a burst of events costs one commit.
Calls and leads are stored in the state they have at the commit, so a call touched twice in
a batch is written once.
"""

from __future__ import annotations

import structlog

from dialer.ports import Clock, UnitOfWorkFactory
from router.events import DomainEvent, ManagerStateChanged
from router.model import Call, Lead

log = structlog.get_logger("dialer")

FLUSH_RETRY = 1.0  # real seconds: the database does not run on the demo's clock


class WriteBehind:
    def __init__(self, *, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow = uow
        self._clock = clock
        self._calls: dict[str, Call] = {}
        self._leads: dict[int, Lead] = {}
        self._events: list[DomainEvent] = []
        self._billing: list[tuple[str, int]] = []
        self._states: list[ManagerStateChanged] = []

    @property
    def pending(self) -> bool:
        return bool(self._calls or self._leads or self._events or self._billing or self._states)

    def changed(self, call: Call, lead: Lead, *events: DomainEvent | None) -> None:
        """Store this call and its lead with the next flush, and publish these events."""
        self._events.extend(event for event in events if event is not None)
        self._calls[call.channel_id] = call
        assert lead.id is not None
        self._leads[lead.id] = lead

    def billed(self, channel_id: str, billable_seconds: int) -> None:
        self._billing.append((channel_id, billable_seconds))

    def manager_states(self, changes: list[ManagerStateChanged]) -> None:
        """Keep these changes of managers' states with the next flush, and publish them."""
        self._states.extend(changes)
        self._events.extend(changes)

    async def flush(self) -> bool:
        """Commit everything pending; True once it is. On a database error everything stays
        pending (the dialer tries again FLUSH_RETRY later, with what changed meanwhile)."""
        if not self.pending:
            return True
        calls, leads = list(self._calls.values()), list(self._leads.values())
        events, billing, states = self._events, self._billing, self._states
        try:
            async with self._uow() as uow:
                await uow.calls.update(calls)
                await uow.leads.update(leads)
                await uow.calls.add_billing(billing)
                await uow.managers.add(states)
                uow.outbox.add(events, self._clock.now())
                await uow.commit()
        except Exception:
            # Kept in memory to be tried again: losing a state change is worse than waiting.
            log.exception("dialer.flush_failed", calls=len(calls), events=len(events))
            return False
        self._calls.clear()
        self._leads.clear()
        self._events = []
        self._billing = []
        self._states = []
        return True
