"""AMI events -> domain PBX events. The one place that knows AMI event field names.

Only our own client legs matter: their Uniqueid is the ChannelId we chose at Originate
(``<prefix>-...``); the ``;2`` half of a Local channel and channels Asterisk named itself
are someone else's. Managers are recognised by their device name, not by channel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from router.pbx_events import (
    Billed,
    Bridged,
    CallEndRecord,
    DeviceState,
    DialEnded,
    DialOutcome,
    ExtensionState,
    HungUp,
    InboundCall,
    LegStage,
    LiveLeg,
    MachineDetected,
    OriginateOutcome,
    OriginateResult,
    PbxBooted,
    PbxEvent,
    PbxShuttingDown,
    PbxSnapshot,
    RecordingStarted,
)

# OriginateResponse "Reason" is Asterisk's last control frame on the channel.
_ORIGINATE_REASONS = {
    # No frame at all: the channel could not be created (a stopping PBX, an unknown trunk,
    # technology or context; tests/fixtures/ami/resilience/pbx_restart_now.txt).
    "0": OriginateOutcome.PBX_FAILED,
    "1": OriginateOutcome.NO_ANSWER,  # hung up while ringing
    "3": OriginateOutcome.NO_ANSWER,  # still ringing at Timeout
    "5": OriginateOutcome.BUSY,
    "8": OriginateOutcome.UNREACHABLE,  # congestion
}

_DIAL_STATUSES = {
    "ANSWER": DialOutcome.ANSWER,
    "NOANSWER": DialOutcome.NO_ANSWER,
    "BUSY": DialOutcome.BUSY,
    "CANCEL": DialOutcome.CANCEL,
}

_DEVICE_STATES = {
    "NOT_INUSE": DeviceState.FREE,
    "INUSE": DeviceState.IN_USE,
    "BUSY": DeviceState.IN_USE,
    "ONHOLD": DeviceState.IN_USE,
    "RINGINUSE": DeviceState.IN_USE,
    "RINGING": DeviceState.RINGING,
    "UNAVAILABLE": DeviceState.UNAVAILABLE,
    "INVALID": DeviceState.UNAVAILABLE,
}

WANTED_EVENTS = frozenset(
    {
        "Newchannel",
        "Rename",
        "OriginateResponse",
        "DialEnd",
        "BridgeEnter",
        "MixMonitorStart",
        "Hangup",
        "Cdr",
        "DeviceStateChange",
        "FullyBooted",
        "Shutdown",
        "UserEvent",
    }
)
# The shipped dialplan's UserEvent(LeadrouterAMD,Status: ...,Cause: ...) after AMD() on the client leg.
_AMD_EVENT = "LeadrouterAMD"
# ... and UserEvent(LeadrouterInbound,Number: ...,Caller: ...) from a caller it holds in leadrouter-inbound.
_INBOUND_EVENT = "LeadrouterInbound"
_INBOUND_CONTEXT = "leadrouter-inbound"  # where the shipped dialplan holds a caller until we take him
_UP = "6"  # CoreShowChannel ChannelState of an answered channel


@dataclass(frozen=True)
class TranslatorSettings:
    channel_id_prefix: str  # our client legs' Uniqueids are "<prefix>-...": only those are ours
    manager_device: tuple[str, str]  # the managers' device template split around {extension}


class EventTranslator:
    def __init__(self, settings: TranslatorSettings, *, sink: Callable[[PbxEvent], None]) -> None:
        self._prefix = settings.channel_id_prefix + "-"
        self._device_head, self._device_tail = settings.manager_device
        self._sink = sink
        self._names: dict[str, str] = {}
        # Inbound callers' channels: named by the PBX, ours since the dialplan handed them over.
        self._inbound: set[str] = set()
        self._handlers: dict[str, Callable[[dict[str, str]], PbxEvent | None]] = {
            "Newchannel": self._newchannel,
            "Rename": self._rename,
            "OriginateResponse": self._originate_response,
            "DialEnd": self._dial_end,
            "BridgeEnter": self._bridge_enter,
            "MixMonitorStart": self._mixmonitor_start,
            "Hangup": self._hangup,
            "Cdr": self._cdr,
            "DeviceStateChange": self._device_state,
            "FullyBooted": lambda headers: PbxBooted(_uptime(headers)),
            "Shutdown": lambda headers: PbxShuttingDown(restart=headers.get("Restart") == "True"),
            "UserEvent": self._user_event,
        }

    def is_ours(self, uniqueid: str | None) -> bool:
        if uniqueid is None:
            return False
        return (uniqueid.startswith(self._prefix) and ";" not in uniqueid) or uniqueid in self._inbound

    def channel_name(self, channel_id: str) -> str | None:
        """The channel's current name: Redirect and Hangup address channels by name."""
        return self._names.get(channel_id)

    def snapshot(
        self,
        channels: list[dict[str, str]],
        devices: list[dict[str, str]],
        *,
        hold_context: str,
        connect_context: str,
        apology_context: str | None,
    ) -> PbxSnapshot:
        """A ``CoreShowChannels`` and a ``DeviceStateList`` listing in domain words.

        Our client legs' names are remembered. A manager's phone is in use while any channel of
        its device is listed, whatever the device state list says: Asterisk lists only cached
        device states, never those of ``Local/`` devices (tests/fixtures/ami/resilience/).

        An inbound caller's channel is named by the PBX, so a restarted daemon does not know it
        by its Uniqueid: any answered channel in one of our contexts is taken for one (only our
        dialplan puts channels there), listed, and its events are ours from now on. Every caller
        the inbound context holds is also given as the ``InboundCall`` its UserEvent said, for
        one who called while nobody listened (recorded: shipped/inbound_listing.txt).
        """
        legs = {}
        in_use = set()
        callers = []
        callers_in = {hold_context, connect_context, apology_context, _INBOUND_CONTEXT}
        for item in channels:
            channel_id, name = item.get("Uniqueid"), item.get("Channel")
            if name is None:
                continue
            extension = self._manager_extension(_device_of(name))
            if extension is not None:
                in_use.add(extension)
            if not channel_id:
                continue
            if not self.is_ours(channel_id):
                if item.get("ChannelState") != _UP or item.get("Context") not in callers_in:
                    continue
                self._inbound.add(channel_id)
            self._names[channel_id] = name
            legs[channel_id] = _live_leg(channel_id, item, connect_context, apology_context)
            if item.get("Context") == _INBOUND_CONTEXT and item.get("Application") == "MusicOnHold":
                callers.append(_waiting_caller(channel_id, item))
        states = {}
        for item in devices:
            extension = self._manager_extension(item.get("Device", ""))
            if extension is not None:
                states[extension] = _DEVICE_STATES.get(item.get("State", ""), DeviceState.UNKNOWN)
        for extension in in_use:
            if states.get(extension, DeviceState.UNKNOWN) in (DeviceState.FREE, DeviceState.UNKNOWN):
                states[extension] = DeviceState.IN_USE
        return PbxSnapshot(legs=legs, devices=states, callers=tuple(callers))

    def call_end_record(self, channel_id: str, value: str) -> CallEndRecord | None:
        """The shipped dialplan's hangup handler's note (``leadrouter-call-end`` in
        extensions_leadrouter.conf), as DBGet's ``Val`` gives it: "<end epoch.ms>,<cause>,<DIALSTATUS>"."""
        end, cause, dial_status = [*value.split(","), "", ""][:3]
        try:
            ended_at = datetime.fromtimestamp(float(end), UTC)
        except (ValueError, OverflowError, OSError):
            return None  # not a note of ours: the call closes as if there were none
        return CallEndRecord(
            channel_id, ended_at, int(cause) if cause.isdigit() else None, talked=dial_status == "ANSWER"
        )

    def _manager_extension(self, device: str) -> str | None:
        head, tail = self._device_head, self._device_tail
        if not (device.startswith(head) and device.endswith(tail)) or len(device) <= len(head) + len(tail):
            return None
        return device[len(head) : len(device) - len(tail)]

    def __call__(self, name: str, headers: dict[str, str]) -> None:
        handler = self._handlers.get(name)
        if handler is None:
            return
        event = handler(headers)
        if event is not None:
            self._sink(event)

    def _newchannel(self, headers: dict[str, str]) -> None:
        if self.is_ours(headers.get("Uniqueid")) and "Channel" in headers:
            self._names[headers["Uniqueid"]] = headers["Channel"]

    def _rename(self, headers: dict[str, str]) -> None:
        if self.is_ours(headers.get("Uniqueid")) and "Newname" in headers:
            self._names[headers["Uniqueid"]] = headers["Newname"]

    def _originate_response(self, headers: dict[str, str]) -> PbxEvent | None:
        channel_id = headers.get("Uniqueid")
        if not self.is_ours(channel_id):
            return None
        assert channel_id is not None
        if headers.get("Response") == "Success":
            # On success "Channel" is the real channel; on failure only the requested string.
            self._names.setdefault(channel_id, headers.get("Channel", channel_id))
            return OriginateResult(channel_id, OriginateOutcome.ANSWERED, _stamped(headers))
        outcome = _ORIGINATE_REASONS.get(headers.get("Reason", ""), OriginateOutcome.UNREACHABLE)
        return OriginateResult(channel_id, outcome, _stamped(headers))

    def _dial_end(self, headers: dict[str, str]) -> PbxEvent | None:
        # The Originate's own dial has no caller Uniqueid; a Dial() from the connect context does.
        if not self.is_ours(headers.get("Uniqueid")):
            return None
        outcome = _DIAL_STATUSES.get(headers.get("DialStatus", ""), DialOutcome.UNAVAILABLE)
        return DialEnded(headers["Uniqueid"], outcome, _stamped(headers))

    def _bridge_enter(self, headers: dict[str, str]) -> PbxEvent | None:
        return Bridged(headers["Uniqueid"], _stamped(headers)) if self.is_ours(headers.get("Uniqueid")) else None

    def _mixmonitor_start(self, headers: dict[str, str]) -> PbxEvent | None:
        if not self.is_ours(headers.get("Uniqueid")):
            return None
        return RecordingStarted(headers["Uniqueid"], _stamped(headers))

    def _hangup(self, headers: dict[str, str]) -> PbxEvent | None:
        channel_id = headers.get("Uniqueid")
        if not self.is_ours(channel_id):
            return None
        assert channel_id is not None
        self._names.pop(channel_id, None)
        self._inbound.discard(channel_id)
        cause = headers.get("Cause", "")
        return HungUp(channel_id, int(cause) if cause.isdigit() else None, _stamped(headers))

    def _user_event(self, headers: dict[str, str]) -> PbxEvent | None:
        channel_id = headers.get("Uniqueid")
        if headers.get("UserEvent") == _INBOUND_EVENT and channel_id:
            self._inbound.add(channel_id)
            if "Channel" in headers:
                self._names[channel_id] = headers["Channel"]
            return InboundCall(channel_id, headers.get("Number", ""), headers.get("Caller", ""), _stamped(headers))
        if headers.get("UserEvent") != _AMD_EVENT or not self.is_ours(channel_id):
            return None
        assert channel_id is not None
        status = headers.get("Status", "")
        detail = f"{status} {headers.get('Cause', '')}".strip()
        return MachineDetected(channel_id, status == "MACHINE", detail, _stamped(headers))

    def _cdr(self, headers: dict[str, str]) -> PbxEvent | None:
        channel_id = headers.get("UniqueID")
        billable = headers.get("BillableSeconds", "")
        if not self.is_ours(channel_id) or not billable.isdigit():
            return None
        assert channel_id is not None
        return Billed(channel_id, int(billable))

    def _device_state(self, headers: dict[str, str]) -> PbxEvent | None:
        extension = self._manager_extension(headers.get("Device", ""))
        if extension is None:
            return None
        return ExtensionState(extension, _DEVICE_STATES.get(headers.get("State", ""), DeviceState.UNKNOWN))


