"""Taking a lead in: validate, normalise, commit, then let the dialer know.

The lead and its ``lead.created`` event are committed before the caller hears "accepted",
so an answered webhook never loses a lead. A repeated ``external_id`` returns the lead
already stored instead of creating a second one: the insert itself decides (one atomic
statement), so two intakes of one lead at the same moment still store it once.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from dialer.ports import Clock, UnitOfWorkFactory
from router.model import Lead
from router.phone import InvalidPhone, PhonePolicy, normalize_phone

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


class TooManyLeads(Exception):
    """The number had its share of new leads in the window; ``retry_after`` seconds until it has room."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class RateLimit:
    count: int
    window: timedelta


class KeyedWindow:
    """At most ``limit.count`` events per key within ``limit.window``; memory bounded by the keys seen in it."""

    def __init__(self, limit: RateLimit) -> None:
        self._limit = limit
        self._events: dict[str, deque[datetime]] = {}
        self._next_sweep: datetime | None = None

    def wait(self, key: str, now: datetime) -> float:
        """Seconds until ``key`` has room again; 0 when it has room now."""
        stamps = self._events.get(key)
        if stamps is None:
            return 0.0
        while stamps and now - stamps[0] >= self._limit.window:
            stamps.popleft()
        if len(stamps) < self._limit.count:
            return 0.0
        return (stamps[0] + self._limit.window - now).total_seconds()

    def add(self, key: str, now: datetime) -> None:
        self._events.setdefault(key, deque()).append(now)
        if self._next_sweep is None or now >= self._next_sweep:
            # Forget keys with nothing in the window, so a flood of distinct numbers costs no memory for long.
            self._events = {k: v for k, v in self._events.items() if v and now - v[-1] < self._limit.window}
            self._next_sweep = now + self._limit.window


@dataclass(frozen=True)
class LeadInput:
    phone: str
    name: str = ""
    source: str = ""
    external_id: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)


class LeadIntake:
    def __init__(
        self,
        *,
        uow: UnitOfWorkFactory,
        clock: Clock,
        default_region: str,
        on_new_lead: Callable[[], None],
        policy: PhonePolicy | None = None,
        per_number: RateLimit | None = None,
    ) -> None:
        """``policy``: which numbers may be dialled, by default fixed and mobile ones of the default
        region; ``per_number``: new leads a number may get in a window (a callback flood aimed at
        one person, or at the company's bill), unlimited by default."""
        self._per_number = KeyedWindow(per_number) if per_number else None
        self._uow = uow
        self._clock = clock
        self._region = default_region
        self._policy = policy or PhonePolicy(default_region)
        self._on_new_lead = on_new_lead

    async def submit(self, data: LeadInput) -> tuple[Lead, bool]:
        """Store the lead; returns it and whether it is new. Raises InvalidPhone or InvalidPayload."""
        check_payload(data.payload)
        phone = normalize_phone(data.phone, self._region)
        refusal = self._policy.refusal(phone)
        if refusal is not None:
            raise InvalidPhone(refusal)
        async with self._uow() as uow:
            now = self._clock.now()
            if self._per_number is not None and (wait := self._per_number.wait(phone, now)):
                # A lead sent again is answered with the stored one even while its number waits.
                existing = await uow.leads.by_external_id(data.external_id) if data.external_id else None
                if existing is not None:
                    return existing, False
                raise TooManyLeads("this number had its share of new leads; try later", wait)
            lead = Lead(
                phone=phone,
                name=data.name,
                source=data.source,
                external_id=data.external_id,
                payload=data.payload,
                created_at=now,
            )
            if not await uow.leads.add(lead):
                # The insert itself found the external_id taken (INSERT ... ON CONFLICT DO NOTHING),
                # also when another intake committed it a moment ago: answer with that lead.
                assert data.external_id is not None
                existing = await uow.leads.by_external_id(data.external_id)
                assert existing is not None
                return existing, False
            uow.outbox.add([lead.created()], now)
            await uow.commit()
        if self._per_number is not None:
            self._per_number.add(phone, now)
        self._on_new_lead()
        return lead, True
