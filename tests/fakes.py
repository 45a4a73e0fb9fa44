"""In-memory stand-ins for the dialer's ports (cosmicpython style): our ports, never mock.patch."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Self

from dialer.ports import PbxError
from router.events import DomainEvent, ManagerStateChanged
from router.model import Call, CallState, HistoryEntry, Lead, LeadStatus
from router.pbx_events import CallEndRecord, DeviceState, InboundCall, LegStage, LiveLeg, PbxSnapshot


class ManualClock:
    """Time moves only when a test says so; timers fire on ``advance``."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
        self._t = 0.0
        self._timers: list[_Timer] = []

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._t

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)

    def call_later(self, seconds: float, callback: Callable[[], object]) -> Any:
        timer = _Timer(self._t + seconds, callback)
        self._timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        self._t += seconds
        self._now += timedelta(seconds=seconds)
        due = sorted((t for t in self._timers if t.at <= self._t and not t.cancelled), key=lambda t: t.at)
        self._timers = [t for t in self._timers if t.at > self._t and not t.cancelled]
        for timer in due:
            timer.callback()


@dataclass
class _Timer:
    at: float
    callback: Callable[[], object]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class FakePbx:
    """Records each action; the answer comes a turn of the event loop later, as over a socket.

    ``legs``, ``devices`` and ``callers`` are what its listing shows; ``ended`` the notes it kept of how
    client legs ended (by channel id); ``originate_error`` and ``apologize_error``, if set, are
    what every Originate or apology raises after it was recorded, ``call_end_error`` what every
    reading of a call's end raises; ``after_listing``, if set, what happens on the PBX (and in the
    dialer) right after it answered a listing, before the dialer applies it.
    """

    def __init__(self) -> None:
        self.connected = True
        self.actions: list[tuple[str, ...]] = []
        self.built: list[str] = []  # the channel ids of the clients' Originates built (prepare_client)
        self.off_loop: list[str] = []  # ...and of those written off the loop (write_off_loop)
        self.on_off_loop: Callable[[str], None] | None = None  # what the PBX does once one arrives so
        self.legs: dict[str, LiveLeg] = {}
        self.devices: dict[str, DeviceState] = {}
        self.ended: dict[str, CallEndRecord] = {}
        self.originate_error: PbxError | None = None
        self.apologize_error: PbxError | None = None
        self.call_end_error: PbxError | None = None
        self.after_listing: Callable[[], Awaitable[None]] | None = None
        self.callers: list[InboundCall] = []
        self.listings = 0

    def lists(self, channel_id: str, stage: LegStage = LegStage.ON_HOLD, extension: str | None = None) -> None:
        self.legs[channel_id] = LiveLeg(channel_id, stage, extension)

    async def _send(self, *action: str) -> None:
        self.actions.append(action)
        await asyncio.sleep(0)

    def prepare_client(
        self,
        *,
        channel_id: str,
        phone: str,
        lead_id: int,
        call_id: int,
        ring_timeout: float,
        caller_name: str = "",
        amd: bool = False,
        whisper: str = "",
    ) -> _FakeDial:
        self.built.append(channel_id)
        return _FakeDial(self, channel_id, phone)

    async def _originate_answer(self) -> None:
        await asyncio.sleep(0)
        if self.originate_error is not None:
            raise self.originate_error

    async def originate_manager(
        self,
        *,
        channel_id: str,
        extension: str,
        phone: str,
        lead_id: int,
        call_id: int,
        ring_timeout: float,
        client_ring_timeout: float | None,
        caller_name: str = "",
        whisper: str = "",
    ) -> None:
        await self._send("originate_manager", channel_id, extension, phone)
        if self.originate_error is not None:
            raise self.originate_error

    async def take_inbound(
        self, *, channel_id: str, lead_id: int, call_id: int, ring_timeout: float, caller_name: str, whisper: str
    ) -> None:
        await self._send("take_inbound", channel_id, caller_name)

    async def connect_to_manager(self, *, channel_id: str, extension: str) -> None:
        await self._send("connect", channel_id, extension)

    async def apologize(self, channel_id: str) -> None:
        await self._send("apologize", channel_id)
        if self.apologize_error is not None:
            raise self.apologize_error

    async def hang_up(self, channel_id: str) -> None:
        await self._send("hangup", channel_id)

    async def snapshot(self) -> PbxSnapshot:
        self.listings += 1
        await asyncio.sleep(0)
        listed = PbxSnapshot(legs=dict(self.legs), devices=dict(self.devices), callers=tuple(self.callers))
        if self.after_listing is not None:
            await self.after_listing()
        return listed

    async def call_end(self, channel_id: str, *, since: datetime, until: datetime) -> CallEndRecord | None:
        await asyncio.sleep(0)
        if self.call_end_error is not None:
            raise self.call_end_error
        record = self.ended.get(channel_id)
        return record if record is not None and since <= record.ended_at <= until else None

    def of_kind(self, kind: str) -> list[tuple[str, ...]]:
        return [a for a in self.actions if a[0] == kind]


