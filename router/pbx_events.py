"""What the PBX reports about our calls, in domain words.

The AMI adapter is the only place that turns AMI frames into these; the dialer only
reads these. Channels are named by the ``channel_id`` we chose at Originate time.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class OriginateOutcome(enum.StrEnum):
    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    UNREACHABLE = "unreachable"
    # The PBX could not even create the client leg (shutting down, no such trunk or context):
    # the client's line was never tried.
    PBX_FAILED = "pbx_failed"


class DialOutcome(enum.StrEnum):
    """How a Dial from the client leg to a manager ended."""

    ANSWER = "answer"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    UNAVAILABLE = "unavailable"
    CANCEL = "cancel"


class DeviceState(enum.StrEnum):
    FREE = "free"
    RINGING = "ringing"
    IN_USE = "in_use"
    UNAVAILABLE = "unavailable"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class OriginateResult:
    channel_id: str
    outcome: OriginateOutcome
    at: datetime | None = None  # when the PBX says it happened, if it stamps its events


@dataclass(frozen=True, slots=True)
class DialEnded:
    channel_id: str
    outcome: DialOutcome
    at: datetime | None = None  # when the PBX says it happened, if it stamps its events


@dataclass(frozen=True, slots=True)
class Bridged:
    channel_id: str
    at: datetime | None = None  # when the PBX says it happened, if it stamps its events


@dataclass(frozen=True, slots=True)
class HungUp:
    channel_id: str
    cause: int | None
    at: datetime | None = None  # when the PBX says it happened, if it stamps its events


@dataclass(frozen=True, slots=True)
class RecordingStarted:
    channel_id: str
    at: datetime | None = None  # when the PBX says it happened, if it stamps its events


@dataclass(frozen=True, slots=True)
class MachineDetected:
    """Asterisk's AMD() on the answered client leg has decided (the shipped dialplan's UserEvent)."""

    channel_id: str
    machine: bool  # AMDSTATUS MACHINE; HUMAN and NOTSURE are a person as far as we go
    status: str  # AMDSTATUS and AMDCAUSE as the PBX gave them, for the log
    at: datetime | None = None  # when the PBX says it happened, if it stamps its events


@dataclass(frozen=True, slots=True)
class InboundCall:
    """A caller dialled a company number; the shipped dialplan answered and holds him for us.

    ``channel_id`` is the caller's channel (its Uniqueid, chosen by the PBX), ours from now on.
    """

    channel_id: str
    number: str  # the company number called, digits
    caller: str  # the caller's number as the trunk gave it (digits, maybe a +); "" when withheld
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Billed:
    """One CDR segment of the client leg; a leg redirected twice has several."""

    channel_id: str
    billable_seconds: int


@dataclass(frozen=True, slots=True)
class ExtensionState:
    extension: str
    state: DeviceState


@dataclass(frozen=True, slots=True)
class PbxBooted:
    """The PBX says it is fully booted (on login, or when a boot completes)."""

    uptime: float | None = None  # seconds since the PBX (re)started, as it says (whole seconds)


@dataclass(frozen=True, slots=True)
class PbxShuttingDown:
    """The PBX is stopping or restarting; every call on it is about to go."""

    restart: bool


@dataclass(frozen=True, slots=True)
class CallEndRecord:
    """How a client leg ended, as the PBX noted it at the hangup itself (the shipped dialplan's
    hangup handler): read after a gap in which its Hangup went unheard."""

    channel_id: str
    ended_at: datetime  # the PBX's own clock, to the millisecond
    cause: int | None  # the hangup cause
    talked: bool  # the client's last Dial to a manager was answered: they talked, and that ended the call


class LegStage(enum.StrEnum):
    """Where one of our client legs stands, as the PBX's listing of live channels shows it."""

    RINGING = "ringing"  # not answered yet
    SCREENING = "screening"  # answered, and the PBX's AMD() still listens to who did
    ON_HOLD = "on_hold"  # answered, waiting for a manager (or somewhere we did not send it)
    AT_MANAGER = "at_manager"  # sent to a manager whose phone rings
    BRIDGED = "bridged"  # talking to a manager
    APOLOGY = "apology"  # hearing that nobody is free, before the PBX hangs up


@dataclass(frozen=True, slots=True)
class LiveLeg:
    channel_id: str
    stage: LegStage
    extension: str | None = None  # the manager's, when AT_MANAGER or BRIDGED


@dataclass(frozen=True, slots=True)
class PbxSnapshot:
    """What the PBX has right now, read after a (re)login: it replaces whatever events were missed."""

    legs: dict[str, LiveLeg]  # our client legs by channel id
    # Managers' phones by extension; a phone the PBX does not mention is idle as far as it knows.
    devices: dict[str, DeviceState]
    # Callers the dialplan holds for us, taken or not: whoever called during a gap is among them.
    callers: tuple[InboundCall, ...] = ()


# What happened to one of our calls, at a moment the PBX may state.
CallProgress = OriginateResult | DialEnded | Bridged | HungUp | RecordingStarted | MachineDetected
PbxEvent = CallProgress | Billed | ExtensionState | PbxBooted | PbxShuttingDown | InboundCall
