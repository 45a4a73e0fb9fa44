"""Taking a lead in: validate, normalise, commit, then let the dialer know.

The lead and its ``lead.created`` event are committed before the caller hears "accepted",
so an answered webhook never loses a lead. A repeated ``external_id`` returns the lead
already stored instead of creating a second one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dialer.ports import Clock, UnitOfWorkFactory
from router.model import Lead
from router.phone import normalize_phone

# Deeper than any CRM's custom fields need, shallow enough that storing, rendering and
# publishing the payload never approaches Python's recursion limit.
MAX_PAYLOAD_DEPTH = 32


class InvalidPayload(ValueError):
    """The payload cannot be stored and published as JSON as it is; the message says where and why."""


def check_payload(payload: dict[str, Any]) -> None:
    """Raise InvalidPayload for NaN, ±Infinity (1e999 parses as one) or nesting deeper than MAX_PAYLOAD_DEPTH.

    Python's json reads them, but they have no JSON form: stored, such a lead could be
    neither answered, nor shown, nor published. Iterative, so no payload can exhaust the stack.
    """
    pending: list[tuple[str, Any, int]] = [("payload", payload, 1)]
    while pending:
        where, value, depth = pending.pop()
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidPayload(f"{where}: {value} is not a JSON number (NaN and infinities cannot be stored)")
        if isinstance(value, dict | list):
            if depth > MAX_PAYLOAD_DEPTH:
                raise InvalidPayload(f"{where}: nested deeper than {MAX_PAYLOAD_DEPTH} levels")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            pending.extend((f"{where}.{key}", item, depth + 1) for key, item in items)


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
        """Store the lead; returns it and whether it is new. Raises InvalidPhone or InvalidPayload."""
        check_payload(data.payload)
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
