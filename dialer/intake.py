"""Taking a lead in: validate, normalise, commit, then let the dialer know.

The lead and its ``lead.created`` event are committed before the caller hears "accepted",
so an answered webhook never loses a lead. A repeated ``external_id`` returns the lead
already stored instead of creating a second one: the insert itself decides (one atomic
statement), so two intakes of one lead at the same moment still store it once.

Group commit: leads that arrive while a transaction is being written wait for the next one
and share it, so a burst costs a few transactions instead of one per lead (the begin, the
commit and the hand-offs to the database thread were most of a lead's cost at 200 leads/s).
Each caller still hears back only after the transaction holding its lead committed.

A lead from the phone of an open lead within the scenario's duplicate window
(``router.duplicates``) is not a second lead: it is kept in the open lead's history with a
``lead.duplicate`` event, and the caller gets the open lead. Its own ``external_id`` is kept
too, so repeating that POST is answered the same way and records nothing twice.

A new lead that may not be called now (the scenario's call window) is stored due at the next
allowed minute, with its place in that opening's backlog.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog

from dialer.ports import Clock, UnitOfWork, UnitOfWorkFactory
from router.duplicates import open_duplicate
from router.events import DomainEvent
from router.model import HistoryEntry, HistoryKind, Lead
from router.phone import InvalidPhone, Phone, PhonePolicy, parse_phone
from router.routing import RoutingPlan

log = structlog.get_logger("dialer")

YIELD_EVERY = 10  # leads of an import's batch checked between two turns of the event loop

# Deeper than any CRM's custom fields need, shallow enough that storing, rendering and
# publishing the payload never approaches Python's recursion limit.
MAX_PAYLOAD_DEPTH = 32


class InvalidPayload(ValueError):
    """The payload cannot be stored and published as JSON as it is; the message says where and why."""


def check_payload(payload: dict[str, Any]) -> None:
    """Raise InvalidPayload for NaN, ±Infinity (1e999 parses as one), nesting deeper than
    MAX_PAYLOAD_DEPTH, or text no database can store: a lone surrogate, a NUL.

    Python's json reads them all, but the numbers have no JSON form, a lone surrogate ("\\ud800")
    is no UTF-8 and PostgreSQL's jsonb takes no NUL: stored, such a lead could be neither
    answered, nor shown, nor published, and the commit that failed on it failed the leads of
    other clients committed with it. Iterative, so no payload can exhaust the stack.
    """
    pending: list[tuple[str, Any, int]] = [("payload", payload, 1)]
    while pending:
        where, value, depth = pending.pop()
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidPayload(f"{where}: {value} is not a JSON number (NaN and infinities cannot be stored)")
        if isinstance(value, str):
            _check_text(where, value)
        elif isinstance(value, dict | list):
            if depth > MAX_PAYLOAD_DEPTH:
                raise InvalidPayload(f"{where}: nested deeper than {MAX_PAYLOAD_DEPTH} levels")
            if isinstance(value, dict):
                for key in value:
                    _check_text(f"{where} key {key!r}", key)
            items = value.items() if isinstance(value, dict) else enumerate(value)
            pending.extend((f"{where}.{key}", item, depth + 1) for key, item in items)


def _check_text(where: str, text: str) -> None:
    if "\x00" in text:
        raise InvalidPayload(f"{where}: contains a NUL character (\\u0000), which cannot be stored")
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            raise InvalidPayload(f"{where}: contains a lone surrogate (\\ud800-\\udfff), which is not text") from None


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
    """At most ``limit.count`` events per key within ``limit.window``; memory bounded by the keys seen in it.

    A key's events are a tuple (a handful of times, which the garbage collector stops tracking),
    and the keys are kept in the order of their last event, so those whose last event left the
    window go from the front as others come: a flood of distinct numbers costs a tuple each for a
    window, and no pass over all of them. (A deque each was 760 bytes, walked by every full
    collection, and a sweep of the whole dict once per window held the loop for as long as the
    dict took to rebuild.)
    """

    def __init__(self, limit: RateLimit) -> None:
        self._limit = limit
        self._events: OrderedDict[str, tuple[datetime, ...]] = OrderedDict()

    def _recent(self, key: str, now: datetime) -> tuple[datetime, ...]:
        """The key's events still in the window (kept so): those after ``now - window``, a slice
        found by bisection, so a key with thousands of events (an address behind a proxy) costs
        a copy of pointers, not a Python step per event."""
        stamps = self._events.get(key, ())
        if stamps and now - stamps[0] >= self._limit.window:
            stamps = stamps[bisect.bisect_right(stamps, now - self._limit.window) :]
            if stamps:
                self._events[key] = stamps
            else:
                del self._events[key]
        return stamps

    def wait(self, key: str, now: datetime, pending: int = 0) -> float:
        """Seconds until ``key`` has room again; 0 when it has room now.

        ``pending``: events at ``now`` not added yet (earlier leads of the same batch).
        """
        stamps = self._recent(key, now)
        over = len(stamps) + pending - self._limit.count
        if over < 0:
            return 0.0
        # The oldest event that must leave the window before one more fits: a pending one leaves a window from now.
        oldest = stamps[over] if over < len(stamps) else now
        return (oldest + self._limit.window - now).total_seconds()

    def add(self, key: str, now: datetime) -> None:
        events = self._events
        events[key] = (*self._recent(key, now), now)
        events.move_to_end(key)
        while events:
            first = next(iter(events))
            if now - events[first][-1] < self._limit.window:
                break
            del events[first]


@dataclass(frozen=True)
class LeadInput:
    phone: str
    name: str = ""
    source: str = ""
    external_id: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)


# What became of one lead of a batch: stored (and whether new), or why not.
Submitted = tuple[Lead, bool] | InvalidPhone | InvalidPayload | TooManyLeads


@dataclass
class DryRun:
    """What a dry run's earlier batches would have stored. Nothing of them is kept, so a later
    batch sees them here as a real import sees the rows stored before it: an external_id given
    again, the phone of a lead it opened (a duplicate), a number's share of new leads."""

    leads: list[Lead] = field(default_factory=list)  # the new ones
    by_external_id: dict[str, Lead] = field(default_factory=dict)  # new or merged into


