"""The same client sending the form twice gets one call, not two.

A lead is *open* while the dialer still has work on it (new, scheduled, dialling): a second lead
from the same phone within the scenario's duplicate window is merged into it. Once the client
talked to a manager (the lead has an owner) or the attempts ran out, the lead is finished: the
same phone then makes a new lead, which goes to the previous owner first where the scenario says
owner first.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from router.model import Lead, LeadStatus

OPEN_STATUSES = (LeadStatus.NEW, LeadStatus.SCHEDULED, LeadStatus.DIALING)
DEFAULT_WINDOW = 24 * 3600.0  # seconds


def open_duplicate(candidates: Iterable[Lead], phone: str, now: datetime, window: float) -> Lead | None:
    """The newest open lead of ``phone`` created within ``window`` seconds before ``now``, if any."""
    if window <= 0:
        return None
    since = now - timedelta(seconds=window)
    matches = [
        lead
        for lead in candidates
        if lead.phone == phone and lead.status in OPEN_STATUSES and since <= lead.created_at <= now
    ]
    return max(matches, key=lambda lead: (lead.created_at, lead.id or 0), default=None)
