"""Taking a lead in: validate, normalise, commit, then let the dialer know.

The lead and its ``lead.created`` event are committed before the caller hears "accepted",
so an answered webhook never loses a lead. A repeated ``external_id`` returns the lead
already stored instead of creating a second one.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from dialer.ports import Clock, UnitOfWorkFactory
from router.model import Lead
from router.phone import InvalidPhone, PhonePolicy, normalize_phone

YIELD_EVERY = 10  # leads of a batch checked between two turns of the event loop

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

    def wait(self, key: str, now: datetime, pending: int = 0) -> float:
        """Seconds until ``key`` has room again; 0 when it has room now.

        ``pending``: events at ``now`` not added yet (earlier leads of the same batch).
        """
        stamps = self._events.get(key)
        if stamps is None:
            stamps = deque()
        while stamps and now - stamps[0] >= self._limit.window:
            stamps.popleft()
        over = len(stamps) + pending - self._limit.count
        if over < 0:
            return 0.0
        # The oldest event that must leave the window before one more fits: a pending one leaves a window from now.
        oldest = stamps[over] if over < len(stamps) else now
        return (oldest + self._limit.window - now).total_seconds()

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


# What became of one lead of a batch: stored (and whether new), or why not.
Submitted = tuple[Lead, bool] | InvalidPhone | InvalidPayload | TooManyLeads


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
        """Store the lead; returns it and whether it is new. Raises InvalidPhone, InvalidPayload or TooManyLeads."""
        (result,) = await self.submit_batch([data])
        if isinstance(result, Exception):
            raise result
        return result

    async def submit_batch(self, batch: Sequence[LeadInput], *, dry_run: bool = False) -> list[Submitted]:
        """Store the leads in one transaction (an import's rows); for each, the lead and whether it is
        new, or why it was refused. ``dry_run``: every check as for real, then nothing is kept.

        A transaction per batch, not per lead: far fewer commits for an import, and between batches
        the dialer gets the database and the event loop.
        """
        results: list[Submitted | None] = []
        checked: list[tuple[int, LeadInput, str]] = []
        for index, data in enumerate(batch):
            if index and index % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # parsing numbers is pure CPU: the loop's turn every few
            try:
                check_payload(data.payload)
                phone = normalize_phone(data.phone, self._region)
                refusal = self._policy.refusal(phone)
                if refusal is not None:
                    raise InvalidPhone(refusal)
            except (InvalidPhone, InvalidPayload) as exc:
                results.append(exc)
                continue
            results.append(None)
            checked.append((index, data, phone))
        if not checked:  # refused before the database: no transaction for nothing (nor a 503 when it is away)
            return [result for result in results if result is not None]
        created: list[Lead] = []
        per_phone: Counter[str] = Counter()  # new leads of this batch, not yet in the rate window
        now = self._clock.now()
        async with self._uow() as uow:
            # One query and one insert a batch: per-row round trips to the database thread
            # cost an import more than everything else it does.
            stored = await uow.leads.by_external_ids({data.external_id for _, data, _ in checked if data.external_id})
            for index, data, phone in checked:
                if data.external_id is not None and (existing := stored.get(data.external_id)) is not None:
                    results[index] = (existing, False)  # stored before, or earlier in this batch
                    continue
                if self._per_number is not None:
                    if wait := self._per_number.wait(phone, now, pending=per_phone[phone]):
                        results[index] = TooManyLeads("this number had its share of new leads; try later", wait)
                        continue
                lead = Lead(
                    phone=phone,
                    name=data.name,
                    source=data.source,
                    external_id=data.external_id,
                    payload=data.payload,
                    created_at=now,
                )
                created.append(lead)
                per_phone[phone] += 1
                if data.external_id is not None:
                    stored[data.external_id] = lead
                results[index] = (lead, True)
            await uow.leads.add_many(created)
            if created and not dry_run:
                uow.outbox.add([lead.created() for lead in created], now)
                await uow.commit()
        if created and not dry_run:
            if self._per_number is not None:
                for lead in created:
                    self._per_number.add(lead.phone, now)
            self._on_new_lead()
        return [result for result in results if result is not None]
