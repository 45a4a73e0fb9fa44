"""What the dialer needs from the outside world, as structural types.

Adapters satisfy these without importing them; the composition root hands them in,
unit tests hand in fakes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime
from typing import Protocol, Self

from router.events import DomainEvent, ManagerStateChanged
from router.model import Call, HistoryEntry, Lead, OutcomeReport
from router.pbx_events import CallEndRecord, PbxSnapshot


class Clock(Protocol):
    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    def call_later(self, seconds: float, callback: Callable[[], object]) -> asyncio.TimerHandle: ...


class PbxError(Exception):
    """The PBX refused an action or could not be asked (the subclasses say which)."""


class PbxNotSent(PbxError):
    """Nothing reached the PBX (not connected): the action surely had no effect."""


class PbxNoAnswer(PbxError):
    """The action went out but its answer never came (the link dropped, or the PBX is stuck):
    the PBX may or may not have acted on it, so it must not be sent again blindly."""


class PreparedDial(Protocol):
    """A client's Originate built ahead of its sending (Pbx.prepare_client)."""

    def __call__(self) -> Awaitable[None]:
        """Dial him, on the loop, once: when this returns, the Originate is on its way, before
        anything else runs (speed to dial); awaiting what it returns gives the PBX's answer to
        it, or PbxError. Raises nothing."""

    def write_off_loop(self) -> bool:
        """Write the Originate now, from the thread that committed its call (not the loop's), if
        the PBX link takes it from there; True when it did. Thread-safe; raises nothing; called at
        most once, and only after that commit succeeded. The call on the loop must follow all the
        same: it writes what this did not, and gives the answer either way."""


class Pbx(Protocol):
    @property
    def connected(self) -> bool: ...

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
    ) -> PreparedDial:
        """The client's Originate built now; calling the result dials him, once. Neither raises.

        The call's own answer arrives later as an OriginateResult. Built ahead, the action costs
        the dial nothing but its write (the intake builds it while its commit is on the database's
        thread, and writes it from there once committed).
        ``caller_name`` is what the manager's phone will show (router.caller_name), ``whisper`` a
        sound file played to him alone before the bridge; with ``amd`` the PBX runs AMD() on the
        answer and reports its verdict (MachineDetected) before the client may be sent to a manager."""

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
        """Manager first: ring the manager; once he answers the PBX dials the client (for
        ``client_ring_timeout`` seconds, None: its own default). Raises PbxError."""

    async def take_inbound(
        self, *, channel_id: str, lead_id: int, call_id: int, ring_timeout: float, caller_name: str, whisper: str
    ) -> None:
        """An inbound caller held by the PBX becomes one of our client legs: give his channel what
        the connect context reads (our client legs get it with their Originate). Raises PbxError."""

    async def connect_to_manager(self, *, channel_id: str, extension: str) -> None:
        """Send the answered client to a manager's phone."""

    async def apologize(self, channel_id: str) -> None:
        """Tell the client nobody is free and hang up (or just hang up)."""

    async def hang_up(self, channel_id: str) -> None: ...

    async def snapshot(self) -> PbxSnapshot:
        """Our client legs the PBX has right now, the stage of each, and the managers' phones."""

    async def call_end(self, channel_id: str, *, since: datetime, until: datetime) -> CallEndRecord | None:
        """The PBX's own note of how an answered client leg that ended between ``since`` and
        ``until`` ended, if it kept one. Raises PbxError when it cannot be asked."""


class LeadRepository(Protocol):
    async def add(self, new: Sequence[Lead]) -> list[Lead]:
        """Insert and set each lead's ``id``; returns those not stored because another lead has their
        external_id (decided by the insert itself: two intakes of one lead never both store it)."""

    async def get(self, lead_id: int, *, for_update: bool = False) -> Lead | None:
        """``for_update``: no other unit of work changes the lead until this one ends."""

    async def by_external_ids(self, external_ids: Collection[str]) -> dict[str, Lead]:
        """The stored leads among these external ids, by external id, a duplicate's external id
        giving the lead it was merged into."""

    async def claim_due(
        self, now: datetime, limit: int, skip_pbxes: Collection[str] = (), fresh: Sequence[Lead] = ()
    ) -> list[Lead]:
        """Atomically move up to ``limit`` due leads to DIALING (attempts + 1) and return them;
        leads meant for one of ``skip_pbxes`` (``Lead.pbx``) are left to those PBXes' dialers.
        ``fresh``: leads added in this unit of work (as they were added), a hint only: the
        leads claimed are the same with or without it."""

    async def update(self, changed: Sequence[Lead]) -> None: ...

    async def next_due_at(self, skip_pbxes: Collection[str] = ()) -> datetime | None: ...

    async def owner_of_phone(self, phone: str) -> str | None:
        """The owner of the newest lead from this phone that has one (owner first)."""

    async def newest_by_phone(self, phone: str) -> Lead | None:
        """The newest lead from this phone, if any (an inbound caller's)."""

    async def of_phones(self, phones: Collection[str], since: datetime) -> list[Lead]:
        """The leads from these phones created since ``since`` (one query)."""

    async def sla_overdue(self, now: datetime, limit: int) -> list[Lead]:
        """Up to ``limit`` owned leads past their SLA deadline that have no outcome, earliest first."""

    async def next_sla_due_at(self) -> datetime | None: ...

    async def open_leads_by_owner(self) -> dict[str, int]:
        """Each owner's count of leads without a reported outcome."""


