"""The dialer: claims due leads, dials them, and steers each live call by what the PBX reports.

Three tasks share the in-memory state and never run at the same time between awaits:

* the dispatch loop claims due leads (one transaction) and only then sends the Originates,
  so a lead is never dialled without a committed claim, and never twice at once;
* the event loop applies PBX events in arrival order. It changes memory first and sends
  Redirect/Hangup right away (a client on hold should not wait for a disk), then commits
  everything the batch changed, with its outbox events, in one transaction
  (``dialer.write_behind``);
* the takeover loop looks every few seconds for calls whose daemon is gone (several daemons on
  one PostgreSQL, ``storage.cluster``) and has the PBX's listing read for them, which adopts them.

Who on hold gets which free manager is the domain's rule (``router.hold_queue``); what a
(re)login means for the live calls is decided from the PBX's listing by ``dialer.resync``;
whether the PBX may be dialled at all is the circuit breaker's call (``router.breaker``).
The Dialer applies all three: it is the only writer of live-call state.

An Originate the PBX refuses, cannot place or never answers costs the lead no attempt: the
lead goes back in line (``Lead.finish_attempt``). One whose answer the link lost is neither
re-sent nor written off: the PBX's next listing says whether the call exists.

PBX events arrive through ``pbx_event`` from the AMI reader, which must never block: it
only enqueues.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import structlog

from dialer.intake import Claimed
from dialer.ports import (
    Clock,
    Pbx,
    PbxError,
    PbxNoAnswer,
    PbxNotSent,
    Peers,
    PreparedDial,
    UnitOfWork,
    UnitOfWorkFactory,
)
from dialer.resync import CatchUp, Missed, decide_resync
from dialer.settings import DialerSettings
from dialer.write_behind import FLUSH_RETRY, WriteBehind
from recordings.naming import RecordingNamer
from router.board import ManagerBoard, ManagerState, StateChange
from router.breaker import BreakerChange, PbxBreaker
from router.caller_name import caller_name
from router.events import DomainEvent, ManagerStateChanged
from router.hold_queue import HoldQueue
from router.model import Call, CallState, Disposition, HistoryEntry, HistoryKind, Lead, LeadStatus, LegResult
from router.pacing import Floor, PacingMeter, PacingMode, PacingReading, clients_to_dial
from router.pbx_events import (
    Billed,
    Bridged,
    CallEndRecord,
    CallProgress,
    DialEnded,
    DialOutcome,
    ExtensionState,
    HungUp,
    InboundCall,
    LegStage,
    MachineDetected,
    OriginateOutcome,
    OriginateResult,
    PbxBooted,
    PbxEvent,
    PbxShuttingDown,
    PbxSnapshot,
    RecordingStarted,
)
from router.phone import InvalidPhone, normalize_phone
from router.routing import DialOrder, OwnerFirst, RoutingPlan, Scenario
from router.sla import new_owner

log = structlog.get_logger("dialer")

RESYNC_RETRY = 5.0  # real seconds between attempts to list live channels
# A call window that does not open within a year (every day a holiday): look again in a day.
_NO_OPENING_RETRY = timedelta(days=1)
_SLA_BATCH = 100  # overdue leads released per transaction
_SLA_RECHECK = 60.0  # seconds: the database is asked for the next SLA deadline at least this often
# The owner's wait and overflow delays count from the answer's PBX stamp, a clock other than the
# timers': look a little after the moment, so the step is surely due when looked at.
_STEP_MARGIN = 0.01

# Why a call was a PBX failure, as stored with it (Call.pbx_failure).
_CHANNEL_NOT_CREATED = "the PBX could not create the client's channel (OriginateResponse Reason 0)"
_PBX_RESTARTED = "the PBX restarted while the call was up (FullyBooted's Uptime), which ended it"
_ORIGINATE_LOST = "the link dropped before the PBX answered the Originate, and the PBX has no such call"

_ORIGINATE_DISPOSITIONS = {
    OriginateOutcome.BUSY: Disposition.BUSY,
    OriginateOutcome.NO_ANSWER: Disposition.NO_ANSWER,
    OriginateOutcome.UNREACHABLE: Disposition.UNREACHABLE,
}

# Manager first: how the manager's phone ended when the Originate to it failed...
_MANAGER_MISSES = {
    OriginateOutcome.BUSY: LegResult.BUSY,
    OriginateOutcome.NO_ANSWER: LegResult.NO_ANSWER,
    OriginateOutcome.UNREACHABLE: LegResult.UNAVAILABLE,
}
# ...and how the client's phone ended when the dialplan's Dial to it failed (CANCEL: the manager
# hung up while it rang, not the client's doing).
_CLIENT_DIAL_RESULTS = {
    DialOutcome.NO_ANSWER: Disposition.NO_ANSWER,
    DialOutcome.BUSY: Disposition.BUSY,
    DialOutcome.UNAVAILABLE: Disposition.UNREACHABLE,
    DialOutcome.CANCEL: Disposition.MANAGER_MISSED,
}

_LEG_RESULTS = {
    DialOutcome.NO_ANSWER: LegResult.NO_ANSWER,
    DialOutcome.BUSY: LegResult.BUSY,
    DialOutcome.UNAVAILABLE: LegResult.UNAVAILABLE,
    DialOutcome.CANCEL: LegResult.CANCELLED,
}


class _CallerTaken(Exception):
    """An inbound caller's call is stored already: the unit of work taking him rolls back."""


# Events the dialer sends itself (timers, failed actions), serialised with the PBX's.
@dataclass(frozen=True, slots=True)
class _HoldExpired:
    channel_id: str


@dataclass(frozen=True, slots=True)
class _DialDeadline:
    channel_id: str


@dataclass(frozen=True, slots=True)
class _RingManagerFirst:
    """A manager-first call was claimed: its manager is picked and rung on the event loop, which
    commits what changes."""

    channel_id: str


@dataclass(frozen=True, slots=True)
class _WhoMayTakeChanged:
    """The owner's wait ended or an overflow pool opened for this waiting client."""

    channel_id: str


@dataclass(frozen=True, slots=True)
class _OriginateRefused:
    channel_id: str
    reason: str
    sent: bool  # False: it never left the daemon


@dataclass(frozen=True, slots=True)
class _OriginateUnanswered:
    channel_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class _ConnectRefused:
    channel_id: str
    manager_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class _InboundTaken:
    """An inbound caller's lead and call are committed: route him, or (his channel could not be
    set up) apologise, so that his call ends and his lead is called back."""

    live: _Live
    ready: bool


@dataclass(frozen=True, slots=True)
class _HeldSaid:
    """These calls are registered, and the PBX said things of them before (claim_new): apply them
    now, in order, behind whatever was queued meanwhile, which was held too."""

    channel_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _BoardChanged:
    """Managers' states changed outside the event loop (the clock ended a wrap-up, a supervisor
    paused or resumed someone): store the changes, and connect a waiting client to whoever is free."""


@dataclass(frozen=True, slots=True)
class _ManagerTaken:
    """Another daemon's call has the manager (his promise in the database): he is not rung."""

    channel_id: str
    manager_id: str


@dataclass(frozen=True, slots=True)
class _LinkUp:
    pass


@dataclass(frozen=True, slots=True)
class _LinkDown:
    pass


@dataclass(frozen=True, slots=True)
class _Listing:
    """The PBX is being asked for its listing: device states heard from now on are fresher."""


@dataclass(frozen=True, slots=True)
class _Resynced:
    snapshot: PbxSnapshot
    asked_at: datetime  # calls started just before this may be missing from the listing
    adopted: list[tuple[Call, Lead]]
    ended: dict[str, CallEndRecord]  # the PBX's notes of how answered calls it no longer lists ended


_Event = (
    PbxEvent
    | _HoldExpired
    | _DialDeadline
    | _WhoMayTakeChanged
    | _RingManagerFirst
    | _OriginateRefused
    | _OriginateUnanswered
    | _ConnectRefused
    | _InboundTaken
    | _HeldSaid
    | _BoardChanged
    | _ManagerTaken
    | _LinkUp
    | _LinkDown
    | _Listing
    | _Resynced
)


class _Gate:
    """Whether the intake's Originates may leave from the committing thread, decided once against
    the intake giving up on its commit: the thread lets them out only while it has not, and the
    intake, giving up, learns whether they were let out already."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._out = False
        self._shut = False

    def let_out(self) -> bool:
        """On the committing thread: True when the Originates may leave (and from then on did)."""
        with self._lock:
            self._out = not self._shut
            return self._out

    def shut(self) -> bool:
        """On the loop, its commit failed or its wait cancelled: whether they were let out before."""
        with self._lock:
            self._shut = True
            return self._out


@dataclass(eq=False)
class _Live:
    call: Call
    lead: Lead
    scenario: Scenario
    owner_id: str | None = None  # the phone's owner, when the scenario offers him the client first
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    fate_unknown: bool = False  # the Originate went out and its answer never came
    send: PreparedDial | None = None  # its client's Originate, built and not handed to the loop's send yet
    screening: bool = False  # answered, and the PBX's AMD() has not said whether a person did

    @property
    def manager_first(self) -> bool:
        return self.scenario.dial_order is DialOrder.MANAGER_FIRST

    @property
    def caller_name(self) -> str:
        """What the manager's phone shows for this client, by the scenario's template; "" for none."""
        template = self.scenario.caller_name
        return "" if template is None else caller_name(template, self.lead)

    def cancel_timers(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()


class DialerStopped(RuntimeError):
    """The dialer's ``run`` has ended: what it is told is no longer applied."""