@dataclass
class _Pending:
    """A checked lead waiting for the next transaction, and its caller waiting for the answer."""

    data: LeadInput
    phone: str  # normalised
    answer: asyncio.Future[tuple[Lead, bool]]


@dataclass(frozen=True)
class Claimed:
    """What the dialer claimed in the intake's transaction asks of it: ``prepare`` runs while the
    transaction commits, ``send`` on the committing thread right after it did, where there is
    one (UnitOfWork.commit's ``then``: the Originates built by then leave from there),
    ``committed`` on the loop once it did (the other Originates leave then), ``abandoned``
    instead when the commit raised (the room the claim held is free again, unless ``send`` let
    Originates out: then the dialer takes the calls as committed)."""

    prepare: Callable[[], None]
    send: Callable[[], None]
    committed: Callable[[], None]
    abandoned: Callable[[], None]


# The dialer's Dialer.claim_new: claims due leads within the intake's transaction, told of the leads
# the intake added to it (None: nothing claimed).
ClaimNew = Callable[[UnitOfWork, datetime, Sequence[Lead]], Awaitable[Claimed | None]]


class _RaceLost(Exception):
    """The insert found an external_id taken that the lookup had not: try the batch again."""


_RACE_TRIES = 3  # a batch losing the race three times running is an error its callers hear

# A transaction holds at most this many leads: a huge burst still commits in steps of bounded length.
MAX_BATCH = 200


