"""A lead nobody works goes to someone who will.

When a manager becomes a lead's owner, the lead's SLA deadline is set ``release_after`` seconds
later (per scenario, 24 h by default). If by then the CRM has reported no outcome for it (not even
``worked``), the lead is given to another manager of the scenario's pool: never the owner it is
taken from, and never one who owned it before, so a lead nobody works visits each manager at most
once and then stays where it is.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # router.routing holds each scenario's SlaPolicy
    from router.routing import Manager

DEFAULT_RELEASE_AFTER = 24 * 3600.0  # seconds
REASON = "sla"


@dataclass(frozen=True, slots=True)
class SlaPolicy:
    release_after: float = DEFAULT_RELEASE_AFTER  # seconds from the assignment
    call_new_owner: bool = False  # connect the new owner to the client with a new call

    def deadline(self, assigned_at: datetime) -> datetime:
        return assigned_at + timedelta(seconds=self.release_after)


def new_owner(pool: Sequence[Manager], owned_before: Collection[str], open_leads: Mapping[str, int]) -> Manager | None:
    """Who takes a released lead: of the pool's managers who never owned it, the one with the fewest
    open leads (the pool's order breaks ties); None if everyone had it."""
    candidates = [manager for manager in pool if manager.id not in owned_before]
    return min(candidates, key=lambda manager: open_leads.get(manager.id, 0), default=None)