class HistoryRepository(Protocol):
    async def add(self, entry: HistoryEntry) -> bool:
        """Keep the entry; False (nothing kept) when its ``external_id`` is stored already: another
        transaction merged the same form meanwhile (decided by the insert itself)."""

    async def for_lead(self, lead_id: int) -> list[HistoryEntry]: ...


class CallRepository(Protocol):
    async def add(self, new: Sequence[Call]) -> None:
        """Insert and set each ``call.id``."""

    async def add_caller(self, call: Call) -> bool:
        """Insert an inbound caller's call and set its ``id``; False, storing nothing, when a call
        on that channel is stored already (another daemon, or an earlier look, took him)."""

    async def update(self, changed: Sequence[Call]) -> None:
        """Store the calls' state and their manager legs."""

    async def add_billing(self, billed: Sequence[tuple[str, int]]) -> None:
        """Add CDR billable seconds to calls, by client channel id: those this daemon steers (each
        daemon on a PBX hears every Cdr)."""

    async def for_lead(self, lead_id: int) -> list[Call]: ...

    async def waiting_elsewhere(self) -> int:
        """Other daemons' calls whose clients are dialled or on hold (each will want a free manager);
        dispatchers take turns from this call to their commit."""

    async def steered_by(self) -> set[str | None]:
        """The daemons steering the calls not ended yet (None: stored before daemons had ids)."""

    async def take_over(self, daemon_ids: Collection[str | None]) -> list[Call]:
        """Steer from now on the unfinished calls of these (gone) daemons; returns them."""


class OutcomeRepository(Protocol):
    async def add(self, report: OutcomeReport) -> None:
        """Keep the report and make its outcome the lead's."""


class ManagerStateRepository(Protocol):
    async def add(self, changes: Sequence[ManagerStateChanged]) -> None:
        """Keep each change of a manager's state (for stats, and a pause across a restart)."""


class Outbox(Protocol):
    def add(self, events: Sequence[DomainEvent], at: datetime) -> None:
        """Record events to publish; written with the unit of work's commit."""


class Peers(Protocol):
    """The other daemons sharing the database (storage.cluster)."""

    @property
    def shared(self) -> bool:
        """Other daemons may run: managers are promised in the database before their phones ring."""

    async def gone(self, daemon_ids: Collection[str | None]) -> set[str | None]:
        """Which of these daemons no longer run; never this one."""

    async def reserve(self, manager_id: str, call_id: int) -> bool:
        """Promise the manager to the call; False when another daemon's live call has him."""

    async def release(self, manager_id: str, call_id: int) -> None: ...


class UnitOfWork(Protocol):
    @property
    def leads(self) -> LeadRepository: ...

    @property
    def calls(self) -> CallRepository: ...

    @property
    def outcomes(self) -> OutcomeRepository: ...

    @property
    def history(self) -> HistoryRepository: ...

    @property
    def managers(self) -> ManagerStateRepository: ...

    @property
    def outbox(self) -> Outbox: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None:
        """Roll back whatever was not committed."""

    async def commit(self, meanwhile: Callable[[], None] | None = None, then: Callable[[], None] | None = None) -> None:
        """Commit; ``meanwhile`` runs while the database writes the commit (or before it, where
        its driver cannot overlap them): work for after the commit that cannot fail it, such as
        building what will be sent once it is done. ``then`` runs on the thread that committed,
        right after a commit that succeeded, where the commit runs on a thread of its own (and
        nowhere else): it must be thread-safe, and whatever it does not do, the caller does once
        this returns. The caller's wake-up is queued before ``then`` runs, yet other tasks may
        run before the caller does and see the replies to what ``then`` sent. Cancelled where
        ``then`` runs, this raises only once ``then`` ran or the commit failed: what ``then`` did,
        the caller then finds done (elsewhere a cancelled commit's outcome is unknown). Should
        either raise, that is logged, and the commit's outcome alone is what this returns or
        raises."""


UnitOfWorkFactory = Callable[[], UnitOfWork]