class LeadIntake:
    def __init__(
        self,
        *,
        uow: UnitOfWorkFactory,
        clock: Clock,
        routing: Callable[[], RoutingPlan],
        default_region: str,
        on_new_lead: Callable[[], None],
        policy: PhonePolicy | None = None,
        per_number: RateLimit | None = None,
        claim: ClaimNew | None = None,
    ) -> None:
        """``policy``: which numbers may be dialled, by default fixed and mobile ones of the default
        region, unless the lead's scenario in ``routing`` has its own lists; ``per_number``: new
        leads a number may get in a window (a callback flood aimed at one person, or at the
        company's bill), unlimited by default."""
        self._per_number = KeyedWindow(per_number) if per_number else None
        self._uow = uow
        self._clock = clock
        self._routing = routing
        self._region = default_region
        self._policy = policy or PhonePolicy(default_region)
        self._on_new_lead = on_new_lead
        self._claim = claim
        self._pending: list[_Pending] = []  # checked leads waiting for the next transaction
        self._writer: asyncio.Task[None] | None = None  # commits batches while leads are pending

    async def submit(self, data: LeadInput) -> tuple[Lead, bool]:
        """Store the lead; returns it and whether it is new. Raises InvalidPhone or InvalidPayload."""
        check_payload(data.payload)
        phone = parse_phone(data.phone, self._region)
        self._check_number(phone, data)
        answer: asyncio.Future[tuple[Lead, bool]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(data, phone.e164, answer))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_batches(), name="lead-intake")
        return await answer

    async def submit_batch(self, batch: Sequence[LeadInput], *, dry_run: DryRun | None = None) -> list[Submitted]:
        """Store an import's rows in one transaction; for each, the lead and whether it is new, or
        why it was refused. ``dry_run``: every check as for real, with the dry run's earlier
        batches as if stored, then nothing is kept (the batch joins them).

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
                phone = parse_phone(data.phone, self._region)
                self._check_number(phone, data)
            except (InvalidPhone, InvalidPayload) as exc:
                results.append(exc)
                continue
            results.append(None)
            checked.append((index, data, phone.e164))
        if checked:  # refused before the database: no transaction for nothing (nor a 503 when it is away)
            answers = await self._store([(data, phone) for _, data, phone in checked], dry_run=dry_run)
            for (index, _, _), answer in zip(checked, answers, strict=True):
                results[index] = answer
        return [result for result in results if result is not None]

    async def _write_batches(self) -> None:
        """Commit what is pending, batch after batch, until nothing is; every caller gets its answer."""
        batch: list[_Pending] = []
        try:
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                answers: list[tuple[Lead, bool] | Exception]
                try:
                    answers = [*await self._store([(pending.data, pending.phone) for pending in batch])]
                except Exception as exc:  # the database: every caller of this batch hears why
                    answers = [exc] * len(batch)
                for pending, answer in zip(batch, answers, strict=True):
                    if pending.answer.done():  # its caller went away (a cancelled request)
                        continue
                    if isinstance(answer, Exception):
                        pending.answer.set_exception(answer)
                    else:
                        pending.answer.set_result(answer)
                batch = []
        finally:
            self._writer = None
            # Only when cancelled (shutdown) is anything left: nobody is told "stored" that is not.
            for pending in [*batch, *self._pending]:
                pending.answer.cancel()
            self._pending = []

    async def _store(
        self, batch: list[tuple[LeadInput, str]], *, dry_run: DryRun | None = None
    ) -> list[tuple[Lead, bool] | TooManyLeads]:
        """One transaction for the batch of checked leads (and their normalised phones): (lead,
        created) or the refusal, in the batch's order. ``dry_run``: rolled back, nothing claimed."""
        for _ in range(_RACE_TRIES - 1):
            with contextlib.suppress(_RaceLost):
                return await self._store_once(batch, dry_run=dry_run)
        return await self._store_once(batch, dry_run=dry_run)

    async def _store_once(
        self, batch: list[tuple[LeadInput, str]], *, dry_run: DryRun | None
    ) -> list[tuple[Lead, bool] | TooManyLeads]:
        answers: list[tuple[Lead, bool] | TooManyLeads] = []
        # By external_id: a repeat within the batch (or the dry run) gets the first.
        created: dict[str, Lead] = dict(dry_run.by_external_id) if dry_run is not None else {}
        counted: dict[str, int] = {}  # new leads per number in this batch (and the dry run)
        if dry_run is not None:
            for earlier in dry_run.leads:
                counted[earlier.phone] = counted.get(earlier.phone, 0) + 1
        new: list[Lead] = []
        merges: list[tuple[Lead, Lead]] = []  # (the open lead, the duplicate kept in its history)
        async with self._uow() as uow:
            now = self._clock.now()
            plan = self._routing()
            given = [data.external_id for data, _ in batch if data.external_id is not None]
            stored = await uow.leads.by_external_ids(given) if given else {}
            # One query for the batch: the recent leads of its phones, among them any open lead a
            # new one would duplicate (each scenario's window is applied below).
            widest = max((scenario.duplicate_window for scenario in plan.scenarios), default=0.0)
            recent: dict[str, list[Lead]] = {}
            if widest > 0:
                since = now - timedelta(seconds=widest)
                for earlier in await uow.leads.of_phones({phone for _, phone in batch}, since):
                    recent.setdefault(earlier.phone, []).append(earlier)
                for earlier in dry_run.leads if dry_run is not None else ():
                    recent.setdefault(earlier.phone, []).append(earlier)
            for data, phone in batch:
                if data.external_id is not None:
                    existing = created.get(data.external_id) or stored.get(data.external_id)
                    if existing is not None:
                        answers.append((existing, False))
                        continue
                if self._per_number is not None and (wait := self._per_number.wait(phone, now, counted.get(phone, 0))):
                    answers.append(TooManyLeads("this number had its share of new leads; try later", wait))
                    continue
                lead = Lead(
                    phone=phone,
                    name=data.name,
                    source=data.source,
                    external_id=data.external_id,
                    payload=data.payload,
                    created_at=now,
                )
                scenario = plan.scenario_for(lead, now)
                # A lead of this batch is open too: the same form sent twice in one burst is one lead.
                open_lead = open_duplicate(recent.get(phone, []), phone, now, scenario.duplicate_window)
                if open_lead is not None and data.external_id is not None and open_lead.external_id == data.external_id:
                    # The same form again, committed by another transaction between our two reads
                    # (PostgreSQL reads each statement afresh): that lead, not a duplicate of it.
                    answers.append((open_lead, False))
                    continue
                if open_lead is not None:
                    merges.append((open_lead, lead))
                    if data.external_id is not None:
                        created[data.external_id] = open_lead
                    answers.append((open_lead, False))
                    continue
                opening = scenario.next_allowed(phone, now)
                if opening is not None and opening > now:
                    lead.next_attempt_at = opening
                    lead.backlog_rank = scenario.backlog_rank(now)
                lead.pbx = scenario.pbx  # only that PBX's dialer claims it (None: any)
                new.append(lead)
                recent.setdefault(phone, []).append(lead)
                counted[phone] = counted.get(phone, 0) + 1
                if data.external_id is not None:
                    created[data.external_id] = lead
                answers.append((lead, True))
            claimed = None
            if new and await uow.leads.add(new):
                # An external_id was stored by another transaction since we looked (another daemon,
                # or an import beside the group commit on PostgreSQL). Leaving the unit of work
                # rolls this one back; the next try sees that lead, and every answer or merge that
                # pointed at ours is made again from it.
                raise _RaceLost
            if (new or merges) and dry_run is None:
                events: list[DomainEvent] = [lead.created() for lead in new]
                for existing, duplicate in merges:
                    assert existing.id is not None  # a lead of this batch has its id since the add
                    merged = existing.duplicate(duplicate)
                    details = {key: value for key, value in merged.data().items() if key != "lead_id"}
                    entry = HistoryEntry(existing.id, HistoryKind.DUPLICATE, now, details, duplicate.external_id)
                    if not await uow.history.add(entry):
                        raise _RaceLost  # the same form merged by another transaction: its answer is ours
                    events.append(merged)
                uow.outbox.add(events, now)
                if new:
                    claimed = await self._claim(uow, now, new) if self._claim is not None else None
                try:
                    if claimed is None:
                        await uow.commit()
                    else:
                        await uow.commit(claimed.prepare, claimed.send)
                except BaseException:
                    if claimed is not None:
                        claimed.abandoned()
                    raise
                if claimed is not None:
                    try:
                        claimed.committed()  # the claimed leads' Originates leave now
                    except Exception:  # a bug in the dialer's bookkeeping: the leads are stored all the same
                        log.exception("intake.after_commit_failed", leads=[lead.id for lead in new])
        if dry_run is not None:
            dry_run.leads.extend(new)
            dry_run.by_external_id.update(created)
            return answers
        if self._per_number is not None:
            for lead in new:
                self._per_number.add(lead.phone, now)
        if new and claimed is None:
            self._on_new_lead()
        return answers

    def _check_number(self, phone: Phone, data: LeadInput) -> None:
        facts = Lead(phone.e164, data.name, data.source, data.external_id, data.payload, self._clock.now())
        policy, scenario = self._routing().phone_policy(facts, self._policy)
        refusal = policy.refusal(phone)
        if refusal is not None:
            raise InvalidPhone(refusal if scenario is None else f"{refusal} (scenario {scenario!r})")