def _device_of(channel: str) -> str:
    """``PJSIP/101-0000001a`` -> ``PJSIP/101``; ``Local/101@ctx-00000005;1`` -> ``Local/101@ctx``."""
    name = channel.partition(";")[0]
    device, dash, serial = name.rpartition("-")
    return device if dash and serial and all(char in "0123456789abcdef" for char in serial) else name


def _live_leg(channel_id: str, item: dict[str, str], connect_context: str, apology_context: str | None) -> LiveLeg:
    """Where a client leg stands, from its CoreShowChannel item."""
    if item.get("ChannelState") != _UP:
        return LiveLeg(channel_id, LegStage.RINGING)
    context = item.get("Context")
    if context == connect_context:
        # The connect context runs with the manager's extension as its exten.
        stage = LegStage.BRIDGED if item.get("BridgeId") else LegStage.AT_MANAGER
        return LiveLeg(channel_id, stage, item.get("Exten") or None)
    if context is not None and context == apology_context:
        return LiveLeg(channel_id, LegStage.APOLOGY)
    if item.get("Application") == "AMD":
        return LiveLeg(channel_id, LegStage.SCREENING)
    # Answered and anywhere else (the hold context, or just on its way there): waiting for a manager.
    return LiveLeg(channel_id, LegStage.ON_HOLD)