@dataclass(eq=False)
class _FakeDial:
    """A client's Originate from FakePbx.prepare_client: written once, off the loop or by its call."""

    pbx: FakePbx
    channel_id: str
    phone: str
    called: bool = False
    written: bool = False

    def __call__(self) -> Awaitable[None]:
        assert not self.called, "an Originate is sent once"
        self.called = True
        self._write()  # on the wire before it returns, unless write_off_loop wrote it
        return self.pbx._originate_answer()

    def write_off_loop(self) -> bool:
        if self.written:
            return False
        self._write()
        self.pbx.off_loop.append(self.channel_id)
        if self.pbx.on_off_loop is not None:
            self.pbx.on_off_loop(self.channel_id)
        return True

    def _write(self) -> None:
        if not self.written:
            self.written = True
            self.pbx.actions.append(("originate", self.channel_id, self.phone))


@dataclass
class FakeDb:
    leads: dict[int, Lead] = field(default_factory=dict)
    calls: dict[int, Call] = field(default_factory=dict)
    billing: dict[str, int] = field(default_factory=dict)
    outbox: list[DomainEvent] = field(default_factory=list)
    history: list[HistoryEntry] = field(default_factory=list)
    manager_states: list[ManagerStateChanged] = field(default_factory=list)
    commits: int = 0
    steering: dict[int, str | None] = field(default_factory=dict)  # call id -> the daemon steering it
    # The next ``refusals`` commits whose outbox holds an event of this type fail, as a locked database's.
    refused: type[DomainEvent] | None = None
    refusals: int = 0
    # Whether commits run ``then`` once they succeed, as SQLite's on a thread of its own: the loop
    # then turns before the committer resumes, as other tasks may run first on the real one.
    commits_then: bool = False


