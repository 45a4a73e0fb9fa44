"""Leads, calls and the legs to managers: the state that every other room persists or reports.

Durations are in seconds (floats, rounded to milliseconds); times are aware UTC datetimes
handed in by the caller, so nothing here reads a clock.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from router import events as ev
from router.pbx_events import CallEndRecord
from router.routing import Scenario
from router.sla import REASON as SLA_REASON
from router.sla import SlaPolicy


class LeadStatus(enum.StrEnum):
    NEW = "new"  # waiting for its first dial
    DIALING = "dialing"  # an attempt is in flight; only one at a time
    SCHEDULED = "scheduled"  # a retry is due at next_attempt_at
    ASSIGNED = "assigned"  # talked to a manager, who is now its owner
    FAILED = "failed"  # attempts exhausted


class CallState(enum.StrEnum):
    DIALING = "dialing"  # client leg originated, not answered yet
    HOLDING = "holding"  # client answered and waits for a free manager
    CONNECTING = "connecting"  # client sent to a manager whose phone rings
    BRIDGED = "bridged"  # client and manager talk
    ENDED = "ended"


class Disposition(enum.StrEnum):
    COMPLETED = "completed"  # client and manager were bridged
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    UNREACHABLE = "unreachable"  # congestion, channel unavailable, dial failure
    ABANDONED = "abandoned"  # client hung up before a manager took the call
    NO_MANAGER = "no_manager"  # nobody free within the hold limit; we hung up
    ENDED_UNOBSERVED = "ended_unobserved"  # the client answered; how it ended was not seen (daemon or AMI away)
    MACHINE = "machine"  # an answering machine answered (the scenario's amd): hung up, never bridged
    # The three below are not the client's doing, so they cost the lead no attempt:
    PBX_FAILED = "pbx_failed"  # the PBX refused, failed or lost the call (Call.pbx_failure says why)
    LOST_TRACK = "lost_track"  # gone before we learned whether the client answered (daemon or AMI away)
    MANAGER_MISSED = "manager_missed"  # manager first: no manager took the call, so the client was not dialled

    @property
    def costs_attempt(self) -> bool:
        """Only what the client's line did counts against the lead's attempts."""
        return self not in (Disposition.PBX_FAILED, Disposition.LOST_TRACK, Disposition.MANAGER_MISSED)


class Outcome(enum.StrEnum):
    """What became of a lead, as the CRM reports it."""

    WORKED = "worked"  # the owner is working on it; nothing decided yet
    WON = "won"
    LOST = "lost"

    @property
    def decided(self) -> bool:
        return self is not Outcome.WORKED


@dataclass(frozen=True, slots=True)
class OutcomeReport:
    """One outcome reported for a lead, credited to its owner in the scenario he took it in."""

    lead_id: int
    outcome: Outcome
    previous: Outcome | None  # the lead's outcome before this report
    reason: str
    author: str
    manager_id: str | None  # the lead's owner when it was reported
    scenario: str | None  # the scenario of the call in which that owner took the lead
    at: datetime

    @property
    def won(self) -> bool:
        return self.outcome is Outcome.WON


class HistoryKind(enum.StrEnum):
    DUPLICATE = "duplicate"  # a lead from the same phone merged into this one; details: what it carried
    REASSIGNED = "reassigned"  # the owner changed without a call; details: both owners and the reason


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """Something that happened to a lead outside its calls, kept for audit."""

    lead_id: int
    kind: HistoryKind
    at: datetime
    details: dict[str, Any]
    external_id: str | None = None  # a merged duplicate's own id: repeating its POST finds this lead


class LegResult(enum.StrEnum):
    ANSWERED = "answered"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    UNAVAILABLE = "unavailable"
    CANCELLED = "cancelled"  # the client hung up while the manager's phone rang


# A lead the PBX failed goes back in line this soon, not after the scenario's retry delay.
PBX_RETRY_DELAY = 5.0
# ...unless the PBX failed this lead so many times in a row that the fault is likely the lead's own
# (a number the trunk or dialplan cannot take): then the failure costs an attempt, so it ends.
MAX_PBX_FAILURES = 10


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round(max((end - start).total_seconds(), 0.0), 3)


@dataclass
class Lead:
    phone: str  # E.164
    name: str
    source: str
    external_id: str | None
    payload: dict[str, Any]
    created_at: datetime
    id: int | None = None
    status: LeadStatus = LeadStatus.NEW
    owner_id: str | None = None
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_disposition: Disposition | None = None
    updated_at: datetime | None = None
    outcome: Outcome | None = None  # the CRM's latest report
    pbx_failures: int = 0  # PBX failures in a row since the last attempt that counted
    # Among leads due at the same moment (a call window's opening), the lower rank is dialled first.
    backlog_rank: float = 0.0
    sla_due_at: datetime | None = None  # the owner must have worked it by then, or it is released
    final_state: str | None = None  # when FAILED: the scenario's name for how it ended
    pbx: str | None = None  # the PBX its scenario dials it on (routing.yaml `pbx:`); None: any

    def __post_init__(self) -> None:
        if self.next_attempt_at is None and self.status is LeadStatus.NEW:
            self.next_attempt_at = self.created_at

    def created(self) -> ev.LeadCreated:
        assert self.id is not None
        return ev.LeadCreated(
            lead_id=self.id,
            phone=self.phone,
            name=self.name,
            source=self.source,
            external_id=self.external_id,
            payload=self.payload,
            created_at=self.created_at,
        )

    def assign_owner(self, manager_id: str, call_id: int, now: datetime, sla: SlaPolicy | None) -> ev.LeadAssigned:
        assert self.id is not None
        previous, self.owner_id = self.owner_id, manager_id
        self.updated_at = now
        self.sla_due_at = None if sla is None else sla.deadline(now)
        return ev.LeadAssigned(lead_id=self.id, call_id=call_id, owner_id=manager_id, previous_owner_id=previous)

    def report_outcome(
        self, outcome: Outcome, *, reason: str, author: str, calls: Sequence[Call], now: datetime
    ) -> tuple[OutcomeReport, ev.LeadOutcome]:
        """Take the CRM's outcome, credited to the owner in the scenario of the call he took the lead in."""
        assert self.id is not None
        took_it = (call for call in reversed(calls) if call.bridged_at is not None and call.manager_id == self.owner_id)
        scenario = next((call.scenario for call in took_it), None)
        report = OutcomeReport(
            lead_id=self.id,
            outcome=outcome,
            previous=self.outcome,
            reason=reason,
            author=author,
            manager_id=self.owner_id,
            scenario=scenario,
            at=now,
        )
        self.outcome = outcome
        return report, ev.LeadOutcome(
            lead_id=self.id,
            outcome=outcome.value,
            previous_outcome=report.previous.value if report.previous else None,
            reason=reason,
            author=author,
            owner_id=self.owner_id,
            scenario=scenario,
            reported_at=now,
        )

    # -- the lifecycle over time (issue 8) -------------------------------------------------------

    def sla_overdue(self, now: datetime) -> bool:
        """It has an owner, the CRM said nothing of it (not even ``worked``), and its deadline has come."""
        return (
            self.status is LeadStatus.ASSIGNED
            and self.owner_id is not None
            and self.outcome is None
            and self.sla_due_at is not None
            and self.sla_due_at <= now
        )

    def release_to(self, manager_id: str, now: datetime, sla: SlaPolicy, *, new_call: bool) -> ev.LeadReassigned:
        """SLA release: the lead goes to ``manager_id``; with ``new_call`` it is due for a call at once,
        which its new owner is offered first."""
        assert self.id is not None and self.owner_id is not None
        previous, self.owner_id = self.owner_id, manager_id
        self.updated_at = now
        self.sla_due_at = sla.deadline(now)
        if new_call:
            self.status = LeadStatus.SCHEDULED
            self.next_attempt_at = now
        return ev.LeadReassigned(
            lead_id=self.id, owner_id=manager_id, previous_owner_id=previous, reason=SLA_REASON, new_call=new_call
        )

    def keep_owner(self) -> None:
        """SLA release found nobody new in the pool: the lead stays and is not looked at again."""
        self.sla_due_at = None

    def defer(self, until: datetime, rank: float, now: datetime) -> ev.LeadDeferred:
        """A claimed lead may not be called now: give the claim's attempt back, due at ``until``."""
        assert self.id is not None
        self.attempts -= 1
        self.status = LeadStatus.NEW if self.attempts == 0 else LeadStatus.SCHEDULED
        self.next_attempt_at = until
        self.backlog_rank = rank
        self.updated_at = now
        return ev.LeadDeferred(lead_id=self.id, next_attempt_at=until, reason="call_window")

    def hand_over(self, pbx: str, now: datetime) -> None:
        """Claimed by another PBX's dialer while its scenario dials on ``pbx``: the claim's attempt
        back, due at once there. Nothing happened to the lead, so no event."""
        self.attempts -= 1
        self.status = LeadStatus.NEW if self.attempts == 0 else LeadStatus.SCHEDULED
        self.next_attempt_at = now
        self.pbx = pbx
        self.updated_at = now

    def duplicate(self, other: Lead) -> ev.LeadDuplicate:
        """``other`` came in from this lead's phone while it is open: it is kept as this lead's history."""
        assert self.id is not None
        return ev.LeadDuplicate(
            lead_id=self.id,
            phone=other.phone,
            name=other.name,
            source=other.source,
            external_id=other.external_id,
            payload=other.payload,
            received_at=other.created_at,
        )

    def finish_attempt(self, disposition: Disposition, scenario: Scenario, now: datetime) -> ev.DomainEvent | None:
        """Decide what follows an attempt: done, a retry later, or give up.

        An attempt the PBX failed is given back: the lead is due again soon, its count as it was.
        """
        assert self.id is not None
        self.last_disposition = disposition
        self.updated_at = now
        if disposition is Disposition.MANAGER_MISSED:
            # Nobody was free or answered: the client never heard a ring. Due again soon, as a
            # lead the PBX failed, but never given up for it: it waits for a manager who answers.
            return self._again_soon(disposition, now)
        if not disposition.costs_attempt and self.pbx_failures + 1 < MAX_PBX_FAILURES:
            self.pbx_failures += 1
            return self._again_soon(disposition, now)
        self.pbx_failures = 0
        if disposition is Disposition.COMPLETED:
            self.status = LeadStatus.ASSIGNED
            return None
        decision = scenario.retry_policy.after(disposition.value, self.attempts)
        due = None if decision.retry_in is None else now + timedelta(seconds=decision.retry_in)
        if due is not None:
            due = scenario.next_allowed(self.phone, due)  # None: its call window never opens
        if due is None:
            self.status = LeadStatus.FAILED
            self.final_state = decision.final_state
            return ev.LeadFailed(
                lead_id=self.id,
                attempts=self.attempts,
                last_disposition=disposition.value,
                final_state=decision.final_state,
            )
        self.status = LeadStatus.SCHEDULED
        self.next_attempt_at = due
        return ev.LeadScheduled(
            lead_id=self.id,
            attempts=self.attempts,
            next_attempt_at=self.next_attempt_at,
            last_disposition=disposition.value,
        )

    def called_in(self, now: datetime) -> None:
        """The lead's phone called the company: that call is its attempt in flight, as a dial is."""
        self.status = LeadStatus.DIALING
        self.attempts += 1
        self.updated_at = now

    def _again_soon(self, disposition: Disposition, now: datetime) -> ev.LeadScheduled:
        """The attempt is given back and the lead is due again within seconds."""
        assert self.id is not None
        self.attempts -= 1
        self.status = LeadStatus.NEW if self.attempts == 0 else LeadStatus.SCHEDULED
        self.next_attempt_at = now + timedelta(seconds=PBX_RETRY_DELAY)
        return ev.LeadScheduled(
            lead_id=self.id,
            attempts=self.attempts,
            next_attempt_at=self.next_attempt_at,
            last_disposition=disposition.value,
        )


