"""What happened to a lead, as CRM backends hear it.

Each event is recorded in the same transaction as the state change it reports and
leaves through the outbox; ``type`` is its name on the wire and ``data()`` its body.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, ClassVar

# In every event as ``schema_version``; events/schema/ describes this version. It changes only when
# a field is removed, renamed or changes meaning: new fields come without it, and consumers
# ignore fields they do not know.
SCHEMA_VERSION = 1


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


@dataclass(frozen=True, kw_only=True)
class DomainEvent:
    type: ClassVar[str]
    lead_id: int | None  # None: about no lead (manager.changed)

    def data(self) -> dict[str, Any]:
        names = _FIELD_NAMES.get(type(self))
        if names is None:
            names = _FIELD_NAMES[type(self)] = tuple(field.name for field in fields(self))
        return {name: _plain(getattr(self, name)) for name in names}


# Each kind's field names, once: dataclasses.fields() walks them anew at each call (half of data()).
_FIELD_NAMES: dict[type[DomainEvent], tuple[str, ...]] = {}


@dataclass(frozen=True, kw_only=True)
class LeadCreated(DomainEvent):
    type: ClassVar[str] = "lead.created"
    phone: str
    name: str
    source: str
    external_id: str | None
    payload: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, kw_only=True)
class CallDialing(DomainEvent):
    type: ClassVar[str] = "call.dialing"
    call_id: int
    attempt: int
    phone: str
    started_at: datetime


@dataclass(frozen=True, kw_only=True)
class CallAnswered(DomainEvent):
    type: ClassVar[str] = "call.answered"
    call_id: int
    answered_at: datetime


@dataclass(frozen=True, kw_only=True)
class LeadAssigned(DomainEvent):
    type: ClassVar[str] = "lead.assigned"
    call_id: int
    owner_id: str
    previous_owner_id: str | None


@dataclass(frozen=True, kw_only=True)
class CallEnded(DomainEvent):
    type: ClassVar[str] = "call.ended"
    call_id: int
    attempt: int
    disposition: str
    hangup_cause: int | None
    manager_id: str | None
    managers_tried: list[str]
    started_at: datetime
    answered_at: datetime | None
    bridged_at: datetime | None
    ended_at: datetime
    ring_seconds: float | None
    hold_seconds: float | None
    talk_seconds: float | None
    total_seconds: float | None
    recording_file: str | None
    recording_url: str | None
    pbx_failure: str | None


@dataclass(frozen=True, kw_only=True)
class LeadScheduled(DomainEvent):
    type: ClassVar[str] = "lead.scheduled"
    attempts: int
    next_attempt_at: datetime
    last_disposition: str


@dataclass(frozen=True, kw_only=True)
class LeadFailed(DomainEvent):
    type: ClassVar[str] = "lead.failed"
    attempts: int
    last_disposition: str
    final_state: str  # the scenario's name for how it ended (retries.<outcome>.final_state), "failed" by default


@dataclass(frozen=True, kw_only=True)
class LeadDeferred(DomainEvent):
    """Calling is not allowed now (the scenario's call window): the lead is due at the next allowed minute."""

    type: ClassVar[str] = "lead.deferred"
    next_attempt_at: datetime
    reason: str


@dataclass(frozen=True, kw_only=True)
class LeadDuplicate(DomainEvent):
    """The same phone sent a lead while this one is still open: merged into it, nobody is called twice."""

    type: ClassVar[str] = "lead.duplicate"
    phone: str
    name: str
    source: str
    external_id: str | None
    payload: dict[str, Any]
    received_at: datetime


@dataclass(frozen=True, kw_only=True)
class LeadReassigned(DomainEvent):
    """The owner did not work the lead in time (SLA): it goes to another manager of the pool."""

    type: ClassVar[str] = "lead.reassigned"
    owner_id: str
    previous_owner_id: str
    reason: str
    new_call: bool  # the new owner is connected to the client with a new call


@dataclass(frozen=True, kw_only=True)
class LeadOutcome(DomainEvent):
    type: ClassVar[str] = "lead.outcome"
    outcome: str  # worked, won or lost
    previous_outcome: str | None
    reason: str
    author: str
    owner_id: str | None
    scenario: str | None  # the scenario the owner took the lead in: closing_rate credits him there
    reported_at: datetime


@dataclass(frozen=True, kw_only=True)
class ManagerStateChanged(DomainEvent):
    """A manager's state changed (router.board.ManagerState); kept for stats and published.

    It is about no lead: ``lead_id`` is 0, so every manager's changes keep their order on the wire.
    """

    type: ClassVar[str] = "manager.state"
    lead_id: int = 0
    manager_id: str
    state: str  # available, ringing, on_call, wrap_up, paused or offline
    previous_state: str
    reason: str | None  # a pause's reason (`missed` when paused for missed offers); offline: unregistered, off_shift
    paused: str | None  # his pause's reason while he is paused, also when a call shows over the pause
    at: datetime


@dataclass(frozen=True, kw_only=True)
class ManagerChanged(DomainEvent):
    """A manager added, changed or removed from outside (API, CLI) and in force."""

    type: ClassVar[str] = "manager.changed"
    lead_id: None = None
    manager_id: str
    change: str  # added, changed, removed
    manager: dict[str, Any] | None  # as in force now (GET /managers); None once removed


# Every event the daemon publishes: webhooks' `events:` patterns match these, events/schema/ has one schema each.
EVENT_TYPES: tuple[type[DomainEvent], ...] = (
    LeadCreated,
    CallDialing,
    CallAnswered,
    LeadAssigned,
    CallEnded,
    LeadScheduled,
    LeadFailed,
    LeadOutcome,
    LeadDeferred,
    LeadDuplicate,
    LeadReassigned,
    ManagerStateChanged,
    ManagerChanged,
)
