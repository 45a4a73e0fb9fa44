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
class Billed:
    """One CDR segment of the client leg; a leg redirected twice has several."""

    channel_id: str
    billable_seconds: int


@dataclass(frozen=True, slots=True)
class ExtensionState:
    extension: str
    state: DeviceState


# What happened to one of our calls, at a moment the PBX may state.
CallProgress = OriginateResult | DialEnded | Bridged | HungUp | RecordingStarted
PbxEvent = CallProgress | Billed | ExtensionState
