"""AMI events -> domain PBX events. The one place that knows AMI event field names.

Only our own client legs matter: their Uniqueid is the ChannelId we chose at Originate
(``<prefix>-...``); the ``;2`` half of a Local channel and channels Asterisk named itself
are someone else's. Managers are recognised by their device name, not by channel.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from router.pbx_events import (
    Billed,
    Bridged,
    DeviceState,
    DialEnded,
    DialOutcome,
    ExtensionState,
    HungUp,
    OriginateOutcome,
    OriginateResult,
    PbxEvent,
    RecordingStarted,
)

# OriginateResponse "Reason" is Asterisk's last control frame on the channel.
_ORIGINATE_REASONS = {
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
    }
)


class EventTranslator:
    def __init__(
        self,
        *,
        channel_id_prefix: str,
        manager_device: tuple[str, str],
        sink: Callable[[PbxEvent], None],
    ) -> None:
        """``manager_device`` is the device template split around ``{extension}``."""
        self._prefix = channel_id_prefix + "-"
        self._device_head, self._device_tail = manager_device
        self._sink = sink
        self._names: dict[str, str] = {}
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
        }

    def is_ours(self, uniqueid: str | None) -> bool:
        return uniqueid is not None and uniqueid.startswith(self._prefix) and ";" not in uniqueid

    def channel_name(self, channel_id: str) -> str | None:
        """The channel's current name: Redirect and Hangup address channels by name."""
        return self._names.get(channel_id)

    def ours_in_listing(self, items: list[dict[str, str]]) -> set[str]:
        """Our live channels in a CoreShowChannels listing; their names are remembered."""
        live = set()
        for item in items:
            channel_id = item.get("Uniqueid")
            if self.is_ours(channel_id) and "Channel" in item:
                assert channel_id is not None
                self._names[channel_id] = item["Channel"]
                live.add(channel_id)
        return live

    def __call__(self, name: str, headers: dict[str, str]) -> None:
        handler = self._handlers.get(name)
        if handler is None:
            return
        event = handler(headers)
        if event is not None:
            self._sink(event)

    def _newchannel(self, headers: dict[str, str]) -> None:
        if self.is_ours(headers.get("Uniqueid")):
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
        cause = headers.get("Cause", "")
        return HungUp(channel_id, int(cause) if cause.isdigit() else None, _stamped(headers))

    def _cdr(self, headers: dict[str, str]) -> PbxEvent | None:
        channel_id = headers.get("UniqueID")
        billable = headers.get("BillableSeconds", "")
        if not self.is_ours(channel_id) or not billable.isdigit():
            return None
        assert channel_id is not None
        return Billed(channel_id, int(billable))

    def _device_state(self, headers: dict[str, str]) -> PbxEvent | None:
        device = headers.get("Device", "")
        head, tail = self._device_head, self._device_tail
        if not (device.startswith(head) and device.endswith(tail)) or len(device) <= len(head) + len(tail):
            return None
        extension = device[len(head) : len(device) - len(tail)]
        return ExtensionState(extension, _DEVICE_STATES.get(headers.get("State", ""), DeviceState.UNKNOWN))


def _stamped(headers: dict[str, str]) -> datetime | None:
    """The event's ``Timestamp`` (manager.conf ``timestampevents = yes``: epoch seconds.micro)."""
    stamp = headers.get("Timestamp")
    if stamp is None:
        return None
    try:
        return datetime.fromtimestamp(float(stamp), UTC)
    except (ValueError, OverflowError, OSError):
        return None  # a broken stamp is no reason to lose the event: our own clock stands in