def _waiting_caller(channel_id: str, item: dict[str, str]) -> InboundCall:
    """The UserEvent's fields from a listed caller, filtered and cut as the dialplan does: the
    company number is the exten he entered leadrouter-inbound at; a withheld caller is listed
    as ``<unknown>``, which leaves nothing."""
    number = "".join(ch for ch in item.get("Exten", "")[:15] if ch.isascii() and ch.isdigit())
    caller = "".join(ch for ch in item.get("CallerIDNum", "")[:20] if ch.isascii() and (ch.isdigit() or ch == "+"))
    return InboundCall(channel_id, number, caller)


def _stamped(headers: dict[str, str]) -> datetime | None:
    """The event's ``Timestamp`` (manager.conf ``timestampevents = yes``: epoch seconds.micro)."""
    stamp = headers.get("Timestamp")
    if stamp is None:
        return None
    try:
        return datetime.fromtimestamp(float(stamp), UTC)
    except (ValueError, OverflowError, OSError):
        return None  # a broken stamp is no reason to lose the event: our own clock stands in


def _uptime(headers: dict[str, str]) -> float | None:
    """FullyBooted's ``Uptime``: how long ago the PBX started, so a restart during a gap shows."""
    uptime = headers.get("Uptime", "")
    return float(uptime) if uptime.isascii() and uptime.isdigit() else None
