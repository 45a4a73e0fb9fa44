"""Taking a lead in: validate, normalise, commit, then let the dialer know.

The lead and its ``lead.created`` event are committed before the caller hears "accepted",
so an answered webhook never loses a lead. A repeated ``external_id`` returns the lead
already stored instead of creating a second one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dialer.ports import Clock, UnitOfWorkFactory
from router.model import Lead
from router.phone import normalize_phone


@dataclass(frozen=True)
class LeadInput:
    phone: str
    name: str = ""
    source: str = ""
    external_id: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)


class LeadIntake:
    def __init__(
        self, *, uow: UnitOfWorkFactory, clock: Clock, default_region: str, on_new_lead: Callable[[], None]
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._region = default_region
        self._on_new_lead = on_new_lead

    async def submit(self, data: LeadInput) -> tuple[Lead, bool]:
        """Store the lead; returns it and whether it is new. Raises InvalidPhone."""
        phone = normalize_phone(data.phone, self._region)
        async with self._uow() as uow:
            if data.external_id is not None:
                existing = await uow.leads.by_external_id(data.external_id)
                if existing is not None:
                    return existing, False
            now = self._clock.now()
            lead = Lead(
                phone=phone,
                name=data.name,
                source=data.source,
                external_id=data.external_id,
                payload=data.payload,
                created_at=now,
            )
            await uow.leads.add(lead)
            uow.outbox.add([lead.created()], now)
            await uow.commit()
        self._on_new_lead()
        return lead, True