@dataclass
class ManagerLeg:
    """One try to put a manager on the line with the client."""

    manager_id: str
    started_at: datetime
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    result: LegResult | None = None


@dataclass
class Call:
    """One dial attempt of one lead, from Originate to the client's hangup."""

    lead_id: int
    attempt: int
    scenario: str
    channel_id: str  # the client leg's Uniqueid, chosen by us before the Originate
    phone: str
    started_at: datetime
    id: int | None = None
    state: CallState = CallState.DIALING
    answered_at: datetime | None = None
    bridged_at: datetime | None = None
    ended_at: datetime | None = None
    manager_id: str | None = None  # the manager who talked (or is being tried)
    disposition: Disposition | None = None
    hangup_cause: int | None = None
    recording_file: str | None = None
    recording_url: str | None = None
    recording_deleted_at: datetime | None = None  # the recording was deleted then (retention)
    pbx_billable_seconds: int | None = None
    pbx_failure: str | None = None  # why the PBX failed the call, when it did
    legs: list[ManagerLeg] = field(default_factory=list)
    hold_expired: bool = False
    machine: bool = False  # Asterisk's AMD() said an answering machine answered: the dialplan hangs up
    # Manager first: the manager's phone rings first, and the dialplan dials the client once he
    # answers; how the client's phone ended when it did not answer (Dial's outcome).
    manager_first: bool = False
    client_result: Disposition | None = None
    pbx: str | None = None  # the PBX the call is on, by its name in leadrouter.yaml

    # -- what the PBX tells us -------------------------------------------------------------

    def dialing(self) -> ev.CallDialing:
        assert self.id is not None
        return ev.CallDialing(
            lead_id=self.lead_id, call_id=self.id, attempt=self.attempt, phone=self.phone, started_at=self.started_at
        )

    def client_answered(self, now: datetime) -> ev.CallAnswered | None:
        if self.state is not CallState.DIALING:
            return None
        self.state = CallState.HOLDING
        self.answered_at = now
        assert self.id is not None
        return ev.CallAnswered(lead_id=self.lead_id, call_id=self.id, answered_at=now)

    def connect_to(self, manager_id: str, now: datetime) -> ManagerLeg:
        if self.state is not CallState.HOLDING:
            raise ValueError(f"call {self.id} is {self.state}, it cannot be sent to a manager")
        self.state = CallState.CONNECTING
        self.manager_id = manager_id
        leg = ManagerLeg(manager_id=manager_id, started_at=now)
        self.legs.append(leg)
        return leg

    # -- manager first ---------------------------------------------------------------------

    def ring_manager(self, manager_id: str, now: datetime) -> ManagerLeg:
        """Manager first: this manager's phone is originated; the client waits for nothing yet."""
        if self.state is not CallState.DIALING:
            raise ValueError(f"call {self.id} is {self.state}, no manager can be rung first")
        self.manager_first = True
        self.manager_id = manager_id
        leg = ManagerLeg(manager_id=manager_id, started_at=now)
        self.legs.append(leg)
        return leg

    def manager_picked_up(self, now: datetime) -> bool:
        """Manager first: he answered, and the dialplan now dials the client (CONNECTING)."""
        if not self.manager_first or self.state is not CallState.DIALING or not self.legs:
            return False
        self.state = CallState.CONNECTING
        leg = self.legs[-1]
        leg.answered_at, leg.result = now, LegResult.ANSWERED
        return True

    def manager_missed(self, result: LegResult, now: datetime) -> str | None:
        """Manager first: his phone was not answered; returns him. The call may ring another."""
        if not self.manager_first or self.state is not CallState.DIALING or not self.legs:
            return None
        leg = self.legs[-1]
        if leg.result is not None:
            return None
        leg.result, leg.ended_at = result, now
        self.manager_id = None
        return leg.manager_id

    def client_picked_up(self, now: datetime) -> ev.CallAnswered | None:
        """Manager first: the client answered and is bridged at once, so his hold time is nil."""
        if not self.manager_first or self.state is not CallState.CONNECTING or self.answered_at is not None:
            return None
        self.answered_at = now
        assert self.id is not None
        return ev.CallAnswered(lead_id=self.lead_id, call_id=self.id, answered_at=now)

    @property
    def current_leg(self) -> ManagerLeg | None:
        if self.state in (CallState.CONNECTING, CallState.BRIDGED) and self.legs:
            return self.legs[-1]
        return None

    def manager_answered(self, now: datetime) -> None:
        leg = self.current_leg
        if leg is not None and leg.answered_at is None:
            leg.answered_at = now
            leg.result = LegResult.ANSWERED

    def manager_failed(self, result: LegResult, now: datetime) -> str | None:
        """The manager's phone was not answered; the client is back on hold. Returns that manager."""
        leg = self.current_leg
        if self.state is not CallState.CONNECTING or leg is None:
            return None
        leg.result, leg.ended_at = result, now
        self.state = CallState.HOLDING
        self.manager_id = None
        return leg.manager_id

    def bridged(self, now: datetime) -> bool:
        if self.state is not CallState.CONNECTING:
            return False
        self.state = CallState.BRIDGED
        self.bridged_at = now
        self.manager_answered(now)
        return True

    def tried_managers(self) -> set[str]:
        """Managers already tried on this call; each is offered a client once per attempt."""
        return {leg.manager_id for leg in self.legs}

    def end(self, disposition: Disposition, now: datetime, cause: int | None = None) -> ev.CallEnded:
        leg = self.current_leg
        if leg is not None and leg.ended_at is None:
            leg.ended_at = now
            if leg.result is None:
                leg.result = LegResult.CANCELLED
        self.state = CallState.ENDED
        self.ended_at = now
        self.disposition = disposition
        if cause is not None:
            self.hangup_cause = cause
        return self.ended_event()

    def hung_up(self, now: datetime, cause: int | None) -> ev.CallEnded | None:
        """The client leg is gone. Before answer the originate result decides, so wait for it."""
        if self.state is CallState.DIALING:
            self.hangup_cause = cause
            return None
        if self.state is CallState.ENDED:
            return None
        if self.state is CallState.BRIDGED:
            disposition = Disposition.COMPLETED
        elif self.machine:
            disposition = Disposition.MACHINE
        elif self.manager_first:
            # The client's phone did not answer (Dial said how), or the manager hung up first.
            disposition = self.client_result or Disposition.MANAGER_MISSED
        elif self.hold_expired:
            disposition = Disposition.NO_MANAGER
        elif cause == 0:
            # A client's phone hanging up always gives a cause; 0 is the PBX itself dropping the
            # waiting client (a restart, or a Hangup from its console), not the client leaving.
            return self.pbx_failed("the PBX hung up the waiting client (cause 0)", now)
        else:
            disposition = Disposition.ABANDONED
        return self.end(disposition, now, cause)

    def pbx_failed(self, reason: str, now: datetime) -> ev.CallEnded:
        self.pbx_failure = reason
        return self.end(Disposition.PBX_FAILED, now)

    def vanished(self, now: datetime, record: CallEndRecord | None = None) -> ev.CallEnded | None:
        """The PBX no longer has the client leg and we missed its Hangup: close with what we know.

        ``record``: the PBX's own note of how an answered client leg ended (when, the cause,
        whether the client talked to a manager), if it kept one. With it an answered call ends as
        if its Hangup had been heard: at the PBX's time, with its cause, so talk time is true.
        Without it the call ends ``now`` (when we noticed). Unlike a hangup, no originate result
        follows for an unanswered call, so it ends here. Whether an unanswered client's phone rang
        out, was busy or was answered then hung up is not known, so that costs the lead no attempt;
        an answered client who was never bridged as far as we saw may have left, or talked to the
        manager we sent them to.
        """
        match self.state:
            case CallState.DIALING:
                return self.end(Disposition.LOST_TRACK, now)
            case CallState.ENDED:
                return None
        if record is not None:
            # Never before what we saw ourselves (the two clocks may differ by a little).
            seen = max(moment for moment in (self.started_at, self.answered_at, self.bridged_at) if moment)
            at = max(record.ended_at, seen)
            if self.state is CallState.BRIDGED:
                return self.end(Disposition.COMPLETED, at, record.cause)
            if not record.talked:
                # Never put through: the leg ended as a Hangup we heard would have ended it.
                return self.hung_up(at, record.cause)
            # Put through to a manager unheard: when the bridge began is not known, nor who owns the lead.
            return self.end(Disposition.ENDED_UNOBSERVED, at, record.cause)
        if self.state is CallState.BRIDGED:
            return self.end(Disposition.COMPLETED, now)
        return self.end(Disposition.NO_MANAGER if self.hold_expired else Disposition.ENDED_UNOBSERVED, now)

    # -- durations -------------------------------------------------------------------------

    @property
    def ring_seconds(self) -> float | None:
        return _seconds(self.started_at, self.answered_at or self.ended_at)

    @property
    def hold_seconds(self) -> float | None:
        if self.answered_at is None:
            return None
        return _seconds(self.answered_at, self.bridged_at or self.ended_at)

    @property
    def talk_seconds(self) -> float | None:
        return _seconds(self.bridged_at, self.ended_at)

    @property
    def total_seconds(self) -> float | None:
        return _seconds(self.started_at, self.ended_at)

    def ended_event(self) -> ev.CallEnded:
        assert self.id is not None and self.ended_at is not None and self.disposition is not None
        return ev.CallEnded(
            lead_id=self.lead_id,
            call_id=self.id,
            attempt=self.attempt,
            disposition=self.disposition.value,
            hangup_cause=self.hangup_cause,
            manager_id=self.manager_id if self.bridged_at else None,
            managers_tried=[leg.manager_id for leg in self.legs],
            started_at=self.started_at,
            answered_at=self.answered_at,
            bridged_at=self.bridged_at,
            ended_at=self.ended_at,
            ring_seconds=self.ring_seconds,
            hold_seconds=self.hold_seconds,
            talk_seconds=self.talk_seconds,
            total_seconds=self.total_seconds,
            recording_file=self.recording_file,
            recording_url=self.recording_url,
            pbx_failure=self.pbx_failure,
        )
