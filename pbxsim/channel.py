"""Channels, bridges and CDR segments: the state behind every event the simulator emits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

DOWN, RING, RINGING, UP, BUSY = 0, 4, 5, 6, 7
STATE_DESC = {
    0: "Down",
    1: "Rsrvd",
    2: "OffHook",
    3: "Dialing",
    4: "Ring",
    5: "Ringing",
    6: "Up",
    7: "Busy",
    8: "Dialing Offhook",
    9: "Pre-ring",
}

CAUSE_TEXT = {
    0: "Unknown",
    1: "Unallocated (unassigned) number",
    3: "No route to destination",
    16: "Normal Clearing",
    17: "User busy",
    18: "No user responding",
    19: "User alerting, no answer",
    20: "Subscriber absent",
    21: "Call Rejected",
    27: "Destination out of order",
    31: "Normal, unspecified",
    34: "Circuit/channel congestion",
    38: "Network out of order",
    41: "Temporary failure",
    127: "Interworking, unspecified",
}
NORMAL_CLEARING, USER_BUSY, NO_ANSWER, CONGESTION = 16, 17, 19, 34

UNKNOWN = "<unknown>"


class Dialing:
    """The fate of an outgoing leg as its dialer (Originate or Dial) learns it."""

    __slots__ = ("dialer", "on_answer", "outcome", "rang", "started")

    def __init__(
        self,
        outcome: asyncio.Future[str],
        dialer: Channel | None,
        started: float,
        on_answer: Callable[[], None] | None = None,
    ) -> None:
        self.outcome = outcome  # "ANSWER", "BUSY", "CONGESTION" or "HANGUP"
        self.dialer = dialer  # the channel running Dial(); None for an Originate
        self.started = started
        self.rang = False  # ringing is reported to the dialer once
        # Run at the answer itself: the waiting coroutine only resumes some loop turns later.
        self.on_answer = on_answer

    def settle(self, result: str) -> None:
        if self.outcome.done():
            return
        self.outcome.set_result(result)
        if result == "ANSWER" and self.on_answer is not None:
            self.on_answer()


@dataclass
class CdrSegment:
    start: datetime
    start_mono: float
    answer: datetime | None = None
    answer_mono: float = 0.0
    last_app: str = ""
    last_data: str = ""
    dest_channel: str = ""


class Channel:
    # Slots: there can be thousands of channels at once and their attributes are read on every event.
    __slots__ = (
        "accountcode",
        "answered_mono",
        "app",
        "appdata",
        "bridge",
        "caller_name",
        "caller_num",
        "cause",
        "cdr",
        "conn_name",
        "conn_num",
        "context",
        "created_mono",
        "device",
        "dialing",
        "dialplan_task",
        "exten",
        "gone",
        "hangup_handlers",
        "hangup_pending",
        "in_use",
        "linkedid",
        "media_waiter",
        "mixmonitor",
        "name",
        "partner",
        "pending_goto",
        "playing",
        "priority",
        "silent",
        "soft_requested",
        "state",
        "uniqueid",
        "userfield",
        "variables",
        "waker",
    )

    def __init__(
        self,
        *,
        name: str,
        uniqueid: str,
        linkedid: str,
        context: str,
        exten: str,
        state: int,
        device: str,
        created_mono: float,
    ) -> None:
        self.name = name
        self.uniqueid = uniqueid
        self.linkedid = linkedid
        self.context = context
        self.exten = exten
        self.priority = 1
        self.state = state
        self.device = device  # "Local/X@ctx": what DeviceStateChange reports
        self.created_mono = created_mono
        self.answered_mono: float | None = None
        self.caller_num = ""
        self.caller_name = ""
        self.conn_num = ""
        self.conn_name = ""
        self.accountcode = ""
        self.variables: dict[str, str] = {}
        self.app = ""
        self.appdata = ""
        self.partner: Channel | None = None  # the other half of a Local pair
        self.bridge: Bridge | None = None
        self.dialing: Dialing | None = None  # set while an Originate or a Dial waits for this leg
        self.dialplan_task: asyncio.Task[None] | None = None
        self.waker: asyncio.Future[None] | None = None  # completed to interrupt a blocking app
        self.pending_goto: tuple[str, str, int] | None = None
        self.hangup_pending = False
        self.hangup_handlers: list[str] = []  # "context,exten,priority", run at hangup, last pushed first
        self.soft_requested = False
        self.gone = False
        self.cause = 0
        self.cdr: CdrSegment | None = None
        self.userfield = ""
        self.mixmonitor = False
        self.in_use = False  # a Local ;1 while its ;2 runs the dialplan: the device reads INUSE
        self.playing = False  # music on hold or a prompt is playing to this channel's Local partner
        self.silent = False  # it sends its partner silent frames (Playtones(0), a simulated phone talking)
        self.media_waiter: asyncio.Future[None] | None = None  # Answer() waiting for the first voice frame

    def snapshot(self) -> list[tuple[str, str]]:
        return [
            ("Channel", self.name),
            ("ChannelState", str(self.state)),
            ("ChannelStateDesc", STATE_DESC.get(self.state, "Unknown")),
            ("CallerIDNum", self.caller_num or UNKNOWN),
            ("CallerIDName", self.caller_name or UNKNOWN),
            ("ConnectedLineNum", self.conn_num or UNKNOWN),
            ("ConnectedLineName", self.conn_name or UNKNOWN),
            ("Language", "en"),
            ("AccountCode", self.accountcode),
            ("Context", self.context),
            ("Exten", self.exten),
            ("Priority", str(self.priority)),
            ("Uniqueid", self.uniqueid),
            ("Linkedid", self.linkedid),
        ]

    def prefixed(self, prefix: str) -> list[tuple[str, str]]:
        return [(prefix + key, value) for key, value in self.snapshot()]

    def interrupt(self) -> None:
        """Wake the blocking application, if any, so the channel notices a hangup or a goto."""
        if self.waker is not None and not self.waker.done():
            self.waker.set_result(None)


class Bridge:
    __slots__ = ("channels", "uniqueid")

    def __init__(self, uniqueid: str) -> None:
        self.uniqueid = uniqueid
        self.channels: list[Channel] = []

    def headers(self) -> list[tuple[str, str]]:
        return [
            ("BridgeUniqueid", self.uniqueid),
            ("BridgeType", "basic"),
            ("BridgeTechnology", "simple_bridge"),
            ("BridgeCreator", UNKNOWN),
            ("BridgeName", UNKNOWN),
            ("BridgeNumChannels", str(len(self.channels))),
            ("BridgeVideoSourceMode", "none"),
        ]