class Dialer:
    def __init__(
        self,
        *,
        uow: UnitOfWorkFactory,
        pbx: Pbx,
        clock: Clock,
        routing: Callable[[], RoutingPlan],
        board: ManagerBoard,
        recordings: RecordingNamer,
        settings: DialerSettings,
        peers: Peers,
        everyone: Callable[[], RoutingPlan] | None = None,
    ) -> None:
        """``everyone``: the whole plan, when ``routing`` is one PBX's part of it (SLA releases choose from it)."""
        self._uow = uow
        self._everyone = everyone or routing
        self._peers = peers
        self._pbx = pbx
        self._clock = clock
        self._routing = routing
        self._board = board
        self._recordings = recordings
        self._settings = settings
        self._queue: asyncio.Queue[_Event] = asyncio.Queue()
        self._live: dict[str, _Live] = {}
        # The live client-first calls dialling or on hold: each will want a free manager. Kept as
        # calls change (every change goes through _emit), so a dispatch pass counts without a scan.
        self._wanting: set[_Live] = set()
        self._holding = HoldQueue()
        self._writes = WriteBehind(uow=uow, clock=clock)
        self._wake = asyncio.Event()
        self._wake_timer: asyncio.TimerHandle | None = None
        self._wake_due: datetime | None = None  # when _wake_timer fires
        # Whether due leads may be left unclaimed for want of room (the last claim filled it, or
        # none could run): only then does a call's end, which makes room, call for a dispatch pass.
        self._backlog = True
        # The earliest retry of a call ended in the batch being applied, then once its flush
        # committed it, one a dispatch pass under way may have missed: their pass is timed, not run now.
        self._retry_at: datetime | None = None
        self._retry_committed_at: datetime | None = None
        self._dispatch_parked = False  # the dispatch loop waits for _wake
        self._wake_after_flush = False  # a call ended in the batch being applied: its lead may be due
        self._maybe_idle = asyncio.Event()  # set whenever something idle() checks may have finished
        self._loops: tuple[asyncio.Task[None], ...] = ()  # run()'s event and dispatch loops, once started
        self._tasks: set[asyncio.Task[None]] = set()
        self._resynced_once = False
        self._dialing_stopped = False
        self._rechecking = False  # a listing asked for by a dial deadline is on its way
        # The room claims under way hold, from their sizing to their calls' registration (or their
        # transaction's failure): spoken for in _capacity. On SQLite one writer keeps the intake's
        # claim and a dispatch pass apart; on PostgreSQL both may run at once, and each would size
        # its claim by the same free managers.
        self._claiming = 0
        self._room_awaited = False  # a dispatch pass found room held by a claim: wake it once given back
        self._flush_due = 0.0  # loop time: a flush the database refused is not tried again before
        # Calls taken over (ours in the database from that commit on) that no resync has adopted or
        # closed yet: the takeover is never repeated, so every listing brings them until one is applied.
        self._taken: dict[str, tuple[Call, Lead]] = {}
        # Since the last listing was asked for: extensions whose state changed, calls we heard of.
        self._fresh_devices: set[str] = set()
        self._fresh_calls: set[str] = set()
        # Inbound callers being taken (their lead and call stored): what the PBX says of them meanwhile.
        self._inbound: dict[str, list[PbxEvent]] = {}
        # Calls the intake's transaction is committing, whose Originates may leave from the committing
        # thread before the loop registers them (claim_new): what the PBX says of them meanwhile,
        # with its time, applied once they are registered.
        self._held: dict[str, list[tuple[_Event, datetime]]] = {}
        self._breaker = PbxBreaker(settings.breaker)
        self._pbx_failures = 0
        self._stamps_trusted = True
        self._pbx_started_at: datetime | None = None  # when the PBX last (re)started, by its FullyBooted
        self._stamp_window = timedelta(seconds=settings.stamp_window)
        self._sla_next: datetime | None = None  # the earliest SLA deadline, once read
        self._pacing = PacingMeter(routing().pacing)
        self._sla_read_at: float | None = None  # when the earliest SLA deadline was last read
        self._releasing = False  # this daemon runs the SLA releases (release_overdue_leads)

    # -- inputs ---------------------------------------------------------------------------

    def pbx_event(self, event: PbxEvent) -> None:
        """Called from the AMI reader: enqueue only, never block."""
        self._queue.put_nowait(event)

    def leads_added(self) -> None:
        self._wake.set()

    def pause_manager(self, manager_id: str, reason: str) -> ManagerState:
        """Take a manager out of rotation (API, CLI); a call he is on goes on. KeyError: no such manager."""
        state = self._board.pause(manager_id, reason)
        self._queue.put_nowait(_BoardChanged())
        return state

    def resume_manager(self, manager_id: str) -> ManagerState:
        """Back in rotation. KeyError: no such manager."""
        self._board.resume(manager_id)
        self._queue.put_nowait(_BoardChanged())
        state = self._board.state(manager_id)
        assert state is not None
        return state[0]

    async def pbx_connected(self) -> None:
        """After every (re)login: learn what the PBX has of our calls and managers, then dial again.

        Until that is known nothing is dialled: a wrong guess would double-dial or strand a call.
        """
        self._queue.put_nowait(_LinkUp())
        await self._read_pbx(retry=True)

    def pbx_disconnected(self) -> None:
        """Called when the AMI link drops: no dials until the next session is booted and read."""
        self._queue.put_nowait(_LinkDown())

    async def _read_pbx(self, *, retry: bool) -> None:
        self._queue.put_nowait(_Listing())
        reported = ""  # one log line per kind of failure, not one per retry
        while True:
            asked_at = self._clock.now()
            try:
                snapshot = await self._pbx.snapshot()
                # The calls a previous run, or another daemon now gone, left open: to adopt or close.
                adopted = await self._take_over()
                ended = await self._read_call_ends(snapshot, [call for call, _ in adopted], asked_at)
                break
            except PbxError as exc:
                problem, hint = str(exc), "the AMI user needs write=reporting"
            except Exception as exc:  # the database cannot be read now (full, read-only, gone)
                problem, hint = repr(exc), "the open calls of the last run cannot be read"
            if problem != reported:
                log.error("dialer.resync_failed", error=problem, hint=hint)
                reported = problem
            if not retry or not self._pbx.connected:
                return  # the next login (or dial deadline) tries again
            await asyncio.sleep(RESYNC_RETRY)
        self._queue.put_nowait(_Resynced(snapshot, asked_at, adopted, ended))

    async def _read_call_ends(
        self, snapshot: PbxSnapshot, adopted: list[Call], asked_at: datetime
    ) -> dict[str, CallEndRecord]:
        """How the answered calls the listing no longer has ended, as the PBX noted it: their
        Hangup went unheard, and the moment we noticed is not when they ended."""
        ended: dict[str, CallEndRecord] = {}
        calls = [live.call for live in self._live.values() if not live.manager_first] + adopted
        for call in calls:
            answered = call.answered_at
            if call.channel_id in snapshot.legs or call.state in (CallState.DIALING, CallState.ENDED):
                continue
            try:
                record = await self._pbx.call_end(call.channel_id, since=answered or call.started_at, until=asked_at)
            except (PbxNotSent, PbxNoAnswer):
                raise  # the link went: the next login reads everything again
            except PbxError as exc:
                log.warning("dialer.call_ends_unreadable", error=str(exc), hint="the AMI user needs write=reporting")
                return ended  # the rest close as if the PBX kept no note
            if record is not None:
                ended[call.channel_id] = record
        return ended

    async def _recheck(self) -> None:
        try:
            await self._read_pbx(retry=False)
        finally:
            self._rechecking = False

    def stop_dialing(self) -> None:
        """Shutting down: send no Originate from now on; live calls are still steered to their end.

        Due leads stay due in the database and are dialled after the next start. A claim
        already committed still gets its Originate (the claim and the dial go together).
        There is no way back: a daemon that stops dialing is on its way out.
        """
        self._dialing_stopped = True

    @property
    def live_calls(self) -> int:
        return len(self._live)

    @property
    def breaker_state(self) -> str:
        """``closed`` (dialling), ``open`` (no new dials) or ``probing`` (one dial decides)."""
        return self._breaker.state.value

    @property
    def breaker_reason(self) -> str:
        return self._breaker.reason

    @property
    def pbx_failures(self) -> int:
        """Calls the PBX failed since the start (refused, not placed, lost): none cost an attempt."""
        return self._pbx_failures

    async def idle(self) -> None:
        """Wait until the dialer has nothing left to do before something new happens.

        That is: every queued event applied, every change committed, every PBX action it sent
        answered (a refused one has queued its event by then), and the dispatch loop waiting to
        be woken. Timers are not waited for, and a ``pbx_connected`` in progress is its caller's
        to await. Tests wait on this instead of sleeping.

        Raises DialerStopped once ``run`` has ended or one of its loops died: nothing would
        apply what is queued, so waiting would never end.
        """
        while True:
            ended = next((loop for loop in self._loops if loop.done()), None)
            if ended is not None:
                cause = None if ended.cancelled() else ended.exception()
                raise DialerStopped(f"{ended.get_name()} has ended ({cause!r}): the dialer no longer runs") from cause
            if self._is_idle():
                # Tests wait here: each checks that the count kept as calls change is the scan's.
                assert self._wanting == {live for live in self._live.values() if self._wants_manager(live)}
                return
            self._maybe_idle.clear()
            await self._maybe_idle.wait()

    def _is_idle(self) -> bool:
        # The event loop needs no flag: it applies a batch without awaiting, so whenever another
        # task runs it is either flushing (writes pending) or waiting on an empty queue.
        return (
            self._queue.empty()
            and not self._writes.pending
            and not self._tasks
            and self._dispatch_parked
            and not self._wake.is_set()
        )

    # -- the two loops --------------------------------------------------------------------

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                self._loops = (
                    group.create_task(self._event_loop(), name="dialer-events"),
                    group.create_task(self._dispatch_loop(), name="dialer-dispatch"),
                    group.create_task(self._takeover_loop(), name="dialer-takeover"),
                )
                for loop in self._loops:
                    # The loops never return: one that ends died or was stopped, and idle() must say so
                    # at once, not once the task group has wound down.
                    loop.add_done_callback(lambda _loop: self._maybe_idle.set())
        finally:
            # Stopping: store what the PBX already told us, so a restart starts from it.
            while not self._queue.empty():
                self._apply_batch(self._drain())
            await self._writes.flush()

    def _drain(self) -> list[_Event]:
        batch: list[_Event] = []
        while not self._queue.empty() and len(batch) < 500:
            batch.append(self._queue.get_nowait())
        return batch

    def _apply_batch(self, batch: list[_Event]) -> None:
        now = self._clock.now()
        for event in batch:
            self._apply_one(event, self._event_time(event, now))
        self._store_states(self._board.take_changes(), now)

    def _apply_one(self, event: _Event, when: datetime) -> None:
        try:
            self._apply(event, when)
        except Exception:
            # Not `event=`: structlog's first argument is named so, and the clash raised a
            # TypeError out of this handler, which stopped the dialer's event loop.
            log.exception("dialer.event_failed", failed=repr(event))

    def _store_states(self, changes: list[StateChange], now: datetime) -> None:
        if not changes:
            return
        events = [
            ManagerStateChanged(
                manager_id=change.manager_id,
                state=change.state.value,
                previous_state=change.previous.value,
                reason=change.reason,
                paused=change.paused,
                at=now,
            )
            for change in changes
        ]
        log.debug("dialer.manager_states", changes={change.manager_id: change.state.value for change in changes})
        self._writes.manager_states(events)

    def _event_time(self, event: _Event, now: datetime) -> datetime:
        """Call times are the PBX's when it stamps its events (manager.conf timestampevents), so
        durations do not depend on how busy this loop was; otherwise the moment we read them."""
        if not isinstance(event, CallProgress) or event.at is None:
            return now
        # A stamp further behind our clock than the window means the clocks disagree (no NTP, a
        # PBX set to another zone) or a backlog is being read: ours stands in, so retries are
        # never scheduled in the past nor durations skewed.
        trusted = now - self._stamp_window <= event.at <= now
        if trusted != self._stamps_trusted:
            self._stamps_trusted = trusted
            if not trusted:  # one line when the clocks part, one when they agree again
                log.warning("dialer.pbx_clock_skew", pbx=event.at.isoformat(), ours=now.isoformat())
            else:
                log.info("dialer.pbx_clock_agrees")
        return event.at if trusted else now

    async def _event_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._apply_batch(await self._next_events())
            if self._writes.pending and self._flush_due > loop.time():
                continue  # the database refused the last flush a moment ago
            if not await self._writes.flush():
                # Kept in memory, and the next events are applied meanwhile (a client who answers
                # is put through, not held for the disk); they go with the next try.
                self._flush_due = loop.time() + FLUSH_RETRY
                continue
            if self._wake_after_flush:
                self._wake_after_flush = False
                self._wake.set()
            if self._retry_at is not None:
                self._retry_committed(self._retry_at)
                self._retry_at = None
            self._maybe_idle.set()

    async def _next_events(self) -> list[_Event]:
        """The events queued, or the next one waited for: while a failed flush's changes are
        pending, only until it is due to be tried again."""
        if not self._writes.pending:
            return [await self._queue.get(), *self._drain()]
        try:
            async with asyncio.timeout(max(self._flush_due - asyncio.get_running_loop().time(), 0)):
                first = await self._queue.get()
        except TimeoutError:
            return self._drain()
        return [first, *self._drain()]

    async def _dispatch_loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                delay = await self._dispatch_once()
                # A daemon that does not run the SLA job still looks again within _SLA_RECHECK, as the
                # one that does: what other daemons made due meanwhile is seen here too.
                sla_in = await self._release_overdue() if self._releasing else _SLA_RECHECK
                if delay != 0:
                    delay = sla_in if delay is None else min(delay, sla_in)
            except Exception:
                log.exception("dialer.dispatch_failed")
                delay = 1.0
            if delay == 0:
                continue
            if self._retry_committed_at is not None:  # committed while this pass read the due times
                retry_in = max((self._retry_committed_at - self._clock.now()).total_seconds(), 0.001)
                delay = retry_in if delay is None else min(delay, retry_in)
                self._retry_committed_at = None
            if delay is not None:
                self._wake_in(delay)
            self._dispatch_parked = True
            self._maybe_idle.set()
            await self._wake.wait()
            self._dispatch_parked = False

    async def _takeover_loop(self) -> None:
        """Look for calls whose daemon is gone (another daemon on this database was killed) and take
        them over through a listing of the PBX, which says by ChannelId what became of each."""
        while True:
            # Real seconds, as RESYNC_RETRY: a daemon dies in the real world, whatever the test clock says.
            await asyncio.sleep(self._settings.takeover_poll)
            if not self._resynced_once or self._rechecking or not self._pbx.connected:
                continue
            try:
                async with self._uow() as uow:
                    orphaned = await self._peers.gone(await uow.calls.steered_by())
            except Exception as exc:  # the database cannot be read now: the next look tries again
                log.warning("dialer.takeover_check_failed", error=repr(exc))
                continue
            if orphaned or self._taken:  # or taken over by a listing that then failed
                log.info(
                    "dialer.taking_over", daemons=sorted(str(daemon) for daemon in orphaned), taken=len(self._taken)
                )
                self._rechecking = True
                self._spawn(self._recheck())

    def _wake_in(self, seconds: float) -> None:
        if self._wake_timer is not None:
            self._wake_timer.cancel()
        self._wake_timer = self._clock.call_later(seconds, self._wake.set)
        self._wake_due = self._clock.now() + timedelta(seconds=seconds)

    def _retry_committed(self, at: datetime) -> None:
        """A lead's retry at ``at`` is committed: the dispatch pass is to run by then."""
        if not self._dispatch_parked:
            if self._retry_committed_at is None or at < self._retry_committed_at:
                self._retry_committed_at = at
        elif self._wake_due is None or at < self._wake_due or self._wake_due <= self._clock.now():
            self._wake_in(max((at - self._clock.now()).total_seconds(), 0.001))

    def _capacity(self) -> int:
        """Clients to dial now: one per free manager not spoken for by a client on hold or ringing,
        or more under predictive pacing (router.pacing). A manager-first call has its manager."""
        plan = self._routing()
        if plan.pacing.mode is PacingMode.PROGRESSIVE:
            # Counted as calls change, not by a scan of every live call on every pass.
            wanted = self._board.free_count - len(self._wanting)
        else:
            wanted = self._predictive(plan)
        return min(wanted, self._settings.max_channels - len(self._live)) - self._claiming

    def _predictive(self, plan: RoutingPlan) -> int:
        holding = ringing = talking = 0
        for live in self._live.values():
            if live.manager_first:
                continue
            holding += live.call.state is CallState.HOLDING
            ringing += live.call.state is CallState.DIALING
            talking += live.call.state is CallState.BRIDGED
        floor = Floor(
            free=self._board.free_count,
            holding=holding,
            ringing=ringing,
            talking=talking,
            hold_limit=min(scenario.hold_limit for scenario in plan.scenarios),
        )
        return clients_to_dial(plan.pacing, self.pacing, floor)

    @property
    def pacing(self) -> PacingReading:
        """Attempts, answers, abandons and talks over the pacing window."""
        pacing = self._routing().pacing
        if self._pacing.pacing != pacing:  # a reload changed it; what was measured still holds
            self._pacing.pacing = pacing
        return self._pacing.reading(self._clock.monotonic())

    def _wants_manager(self, live: _Live) -> bool:
        return (
            not live.manager_first
            and live.call.state in (CallState.DIALING, CallState.HOLDING)
            and self._live.get(live.call.channel_id) is live
        )

    def _recount(self, live: _Live) -> None:
        if self._wants_manager(live):
            self._wanting.add(live)
        else:
            self._wanting.discard(live)

    async def _dispatch_once(self) -> float | None:
        """Claim and dial what is due; return seconds until the next lead falls due (0 = go on)."""
        if self._dialing_stopped:
            return None
        if not self._pbx.connected or not self._resynced_once:
            return None  # pbx_connected wakes us
        now = self._clock.now()
        shift_change = self._board.tick(now)  # managers come on and go off shift, wrap-ups end, by the clock
        if self._board.has_changes:
            self._queue.put_nowait(_BoardChanged())
        moment = self._clock.monotonic()
        self._breaker_changed(self._breaker.tick(moment))
        allowed = self._breaker.allowed()
        if allowed == 0:
            self._backlog = True
            # A breaker change wakes us, or a shift starting (which matters once it closes).
            breaker_in = self._breaker.next_change_in(moment)
            return shift_change if breaker_in is None else min(breaker_in, shift_change)
        if self._capacity() <= 0:
            self._backlog = True
            self._room_awaited = self._claiming > 0
            return shift_change  # or a call ending, a manager getting free, a claim's room given back wakes us
        async with self._uow() as uow:
            # Asked again inside the transaction: while this pass waited for the database, the
            # intake may have claimed leads (claim_new) and PBX failures may have opened the breaker.
            allowed = self._breaker.allowed()
            capacity = self._capacity() if allowed is None else min(self._capacity(), allowed)
            self._room_awaited = self._claiming > 0  # sized without what a claim under way holds
            if capacity <= 0:
                self._backlog = True
                return 0 if allowed == 0 else shift_change
            if self._peers.shared:
                # Other daemons' waiting clients want the same free managers (every daemon sees them all).
                capacity -= await uow.calls.waiting_elsewhere()
                if capacity <= 0:
                    return min(shift_change, self._settings.takeover_poll)  # their calls' ends are not heard here
            started, claimed = await self._claim(uow, now, capacity)
            try:
                next_due = None if claimed == capacity else await uow.leads.next_due_at(self._settings.other_pbxes)
                await uow.commit()
            except BaseException:
                self._give_back(len(started))
                raise
            self._register(started)
        self._backlog = claimed == capacity
        self._dial(started)
        if claimed == capacity:
            return 0
        if next_due is None:
            return shift_change
        return max(min((next_due - now).total_seconds(), shift_change), 0.001)

    async def claim_new(self, uow: UnitOfWork, now: datetime, new: Sequence[Lead]) -> Claimed | None:
        """The intake's transaction, once its ``new`` leads are in it: claim what is due there, as a
        dispatch pass would, so that their Originates leave as soon as it commits, with no second
        transaction. Returns what to run while it commits (the Originates built) and right after
        (None: nothing was claimed, the dispatch loop is to be woken as usual).

        Only in the plain case: dialing, the breaker closed (a probing or open breaker, and
        shift changes, are the dispatch loop's).
        """
        if self._dialing_stopped or not self._pbx.connected or not self._resynced_once:
            return None
        # Beside other daemons the dispatch pass counts their waiting clients first: it claims.
        if self._breaker.allowed() is not None or self._peers.shared:
            return None
        capacity = self._capacity()
        if capacity <= 0:
            return None
        started, claimed = await self._claim(uow, now, capacity, new)
        if not started:
            return None
        for live in started:
            self._held[live.call.channel_id] = []
        gate = _Gate()

        def send() -> None:  # on the committing thread, once the commit succeeded
            if gate.let_out():
                self._write_off_loop(started)

        def committed() -> None:
            try:
                self._register(started)
                self._backlog = claimed == capacity
                self._dial(started)
            finally:  # a bug in the bookkeeping above must not leave what the PBX says of them held
                self._release_held(started)
            if claimed == capacity:
                self._wake.set()  # more may be due than there was room for

        def abandoned() -> None:
            # The commit raised on the loop, yet the Originates may have left from its thread: its wait
            # was cancelled (a shutdown) after it succeeded there, which raises only once the thread is
            # done (Database.commit), or what followed it on the loop raised. Then the calls are ours.
            if gate.shut():
                try:
                    committed()
                except Exception:  # the caller's own error is the one to raise
                    log.exception(
                        "dialer.claim_registration_failed", channels=[live.call.channel_id for live in started]
                    )
                return
            for live in started:
                del self._held[live.call.channel_id]
            self._give_back(len(started))

        return Claimed(functools.partial(self._build_originates, started), send, committed, abandoned)

    async def _claim(
        self, uow: UnitOfWork, now: datetime, capacity: int, fresh: Sequence[Lead] = ()
    ) -> tuple[list[_Live], int]:
        """``_claim_in``, the room held from before its first statement: one sized beside it meanwhile
        leaves that room alone. What it did not fill is given back; its calls' room is held until
        they are registered (``_register``) or their transaction failed (``_give_back``)."""
        self._claiming += capacity
        try:
            started, claimed = await self._claim_in(uow, now, capacity, fresh)
        except BaseException:
            self._give_back(capacity)
            raise
        if len(started) < capacity:
            self._give_back(capacity - len(started))
        return started, claimed

    def _give_back(self, room: int) -> None:
        self._claiming -= room
        if self._room_awaited:
            self._room_awaited = False
            self._wake.set()

    async def _claim_in(
        self, uow: UnitOfWork, now: datetime, capacity: int, fresh: Sequence[Lead] = ()
    ) -> tuple[list[_Live], int]:
        """Claim up to ``capacity`` due leads in ``uow`` and add their calls; (the calls, leads claimed).
        ``fresh``: the leads the intake added in ``uow``."""
        plan = self._routing()
        started: list[_Live] = []
        deferred: list[Lead] = []
        handed: list[Lead] = []
        mine = self._settings.pbx
        leads = await uow.leads.claim_due(now, capacity, self._settings.other_pbxes, fresh)
        for lead in leads:
            assert lead.id is not None
            scenario = plan.scenario_for(lead, now)
            if self._settings.other_pbxes and scenario.pbx not in (None, mine):
                # Its scenario dials on another PBX now (a time rule, a reload): that PBX's dialer takes it.
                lead.hand_over(scenario.pbx, now)
                handed.append(lead)
                continue
            opening = scenario.next_allowed(lead.phone, now)
            if opening != now:
                # Outside its call window (a retry or a reload moved it there): the claim is
                # given back, and the lead waits for the next allowed minute.
                until = opening or now + _NO_OPENING_RETRY
                uow.outbox.add([lead.defer(until, scenario.backlog_rank(lead.created_at), now)], now)
                deferred.append(lead)
                continue
            if lead.owner_id is not None and scenario.owner_first is None:
                # Released to a new owner with a call to the client (sla.call_new_owner): the
                # owner is offered the client for the whole hold limit, and stays the owner.
                scenario = replace(scenario, owner_first=OwnerFirst(wait=scenario.hold_limit, owner_changes=False))
            call = Call(
                lead_id=lead.id,
                attempt=lead.attempts,
                scenario=scenario.name,
                channel_id=f"{self._settings.channel_id_prefix}-{uuid.uuid4().hex[:20]}",
                phone=lead.phone,
                started_at=now,
                pbx=mine,
            )
            owner = None
            if scenario.owner_first is not None:
                owner = lead.owner_id or await uow.leads.owner_of_phone(lead.phone)
                owners_pbx = self._pbx_of(owner) if scenario.pbx is None else None
                if owners_pbx is not None:
                    # Pools on several PBXes: a repeat lead is dialled where its owner's phone is.
                    lead.hand_over(owners_pbx, now)
                    handed.append(lead)
                    continue
            started.append(_Live(call, lead, scenario, owner))
        if handed:
            await uow.leads.update(handed)
            log.info("dialer.handed_over", leads=[lead.id for lead in handed], pbx=handed[0].pbx)
        if deferred:
            await uow.leads.update(deferred)
            log.info("dialer.deferred", leads=[lead.id for lead in deferred], until=deferred[0].next_attempt_at)
        await uow.calls.add([live.call for live in started])
        uow.outbox.add([live.call.dialing() for live in started], now)
        return started, len(leads)

    def _pbx_of(self, manager_id: str | None) -> str | None:
        """The PBX of this manager when it is another than ours (several PBXes), else None."""
        if not self._settings.other_pbxes or manager_id is None or self._board.state(manager_id) is not None:
            return None
        plan = self._everyone()
        found = next((manager for manager in plan.managers if manager.id == manager_id), None)
        if found is None or not plan.pbxes:
            return None  # no longer listed: the pool takes the client here
        return found.pbx or plan.pbxes[0]

    def _register(self, started: list[_Live]) -> None:
        """Right after the claim's commit, before the unit of work is closed (that awaits), so no one
        sees a dialing lead without its live call. The intake's Originates may be answered before
        this (they leave from the committing thread): what the PBX says meanwhile is held (claim_new)."""
        self._live.update((live.call.channel_id, live) for live in started)
        self._claiming -= len(started)
        for live in started:
            self._recount(live)

    def _dial(self, started: list[_Live]) -> None:
        dial_time = self._clock.now()
        for live in started:
            # Ringing starts now, not when the claim began; the next update of the call stores it.
            live.call.started_at = dial_time
            if live.manager_first:
                continue
            # On the wire first, the bookkeeping after: nothing else runs in between anyway.
            try:
                self._spawn(self._originate(live, self._originate_now(live)))
            except Exception as exc:  # a bug: this call fails as not sent, the rest of the batch dials
                log.exception("dialer.originate_not_built", channel_id=live.call.channel_id)
                self._queue.put_nowait(_OriginateRefused(live.call.channel_id, f"not built: {exc!r}", sent=False))
        self._breaker.dialling(len(started))
        for live in started:
            if live.manager_first:
                self._queue.put_nowait(_RingManagerFirst(live.call.channel_id))
            else:
                self._start_timer(live, self._settings.dial_deadline, _DialDeadline)
        if started:
            log.info("dialer.dialing", leads=[live.lead.id for live in started])

    # -- SLA release ----------------------------------------------------------------------

    async def release_overdue_leads(self) -> None:
        """Release overdue leads on the dispatch loop for as long as this runs (until cancelled).

        One daemon per database does it (storage.cluster elects it): two would release a lead to
        two new owners. The releases share the dispatch loop so they never run beside a claim."""
        self._releasing = True
        self._sla_read_at = None  # another daemon may have released leads while this one stood by
        self._wake.set()
        try:
            await asyncio.get_running_loop().create_future()  # never done: runs until cancelled
        finally:
            self._releasing = False

    async def _release_overdue(self) -> float:
        """Give each owned lead nobody worked by its deadline to another manager of its pool
        (router.sla); return seconds until it is to look again."""
        now = self._clock.now()
        if self._sla_read_at is None or self._clock.monotonic() - self._sla_read_at >= _SLA_RECHECK:
            # Read again every _SLA_RECHECK: a deadline noted in memory while a release pass read the
            # database may have been overwritten by what that pass read.
            async with self._uow() as uow:
                self._sla_next = await uow.leads.next_sla_due_at()
            self._sla_read_at = self._clock.monotonic()
        if self._sla_next is None or self._sla_next > now:
            return self._sla_wait(now)
        plan = self._everyone()
        calls_again = False
        released: list[tuple[Lead, str]] = []  # (the lead, its previous owner) for the board once committed
        async with self._uow() as uow:
            overdue = await uow.leads.sla_overdue(now, _SLA_BATCH)
            open_leads = await uow.leads.open_leads_by_owner()
            for lead in overdue:
                assert lead.id is not None and lead.owner_id is not None
                calls = await uow.calls.for_lead(lead.id)
                took_it = next((call for call in reversed(calls) if call.bridged_at is not None), None)
                scenario = plan.scenario(took_it.scenario) if took_it else plan.scenario_for(lead, now)
                history = await uow.history.for_lead(lead.id)
                owned = {lead.owner_id} | {
                    entry.details["previous_owner_id"] for entry in history if entry.kind is HistoryKind.REASSIGNED
                }
                chosen = None if scenario.sla is None else new_owner(plan.pool(scenario), owned, open_leads)
                if chosen is None or scenario.sla is None:
                    log.warning("dialer.sla_kept", lead_id=lead.id, owner_id=lead.owner_id, scenario=scenario.name)
                    lead.keep_owner()
                    continue
                previous = lead.owner_id
                reassigned = lead.release_to(chosen.id, now, scenario.sla, new_call=scenario.sla.call_new_owner)
                details = reassigned.data() | {"scenario": scenario.name, "release_after": scenario.sla.release_after}
                await uow.history.add(HistoryEntry(lead.id, HistoryKind.REASSIGNED, now, details))
                uow.outbox.add([reassigned], now)
                released.append((lead, previous))
                open_leads[chosen.id] = open_leads.get(chosen.id, 0) + 1
                open_leads[previous] = max(open_leads.get(previous, 0) - 1, 0)
                calls_again = calls_again or reassigned.new_call
                log.info("dialer.sla_released", lead_id=lead.id, previous_owner=previous, owner=chosen.id)
            await uow.leads.update(overdue)
            next_due = await uow.leads.next_sla_due_at()
            await uow.commit()
        # Only what was committed: a failed commit is released again from the database's view, and
        # counted twice on the board it would have kept a new owner busy past his open-lead limit.
        self._sla_next = next_due
        for lead, previous in released:
            self._board.lead_assigned(lead, previous)
        if calls_again:
            self._wake.set()
        if len(overdue) == _SLA_BATCH:
            return 0.001
        return self._sla_wait(now)

    def _sla_wait(self, now: datetime) -> float:
        """Seconds until the next SLA deadline, or the next look at the database: a lead whose call
        ended while a release was being read was not yet stored as assigned, so not seen."""
        if self._sla_next is None:
            return _SLA_RECHECK
        return min(max((self._sla_next - now).total_seconds(), 0.001), _SLA_RECHECK)

    # -- PBX commands ---------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._action_done)

    def _action_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._maybe_idle.set()

    def _originate_now(self, live: _Live) -> Awaitable[None]:
        """The client's Originate on the wire now, built beforehand if it was (``_build_originates``)."""
        send, live.send = live.send or self._originate_built(live), None
        return send()

    def _build_originates(self, started: list[_Live]) -> None:
        """The clients' Originates built ahead of their sending (while the intake's commit is on
        the database's thread): the dial then costs only their writes."""
        for live in started:
            if not live.manager_first:
                # One that cannot be built is built again when it is to be sent, and that failure is
                # the call's (``_dial``): nothing of it may fail the commit this runs beside.
                with contextlib.suppress(Exception):
                    live.send = self._originate_built(live)

    @staticmethod
    def _write_off_loop(started: list[_Live]) -> None:
        """On the database's thread, right after the intake's commit: the Originates built by then
        leave from there (PreparedDial.write_off_loop), not once the loop has run the intake again;
        ``_dial`` follows on the loop, and sends what was not built or written here."""
        for live in started:
            send = live.send  # built on the loop meanwhile (_build_originates), or not yet; once sent, None
            if send is not None:
                send.write_off_loop()

    def _release_held(self, started: list[_Live]) -> None:
        """These calls are registered: what the PBX says of them from now on is applied as it comes.
        Those it said something of already (their Originates left from the committing thread) stay
        held until the event loop applies what it said (_HeldSaid): queued events not applied yet
        came after it, and are held meanwhile."""
        said = []
        for live in started:
            channel_id = live.call.channel_id
            if self._held[channel_id]:
                said.append(channel_id)
            else:
                del self._held[channel_id]
        if said:
            self._queue.put_nowait(_HeldSaid(tuple(said)))

    def _originate_built(self, live: _Live) -> PreparedDial:
        call = live.call
        assert call.id is not None
        return self._pbx.prepare_client(
            channel_id=call.channel_id,
            phone=call.phone,
            lead_id=call.lead_id,
            call_id=call.id,
            ring_timeout=live.scenario.ring_timeout,
            caller_name=live.caller_name,
            amd=live.scenario.amd,
            whisper=live.scenario.whisper or "",
        )

    async def _originate(self, live: _Live, answer: Awaitable[None]) -> None:
        call = live.call
        try:
            await answer
        except PbxNoAnswer as exc:
            self._queue.put_nowait(_OriginateUnanswered(call.channel_id, str(exc)))
        except PbxError as exc:
            self._queue.put_nowait(_OriginateRefused(call.channel_id, str(exc), sent=not isinstance(exc, PbxNotSent)))

    async def _originate_manager(self, live: _Live, manager_id: str, extension: str) -> None:
        call = live.call
        channel_id = call.channel_id  # a manager who does not answer gives the call a new one
        assert call.id is not None
        if not await self._promised(channel_id, manager_id, call.id):
            return
        try:
            await self._pbx.originate_manager(
                channel_id=channel_id,
                extension=extension,
                phone=call.phone,
                lead_id=call.lead_id,
                call_id=call.id,
                ring_timeout=live.scenario.ring_timeout,
                client_ring_timeout=live.scenario.client_ring_timeout,
                caller_name=live.caller_name,
                whisper=live.scenario.whisper or "",
            )
        except PbxNoAnswer as exc:
            self._queue.put_nowait(_OriginateUnanswered(channel_id, str(exc)))
        except PbxError as exc:
            self._queue.put_nowait(_OriginateRefused(channel_id, str(exc), sent=not isinstance(exc, PbxNotSent)))

    async def _promised(self, channel_id: str, manager_id: str, call_id: int) -> bool:
        """Whether the manager is ours to ring: promised to this call in the database first, so
        another daemon never rings him at the same time (always, with no other daemon)."""
        if not self._peers.shared:
            return True
        try:
            if await self._peers.reserve(manager_id, call_id):
                return True
        except Exception as exc:  # the database cannot say: ringing him might double-book him
            log.warning("dialer.reservation_failed", manager_id=manager_id, error=repr(exc))
        self._queue.put_nowait(_ManagerTaken(channel_id, manager_id))
        return False

    def _release(self, manager_id: str, call_id: int) -> bool:
        """Free a manager from a call of ours, in memory and (with other daemons) in the database;
        True if he is free to take another."""
        if self._peers.shared:
            self._spawn(self._unpromise(manager_id, call_id))
        return self._board.release(manager_id, call_id)

    async def _unpromise(self, manager_id: str, call_id: int) -> None:
        try:
            await self._peers.release(manager_id, call_id)
        except Exception as exc:  # a stale promise is taken by the next reserve once the call has ended
            log.warning("dialer.release_failed", manager_id=manager_id, error=repr(exc))

    async def _connect(self, channel_id: str, manager_id: str, extension: str, call_id: int) -> None:
        if not await self._promised(channel_id, manager_id, call_id):
            return
        try:
            await self._pbx.connect_to_manager(channel_id=channel_id, extension=extension)
        except PbxError as exc:
            self._queue.put_nowait(_ConnectRefused(channel_id, manager_id, str(exc)))

    async def _apologize(self, channel_id: str) -> None:
        try:
            await self._pbx.apologize(channel_id)
        except PbxNoAnswer as exc:
            # The Redirect went out and its answer did not come: the client may be hearing the
            # apology now, and a Hangup would cut it off (cause 0, no apology). An unanswered PBX
            # loses its link to the watchdog, and the listing after the login shows whether he
            # is still on hold (then the apology is sent again); the dialplan's hold_max caps
            # his wait meanwhile.
            log.warning("dialer.apology_unanswered", channel_id=channel_id, error=str(exc))
        except PbxError as exc:
            log.warning("dialer.apology_failed", channel_id=channel_id, error=str(exc))
            with contextlib.suppress(PbxError):
                await self._pbx.hang_up(channel_id)

    # -- applying events ------------------------------------------------------------------

    def _emit(self, live: _Live, *events: DomainEvent | None) -> None:
        self._writes.changed(live.call, live.lead, *events)
        self._recount(live)

    def _apply(self, event: _Event, now: datetime) -> None:
        match event:
            case ExtensionState(extension=extension, state=state):
                self._fresh_devices.add(extension)
                if self._board.device_changed(extension, state) is not None:
                    self._manager_freed(now)
                return
            case Billed():
                self._writes.billed(event.channel_id, event.billable_seconds)
                return
            case _BoardChanged():
                self._manager_freed(now)  # maybe: a waiting client is connected, a due lead dialled
                return
            case InboundCall():
                self._inbound_call(event, now)
                return
            case _InboundTaken():
                self._inbound_taken(event.live, event.ready, now)
                return
            case _HeldSaid():
                for channel_id in event.channel_ids:
                    for said, when in self._held.pop(channel_id):
                        self._apply_one(said, when)
                return
            case _LinkUp():
                self._breaker_changed(self._breaker.link_up(self._clock.monotonic()))
                return
            case _LinkDown():
                self._breaker_changed(self._breaker.link_down(self._clock.monotonic()))
                return
            case PbxBooted(uptime=uptime):
                if uptime is not None:
                    self._pbx_started_at = now - timedelta(seconds=uptime)
                self._breaker_changed(self._breaker.booted(self._clock.monotonic()))
                return
            case PbxShuttingDown(restart=restart):
                log.warning("dialer.pbx_shutting_down", restart=restart)
                self._breaker_changed(self._breaker.shutting_down(self._clock.monotonic()))
                return
            case _Listing():
                self._fresh_devices.clear()
                self._fresh_calls.clear()
                return
            case _Resynced():
                self._resync(event, now)
                return
        held = self._held.get(event.channel_id)
        if held is not None:
            held.append((event, now))  # applied once the call is registered (_release_held)
            return
        live = self._live.get(event.channel_id)
        if live is None:
            if event.channel_id in self._inbound and isinstance(event, CallProgress | Billed):
                self._inbound[event.channel_id].append(event)  # applied once the caller is taken
            return
        if isinstance(event, CallProgress):
            self._fresh_calls.add(event.channel_id)
        match event:
            case OriginateResult(outcome=OriginateOutcome.PBX_FAILED):
                if live.call.state is CallState.DIALING:
                    self._pbx_failed(live, _CHANNEL_NOT_CREATED, now, breaker=True)
            case OriginateResult(outcome=OriginateOutcome.ANSWERED):
                self._breaker_changed(self._breaker.succeeded(self._clock.monotonic()))
                if live.manager_first:
                    if live.call.manager_picked_up(now):  # the dialplan dials the client now
                        assert live.call.manager_id is not None and live.call.id is not None
                        self._board.answered(live.call.manager_id, live.call.id)
                        self._emit(live)
                else:
                    self._answered(live, now)
            case OriginateResult(outcome=outcome):
                self._breaker_changed(self._breaker.succeeded(self._clock.monotonic()))
                if live.manager_first:
                    self._next_manager(live, _MANAGER_MISSES[outcome], now)
                elif live.call.state is CallState.DIALING:
                    self._end(live, _ORIGINATE_DISPOSITIONS[outcome], now)
            case DialEnded(outcome=outcome) if live.manager_first:
                # The dialplan dialled the client: answered, the bridge follows; else the hangup.
                if outcome is not DialOutcome.ANSWER:
                    live.call.client_result = _CLIENT_DIAL_RESULTS[outcome]
            case DialEnded(outcome=DialOutcome.ANSWER):
                live.call.manager_answered(now)
                self._emit(live)
            case DialEnded(outcome=DialOutcome.CANCEL):
                pass  # the client hung up while the manager's phone rang; their Hangup follows
            case DialEnded(outcome=outcome):
                self._manager_failed(live, _LEG_RESULTS[outcome], now)
            case Bridged():
                if live.manager_first:
                    self._emit(live, live.call.client_picked_up(now))
                self._bridged(live, now)
            case MachineDetected():
                self._screened(live, event, now)
            case RecordingStarted():
                live.call.recording_file = self._recordings.file(live.call.channel_id)
                live.call.recording_url = self._recordings.url(live.call.recording_file)
                self._emit(live)
            case HungUp(cause=cause):
                ended = live.call.hung_up(now, cause)
                if ended is not None:
                    self._finish(live, ended, now)
            case _HoldExpired():
                if live.call.state is CallState.HOLDING:
                    self._give_up(live)
            case _RingManagerFirst():
                if live.call.state is CallState.DIALING and not live.call.legs:
                    self._ring_manager(live, now)
            case _WhoMayTakeChanged():
                if live.call.state is CallState.HOLDING:
                    self._connect_waiting(now)
            case _DialDeadline():
                if live.call.state is CallState.DIALING:
                    self._dial_deadline(live)
            case _OriginateRefused(reason=reason, sent=sent):
                if live.call.state is CallState.DIALING:
                    self._pbx_failed(live, reason if sent else f"not sent: {reason}", now, breaker=sent)
            case _OriginateUnanswered(reason=reason):
                # Maybe the PBX dials the client right now, maybe it never heard of it: the next
                # listing (after a reconnect, or at the dial deadline) says which.
                log.warning("dialer.originate_unanswered", channel_id=live.call.channel_id, reason=reason)
                live.fate_unknown = True
                self._breaker_changed(self._breaker.failed(self._clock.monotonic()))
            case _ConnectRefused(manager_id=manager_id, reason=reason):
                log.warning("dialer.redirect_refused", channel_id=live.call.channel_id, reason=reason)
                if live.call.manager_id == manager_id:
                    self._manager_failed(live, LegResult.UNAVAILABLE, now)
            case _ManagerTaken(manager_id=manager_id):
                # Rung by another daemon a moment ago: his phone's state will say busy shortly.
                log.info("dialer.manager_taken", channel_id=live.call.channel_id, manager_id=manager_id)
                if live.call.manager_id != manager_id:
                    return
                if live.manager_first:
                    self._next_manager(live, LegResult.UNAVAILABLE, now)
                else:
                    self._manager_failed(live, LegResult.UNAVAILABLE, now)

    def _breaker_changed(self, change: BreakerChange | None) -> None:
        if change is None:
            return
        log.info("dialer.breaker", state=change.state.value, reason=change.reason, pbx_failures=self._pbx_failures)
        self._wake.set()

    def _pbx_failed(self, live: _Live, reason: str, now: datetime, *, breaker: bool) -> None:
        """The PBX, not the client's line, ended the call: the lead gets its attempt back."""
        self._pbx_failures += 1
        log.warning("dialer.pbx_failed", channel_id=live.call.channel_id, lead_id=live.lead.id, reason=reason)
        self._finish(live, live.call.pbx_failed(reason, now), now)
        if breaker:
            self._breaker_changed(self._breaker.failed(self._clock.monotonic()))

    def _dial_deadline(self, live: _Live) -> None:
        """No word of the Originate in time: ask the PBX whether it has the call, never dial it again."""
        log.warning("dialer.originate_overdue", channel_id=live.call.channel_id)
        self._start_timer(live, self._settings.dial_deadline, _DialDeadline)
        if not self._rechecking and self._pbx.connected:
            self._rechecking = True
            self._spawn(self._recheck())

    def _answered(self, live: _Live, now: datetime) -> None:
        answered = live.call.client_answered(now)
        if answered is None:
            return
        self._emit(live, answered)
        self._start_hold_timer(live, now)
        if live.scenario.amd:
            # AMD() listens first: nobody is rung for a voicemail. Its verdict (MachineDetected)
            # puts a person in line; a machine is hung up by the dialplan.
            live.screening = True
            return
        self._holding.join(live.call, live.scenario, live.owner_id)
        self._connect_waiting(now)

    def _screened(self, live: _Live, event: MachineDetected, now: datetime) -> None:
        if not live.screening or live.call.state is not CallState.HOLDING:
            return
        live.screening = False
        log.info("dialer.amd", channel_id=live.call.channel_id, lead_id=live.lead.id, verdict=event.status)
        if event.machine:
            live.call.machine = True  # its hangup, which the dialplan sends now, ends the call as `machine`
            return
        self._holding.join(live.call, live.scenario, live.owner_id)
        self._connect_waiting(now)

    def _start_timer(self, live: _Live, seconds: float, event: Callable[[str], _Event]) -> None:
        channel_id = live.call.channel_id
        live.timers.append(self._clock.call_later(seconds, lambda: self._queue.put_nowait(event(channel_id))))

    def _connect_waiting(self, now: datetime) -> None:
        """Ring the managers the hold queue gives to waiting clients."""
        if not self._pbx.connected:
            # A Redirect could not be sent: no manager would be tried, yet each would be marked
            # as failed in turn. The clients wait; the resync after the next login connects them.
            return
        for connection in self._holding.connect(self._board, now):
            channel_id, manager = connection.call.channel_id, connection.manager
            self._emit(self._live[channel_id])
            assert connection.call.id is not None
            self._spawn(self._connect(channel_id, manager.id, manager.extension, connection.call.id))

    def _manager_failed(self, live: _Live, result: LegResult, now: datetime) -> None:
        call = live.call
        manager_id = call.manager_failed(result, now)
        if manager_id is None:
            return
        self._emit(live)
        assert call.id is not None and call.answered_at is not None
        if result is LegResult.NO_ANSWER:
            self._board.missed_offer(manager_id, live.scenario.auto_pause_after)
        freed = self._release(manager_id, call.id)
        if (now - call.answered_at).total_seconds() >= live.scenario.hold_limit:
            self._give_up(live)
        else:
            self._holding.put_back(call, live.scenario, live.owner_id)
        if freed:
            self._manager_freed(now)
        else:
            self._connect_waiting(now)

    def _ring_manager(self, live: _Live, now: datetime) -> None:
        """Manager first: ring a free manager of the pool (the phone's owner, if he is free and the
        scenario says owner first); none free, the lead is due again in a few seconds."""
        call = live.call
        assert call.id is not None
        manager = None
        owner = live.owner_id
        if live.scenario.owner_first is not None and owner is not None and owner not in call.tried_managers():
            if self._board.is_free(owner):
                manager = self._board.manager(owner)
                self._board.reserve(owner, call.id)
        if manager is None:
            manager = self._board.pick(live.scenario, call.tried_managers(), now)
            if manager is not None:
                self._board.give(live.scenario, manager.id, call.id, now)
        if manager is None:
            self._end(live, Disposition.MANAGER_MISSED, now)
            return
        call.ring_manager(manager.id, now)
        self._emit(live)
        self._start_timer(live, self._settings.dial_deadline, _DialDeadline)
        self._spawn(self._originate_manager(live, manager.id, manager.extension))

    def _next_manager(self, live: _Live, result: LegResult, now: datetime) -> None:
        """Manager first: his phone was not answered; ring the next one under a new channel id
        (one Originate, one channel), up to the scenario's managers_to_try."""
        call = live.call
        assert call.id is not None
        manager_id = call.manager_missed(result, now)
        if manager_id is None:
            return
        if result is LegResult.NO_ANSWER:
            self._board.missed_offer(manager_id, live.scenario.auto_pause_after)
        freed = self._release(manager_id, call.id)
        limit = live.scenario.managers_to_try
        if limit is None or len(call.legs) < limit:
            live.cancel_timers()
            live.fate_unknown = False
            del self._live[call.channel_id]  # the old channel's last events are no longer ours
            call.channel_id = f"{self._settings.channel_id_prefix}-{uuid.uuid4().hex[:20]}"
            self._live[call.channel_id] = live
            self._fresh_calls.add(call.channel_id)  # a listing asked for before cannot show the new channel
            self._ring_manager(live, now)
        else:
            self._end(live, Disposition.MANAGER_MISSED, now)
        if freed:
            self._manager_freed(now)

    def _give_up(self, live: _Live) -> None:
        live.call.hold_expired = True
        self._holding.leave(live.call.channel_id)
        self._spawn(self._apologize(live.call.channel_id))

    def _bridged(self, live: _Live, now: datetime) -> None:
        call = live.call
        if not call.bridged(now):
            return
        live.cancel_timers()
        assert call.manager_id is not None and call.id is not None
        self._board.answered(call.manager_id, call.id)
        owner = call.manager_id
        first = live.scenario.owner_first
        if first is not None and not first.owner_changes and live.owner_id is not None:
            owner = live.owner_id  # the phone keeps its owner, whoever talked this time
        assigned = live.lead.assign_owner(owner, call.id, now, live.scenario.sla)
        self._board.lead_assigned(live.lead, assigned.previous_owner_id)
        self._emit(live, assigned)

    def _end(self, live: _Live, disposition: Disposition, now: datetime) -> None:
        self._finish(live, live.call.end(disposition, now), now)

    def _finish(self, live: _Live, ended: DomainEvent, now: datetime) -> None:
        call = live.call
        live.cancel_timers()
        self._live.pop(call.channel_id, None)
        self._holding.leave(call.channel_id)
        assert call.disposition is not None and call.id is not None
        lead = live.lead
        self._emit(live, ended, lead.finish_attempt(call.disposition, live.scenario, now))
        sla_sooner = False
        if lead.status is LeadStatus.ASSIGNED and lead.sla_due_at is not None:
            # Its SLA deadline counts from the bridge; the lead may be released once its call is over.
            if self._sla_next is None or lead.sla_due_at < self._sla_next:
                self._sla_next = lead.sla_due_at
                sla_sooner = True  # the dispatch pass times the SLA check
        if not live.manager_first and call.disposition.costs_attempt:
            # What the client's line decided: the answer and abandon rates predictive pacing reads.
            gave_up = call.disposition in (Disposition.NO_MANAGER, Disposition.ABANDONED)
            answered = call.answered_at is not None
            self._pacing.ended(self._clock.monotonic(), answered=answered, abandoned=gave_up, talk=call.talk_seconds)
        self._board.call_ended(call, now, live.scenario.wrap_up)
        freed = False
        for leg in call.legs:
            freed = self._release(leg.manager_id, call.id) or freed
        if freed:
            self._manager_freed(now)
        due = lead.next_attempt_at if lead.status in (LeadStatus.NEW, LeadStatus.SCHEDULED) else None
        if self._backlog or self._peers.shared or sla_sooner or (due is not None and due <= now):
            self._wake.set()
            # The lead is due again only once this batch's flush commits it: on PostgreSQL a claim woken
            # now may run before that commit (SQLite queues it behind the flush) and must be woken again.
            self._wake_after_flush = True
        elif due is not None and (self._retry_at is None or due < self._retry_at):
            # Nothing waits for the room this call leaves, and its lead is due later (a retry):
            # a pass now would claim nothing, so the next one is timed for then (_retry_committed).
            self._retry_at = due

    def _manager_freed(self, now: datetime) -> None:
        self._connect_waiting(now)
        self._wake.set()

    # -- inbound calls ---------------------------------------------------------------------

    def _inbound_call(self, event: InboundCall, now: datetime) -> None:
        """A caller the PBX holds for us: store him as a lead's call (a new lead if his number is
        unknown), then route him like an answered client, owner first."""
        if event.number not in self._settings.inbound_numbers:
            log.warning("dialer.inbound_not_ours", number=event.number, hint="list it in pbx.inbound_numbers")
            self._spawn(self._apologize(event.channel_id))
            return
        try:
            phone = normalize_phone(event.caller, self._settings.default_region)
        except InvalidPhone as exc:
            # A withheld or foreign-format number: no lead can be kept for him, nor called back.
            log.warning("dialer.inbound_caller_unknown", number=event.number, caller=event.caller, reason=str(exc))
            self._spawn(self._apologize(event.channel_id))
            return
        self._inbound[event.channel_id] = []
        self._spawn(self._take_inbound(event, phone, now))

    async def _take_inbound(self, event: InboundCall, phone: str, now: datetime) -> None:
        plan = self._routing()
        try:
            async with self._uow() as uow:
                lead = await uow.leads.newest_by_phone(phone)
                events: list[DomainEvent] = []
                if lead is None or lead.status is LeadStatus.DIALING:
                    # Unknown (or being dialled this very moment): a lead of its own.
                    lead = Lead(phone, "", f"inbound:{event.number}", None, {"inbound": event.number}, now)
                    lead.called_in(now)
                    await uow.leads.add([lead])
                    events.append(lead.created())
                else:
                    lead.called_in(now)
                    await uow.leads.update([lead])
                assert lead.id is not None
                scenario = plan.scenario_for(lead, now)
                owner = None
                if scenario.owner_first is not None:
                    owner = lead.owner_id or await uow.leads.owner_of_phone(phone)
                call = Call(lead.id, lead.attempts, scenario.name, event.channel_id, phone, started_at=now)
                if not await uow.calls.add_caller(call):
                    raise _CallerTaken
                answered = call.client_answered(now)
                await uow.calls.update([call])
                uow.outbox.add([*events, call.dialing(), *([answered] if answered else [])], now)
                await uow.commit()
        except _CallerTaken:  # rolled back: his call is another daemon's (or was ours before)
            log.info("dialer.inbound_taken_elsewhere", channel_id=event.channel_id)
            self._inbound.pop(event.channel_id, None)
            return
        except Exception as exc:  # nothing was stored: he hears the apology
            log.error("dialer.inbound_failed", channel_id=event.channel_id, error=repr(exc))
            self._inbound.pop(event.channel_id, None)
            await self._apologize(event.channel_id)
            return
        live = _Live(call, lead, scenario, owner)
        assert call.id is not None
        ready = True
        try:
            await self._pbx.take_inbound(
                channel_id=event.channel_id,
                lead_id=lead.id,
                call_id=call.id,
                ring_timeout=scenario.ring_timeout,
                caller_name=live.caller_name,
                whisper=scenario.whisper or "",
            )
        except PbxError as exc:
            log.error("dialer.inbound_setup_failed", channel_id=event.channel_id, error=str(exc))
            ready = False
        log.info("dialer.inbound", lead_id=lead.id, number=event.number, owner=owner, known=not events)
        self._queue.put_nowait(_InboundTaken(live, ready))

    def _inbound_taken(self, live: _Live, ready: bool, now: datetime) -> None:
        channel_id = live.call.channel_id
        self._live[channel_id] = live
        self._fresh_calls.add(channel_id)  # newer than a listing under way, which may not show him held
        self._recount(live)  # a caller on hold wants a manager, as an answered client does
        if ready:
            self._start_hold_timer(live, now)
            self._holding.join(live.call, live.scenario, live.owner_id)
        else:
            self._give_up(live)  # ends as no_manager: his lead is called back by the retry rules
        for missed in self._inbound.pop(channel_id, []):  # e.g. he hung up meanwhile
            self._apply(missed, now)
        self._connect_waiting(now)

    # -- resync after (re)connect ---------------------------------------------------------

    async def _take_over(self) -> list[tuple[Call, Lead]]:
        """Calls a previous run or another daemon, now gone (crash, kill -9), left open: to adopt or to
        close. They are ours from the commit on; the PBX's listing says what became of each."""
        async with self._uow() as uow:
            orphaned = await self._peers.gone(await uow.calls.steered_by())
            if orphaned:
                adopted = []
                for call in await uow.calls.take_over(orphaned):
                    lead = await uow.leads.get(call.lead_id)
                    if lead is not None and call.channel_id not in self._live:
                        adopted.append((call, lead))
                await uow.commit()
                self._taken.update((call.channel_id, (call, lead)) for call, lead in adopted)
        # With those an earlier listing took over and then failed to bring (the link went while it
        # read the call ends): nobody else will ever take them over again.
        return list(self._taken.values())

    def _resync(self, event: _Resynced, now: datetime) -> None:
        """Take over the adopted calls, catch up with what the PBX did unheard, close the vanished
        calls, re-read every manager's phone, then connect and dial again."""
        # A listing may bring what another, applied first, already adopted: those are live now.
        taken = [(call, lead) for call, lead in event.adopted if self._taken.pop(call.channel_id, None) is not None]
        decision = decide_resync(
            legs=event.snapshot.legs,
            asked_at=event.asked_at,
            adopted=[call for call, _ in taken],
            live=[live.call for live in self._live.values()],
            managers={manager.extension: manager.id for manager in self._routing().managers},
            heard_since=self._fresh_calls,
        )
        plan = self._routing()
        leads = {call.channel_id: lead for call, lead in taken}
        for call in decision.adopt:
            live = self._live[call.channel_id] = _Live(call, leads[call.channel_id], plan.scenario(call.scenario))
            call.manager_first = live.manager_first  # not stored: its scenario says
        adopted = {call.channel_id for call in decision.adopt}
        caught_up = set()
        for catch_up in decision.catch_up:
            live = self._live[catch_up.call.channel_id]
            if live.manager_first:
                # Its stages (the manager's leg dialling the client) are not the client-first ones
                # the listing is read in; its next events or its absence from a listing settle it.
                if live.call.channel_id in adopted:
                    self._resume(live, None, now)
                caught_up.add(live.call.channel_id)
                continue
            if catch_up.missed:
                log.info("dialer.caught_up", call_id=catch_up.call.id, missed=[step.value for step in catch_up.missed])
            for step in catch_up.missed:
                self._catch_up(live, step, catch_up, now)
            # A client whose hold ran out while the link was down is owed the apology: _resume
            # sends it again if the listing shows him still on hold. One whom AMD() screened
            # while nobody listened is past it (its verdict was lost with the link): in line now.
            owed_apology = live.call.state is CallState.HOLDING and live.call.hold_expired
            screened_unheard = live.screening and catch_up.leg.stage is LegStage.ON_HOLD
            if catch_up.missed or live.call.channel_id in adopted or owed_apology or screened_unheard:
                self._resume(live, catch_up.leg.stage, now)
            caught_up.add(live.call.channel_id)
        closing = {call.channel_id for call in decision.close}
        for channel_id in adopted - caught_up - closing:
            self._resume(self._live[channel_id], None, now)  # dialled just before the listing: not in it yet
        for call in decision.adopt:
            log.info("dialer.adopted", call_id=call.id, state=call.state.value, live=call.channel_id not in closing)
        for call in decision.close:
            self._close_vanished(self._live[call.channel_id], event.ended.get(call.channel_id), now)
        # Calls were adopted, caught up and closed above, not all through _emit: count afresh (rare).
        self._wanting = {live for live in self._live.values() if self._wants_manager(live)}
        for caller in event.snapshot.callers:
            # Held for us but unknown here: he called while nobody listened (his UserEvent was
            # lost), or another daemon steers him, which the call's insert tells.
            if caller.channel_id not in self._live and caller.channel_id not in self._inbound:
                log.info("dialer.inbound_listed", channel_id=caller.channel_id, number=caller.number)
                self._inbound_call(caller, now)
        freed = self._board.devices_listed(event.snapshot.devices, keep=self._fresh_devices)
        self._resynced_once = True
        self._breaker_changed(self._breaker.synced(self._clock.monotonic()))
        if freed:
            log.info("dialer.managers_free_again", managers=freed)
        self._connect_waiting(now)
        self._wake.set()

    def _catch_up(self, live: _Live, step: Missed, catch_up: CatchUp, now: datetime) -> None:
        """One step the call took on the PBX while nobody listened; no action is sent for it."""
        call = live.call
        assert call.id is not None
        match step:
            case Missed.ANSWER:
                self._emit(live, call.client_answered(now))
            case Missed.MANAGER_NO_ANSWER:
                manager_id = call.manager_failed(LegResult.NO_ANSWER, now)
                if manager_id is not None:
                    self._release(manager_id, call.id)
                self._emit(live)
            case Missed.SENT_TO_MANAGER:
                if catch_up.manager_id is None:
                    log.warning("dialer.unknown_manager", call_id=call.id, extension=catch_up.leg.extension)
                    return
                call.connect_to(catch_up.manager_id, now)
                self._board.reserve(catch_up.manager_id, call.id)
                self._emit(live)
            case Missed.BRIDGE:
                self._bridged(live, now)
            case Missed.APOLOGY:
                call.hold_expired = True
                self._holding.leave(call.channel_id)

    def _resume(self, live: _Live, stage: LegStage | None, now: datetime) -> None:
        """Start over the timers, queue place and manager a call in its state needs."""
        live.cancel_timers()
        call = live.call
        assert call.id is not None
        leg = call.current_leg
        if leg is not None:
            self._board.reserve(leg.manager_id, call.id)
        match call.state:
            case CallState.DIALING:
                self._start_timer(live, self._settings.dial_deadline, _DialDeadline)
            case CallState.HOLDING if not call.hold_expired and stage not in (LegStage.AT_MANAGER, LegStage.BRIDGED):
                # (A client the PBX has with a phone we do not know of is left alone.)
                self._start_hold_timer(live, now)
                if stage is LegStage.SCREENING and live.scenario.amd:
                    live.screening = True  # AMD() still listens: its verdict, which this link carries, decides
                    return
                # Past AMD, or none: the dialplan hangs up a machine, so one still up is a person.
                live.screening = False
                self._holding.join(call, live.scenario, live.owner_id)
            case CallState.CONNECTING:
                self._start_hold_timer(live, now)  # the manager may yet not answer
            case CallState.HOLDING if call.hold_expired and stage in (LegStage.SCREENING, LegStage.ON_HOLD):
                # Its apology could not be sent (the link was down): the PBX still has the client
                # on hold, so the apology is known not to have happened; send it now.
                self._spawn(self._apologize(call.channel_id))

    def _start_hold_timer(self, live: _Live, now: datetime) -> None:
        """The hold limit counts from the client's answer, also across a restart of ours; so do the
        moments the owner's wait ends and overflow pools open, each of which looks again for a manager."""
        answered_at = live.call.answered_at or now
        held = (now - answered_at).total_seconds()
        self._start_timer(live, max(live.scenario.hold_limit - held, 0.0), _HoldExpired)
        change = live.scenario.next_change(held)
        while change is not None and change < live.scenario.hold_limit:
            self._start_timer(live, change - held + _STEP_MARGIN, _WhoMayTakeChanged)
            change = live.scenario.next_change(change)

    def _close_vanished(self, live: _Live, record: CallEndRecord | None, now: datetime) -> None:
        call = live.call
        if live.fate_unknown and call.state is CallState.DIALING:
            self._pbx_failed(live, _ORIGINATE_LOST, now, breaker=False)
            return
        restarted = self._pbx_started_at
        if (
            record is None
            and restarted is not None
            and call.started_at < restarted
            and call.state is not CallState.BRIDGED
        ):
            # The PBX restarted since the call began (its FullyBooted says how long ago), which
            # ended every call on it: the client's line decided nothing, so it costs no attempt.
            self._pbx_failed(live, _PBX_RESTARTED, now, breaker=False)
            return
        ended = call.vanished(now, record)
        if ended is None:
            return
        if record is not None:
            log.info("dialer.closed_as_pbx_noted", call_id=call.id, disposition=call.disposition, cause=record.cause)
        if call.disposition is Disposition.LOST_TRACK:
            log.warning("dialer.lost_track", channel_id=call.channel_id, lead_id=call.lead_id)
        self._finish(live, ended, now)