class _Leads:
    def __init__(self, db: FakeDb) -> None:
        self._db = db

    async def add(self, new: Sequence[Lead]) -> list[Lead]:
        refused = []
        for lead in new:
            if lead.external_id is not None and lead.external_id in await self.by_external_ids([lead.external_id]):
                refused.append(lead)
                continue
            lead.id = len(self._db.leads) + 1
            self._db.leads[lead.id] = copy.deepcopy(lead)
        return refused

    async def get(self, lead_id: int, *, for_update: bool = False) -> Lead | None:
        lead = self._db.leads.get(lead_id)
        return copy.deepcopy(lead) if lead else None

    async def by_external_ids(self, external_ids: Collection[str]) -> dict[str, Lead]:
        wanted = set(external_ids)
        found = {
            lead.external_id: copy.deepcopy(lead)
            for lead in self._db.leads.values()
            if lead.external_id is not None and lead.external_id in wanted
        }
        for entry in self._db.history:
            if entry.external_id in wanted and entry.external_id not in found:
                found[entry.external_id] = copy.deepcopy(self._db.leads[entry.lead_id])
        return found

    async def of_phones(self, phones: Collection[str], since: datetime) -> list[Lead]:
        return [
            copy.deepcopy(lead) for lead in self._db.leads.values() if lead.phone in phones and lead.created_at >= since
        ]

    async def sla_overdue(self, now: datetime, limit: int) -> list[Lead]:
        overdue = sorted(
            (lead for lead in self._db.leads.values() if lead.sla_overdue(now)),
            key=lambda lead: (lead.sla_due_at, lead.id),
        )
        return [copy.deepcopy(lead) for lead in overdue[:limit]]

    async def next_sla_due_at(self) -> datetime | None:
        times = [
            lead.sla_due_at
            for lead in self._db.leads.values()
            if lead.sla_due_at is not None and lead.status is LeadStatus.ASSIGNED and lead.outcome is None
        ]
        return min(times, default=None)

    async def open_leads_by_owner(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for lead in self._db.leads.values():
            if lead.owner_id is not None and lead.outcome is None:
                counts[lead.owner_id] = counts.get(lead.owner_id, 0) + 1
        return counts

    async def claim_due(
        self, now: datetime, limit: int, skip_pbxes: Collection[str] = (), fresh: Sequence[Lead] = ()
    ) -> list[Lead]:
        due = sorted(
            (
                lead
                for lead in self._db.leads.values()
                if lead.status in (LeadStatus.NEW, LeadStatus.SCHEDULED)
                and lead.pbx not in skip_pbxes
                and lead.next_attempt_at is not None
                and lead.next_attempt_at <= now
            ),
            key=lambda lead: (lead.next_attempt_at, lead.backlog_rank, lead.id),
        )[:limit]
        for lead in due:
            lead.status, lead.attempts, lead.next_attempt_at = LeadStatus.DIALING, lead.attempts + 1, None
        return [copy.deepcopy(lead) for lead in due]

    async def update(self, changed: Sequence[Lead]) -> None:
        for lead in changed:
            assert lead.id is not None
            self._db.leads[lead.id] = copy.deepcopy(lead)

    async def next_due_at(self, skip_pbxes: Collection[str] = ()) -> datetime | None:
        times = [
            lead.next_attempt_at
            for lead in self._db.leads.values()
            if lead.status in (LeadStatus.NEW, LeadStatus.SCHEDULED)
            and lead.next_attempt_at is not None
            and lead.pbx not in skip_pbxes
        ]
        return min(times, default=None)

    async def owner_of_phone(self, phone: str) -> str | None:
        owned = [lead for lead in self._db.leads.values() if lead.phone == phone and lead.owner_id is not None]
        return max(owned, key=lambda lead: lead.id or 0).owner_id if owned else None

    async def newest_by_phone(self, phone: str) -> Lead | None:
        found = [lead for lead in self._db.leads.values() if lead.phone == phone]
        return copy.deepcopy(max(found, key=lambda lead: lead.id or 0)) if found else None


class _Calls:
    def __init__(self, db: FakeDb, daemon_id: str | None) -> None:
        self._db = db
        self._daemon_id = daemon_id

    async def add(self, new: Sequence[Call]) -> None:
        for call in new:
            call.id = len(self._db.calls) + 1
            self._db.calls[call.id] = copy.deepcopy(call)
            self._db.steering[call.id] = self._daemon_id

    async def add_caller(self, call: Call) -> bool:
        if any(stored.channel_id == call.channel_id for stored in self._db.calls.values()):
            return False
        await self.add([call])
        return True

    async def update(self, changed: Sequence[Call]) -> None:
        for call in changed:
            assert call.id is not None
            self._db.calls[call.id] = copy.deepcopy(call)

    async def add_billing(self, billed: Sequence[tuple[str, int]]) -> None:
        for channel_id, seconds in billed:
            self._db.billing[channel_id] = self._db.billing.get(channel_id, 0) + seconds

    async def for_lead(self, lead_id: int) -> list[Call]:
        return [copy.deepcopy(c) for c in self._db.calls.values() if c.lead_id == lead_id]

    def _unfinished(self) -> list[Call]:
        return [call for call in self._db.calls.values() if call.state is not CallState.ENDED]

    async def waiting_elsewhere(self) -> int:
        return sum(
            1
            for call in self._unfinished()
            if call.state in (CallState.DIALING, CallState.HOLDING)
            and self._db.steering.get(call.id or 0) != self._daemon_id
        )

    async def steered_by(self) -> set[str | None]:
        return {self._db.steering.get(call.id or 0) for call in self._unfinished()}

    async def take_over(self, daemon_ids: Collection[str | None]) -> list[Call]:
        taken = [call for call in self._unfinished() if self._db.steering.get(call.id or 0) in daemon_ids]
        for call in taken:
            self._db.steering[call.id or 0] = self._daemon_id
        return [copy.deepcopy(call) for call in taken]


@dataclass
class SoleDaemon:
    """The other daemons as one daemon alone sees them (as on SQLite): every other id is a past run's."""

    daemon_id: str | None = None
    shared: bool = False

    async def gone(self, daemon_ids: Collection[str | None]) -> set[str | None]:
        return {daemon_id for daemon_id in daemon_ids if daemon_id != self.daemon_id}

    async def reserve(self, manager_id: str, call_id: int) -> bool:
        return True

    async def release(self, manager_id: str, call_id: int) -> None:
        pass


class _History:
    def __init__(self, db: FakeDb) -> None:
        self._db = db

    async def add(self, entry: HistoryEntry) -> bool:
        if entry.external_id is not None and any(kept.external_id == entry.external_id for kept in self._db.history):
            return False
        self._db.history.append(entry)
        return True

    async def for_lead(self, lead_id: int) -> list[HistoryEntry]:
        return [entry for entry in self._db.history if entry.lead_id == lead_id]


class _Managers:
    def __init__(self) -> None:
        self.changes: list[ManagerStateChanged] = []

    async def add(self, changes: Sequence[ManagerStateChanged]) -> None:
        self.changes.extend(changes)


class _Outbox:
    def __init__(self) -> None:
        self.events: list[DomainEvent] = []

    def add(self, events: Sequence[DomainEvent], at: datetime) -> None:
        self.events.extend(events)


class FakeUnitOfWork:
    """Changes reach the shared FakeDb only on commit, like a real transaction.

    Beginning one gives the event loop a turn, as waiting for a real database does, so a test
    sees other tasks run meanwhile. Nothing yields between the snapshot and the commit, which
    keeps two units of work from overwriting each other's commits in this whole-copy fake.
    """

    def __init__(self, db: FakeDb, daemon_id: str | None = None) -> None:
        self._db = db
        self._daemon_id = daemon_id

    async def __aenter__(self) -> Self:
        await asyncio.sleep(0)
        self._work = copy.deepcopy(self._db)
        self.leads = _Leads(self._work)
        self.calls = _Calls(self._work, self._daemon_id)
        self.history = _History(self._work)
        self.managers = _Managers()
        self.outbox = _Outbox()
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    async def commit(self, meanwhile: Callable[[], None] | None = None, then: Callable[[], None] | None = None) -> None:
        refused = self._db.refused
        if self._db.refusals and refused is not None and any(isinstance(e, refused) for e in self.outbox.events):
            self._db.refusals -= 1
            raise OSError("database is locked")
        if meanwhile is not None:
            with contextlib.suppress(Exception):  # as the real one: logged, the commit goes on
                meanwhile()
        self._db.leads, self._db.calls, self._db.billing = self._work.leads, self._work.calls, self._work.billing
        self._db.history = self._work.history
        self._db.steering = self._work.steering
        self._db.outbox.extend(self.outbox.events)
        self._db.manager_states.extend(self.managers.changes)
        self._db.commits += 1
        self._work = copy.deepcopy(self._db)
        self.leads, self.calls = _Leads(self._work), _Calls(self._work, self._daemon_id)
        self.managers = _Managers()
        self.outbox = _Outbox()
        if then is not None and self._db.commits_then:
            with contextlib.suppress(Exception):  # as the real one: logged, the commit stands
                then()
            for _ in range(3):
                await asyncio.sleep(0)
