"""AMI framing on top of panoramisk's protocol, without its 1.4 traps.

panoramisk decodes every TCP chunk on its own with ``errors='ignore'``, so a UTF-8 letter
split across two reads vanishes ("Иван" -> "ван"). Here one incremental decoder spans the
whole connection. Events are filtered by name before their headers are parsed, because
most of what Asterisk sends (VarSet, Newexten) is of no interest and this runs inside the
reader: Asterisk drops a client that stops reading for ~100 ms.
"""

from __future__ import annotations

import codecs
import time
from collections.abc import Callable
from typing import Any

import structlog
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

log = structlog.get_logger("ami")

EOL = "\r\n"
FRAME_END = "\r\n\r\n"
BANNER = "Asterisk Call Manager/"
_MAX_PENDING = 1 << 20  # a frame this long without a blank line is not AMI


class AmiDisconnected(ConnectionError):
    """The AMI connection closed before the action was answered; it was not re-sent."""


def parse_headers(frame: str) -> dict[str, str]:
    """Headers of one frame; a line without ``: `` is kept out (and a repeated key keeps its last value)."""
    headers: dict[str, str] = {}
    for line in frame.split(EOL):
        key, sep, value = line.partition(": ")
        if sep:
            headers[key] = value
        elif line.endswith(":"):  # "Key:" with an empty value and no trailing space
            headers[line[:-1]] = ""
    return headers


class AmiProtocol(AMIProtocol):
    """Set by the client after construction: ``on_event``, ``wanted_events``."""

    on_event: Callable[[str, dict[str, str]], None]
    wanted_events: frozenset[str]

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._banner_done = False
        self.opened_at = time.monotonic()
        self.last_received = self.opened_at

    def data_received(self, data: bytes) -> None:
        self.last_received = time.monotonic()
        text = self._pending + self._decoder.decode(data)
        if not self._banner_done:
            end = text.find(EOL)
            if end < 0:
                self._pending = text
                return
            self.version = text[:end].removeprefix(BANNER).strip()
            self._banner_done = True
            text = text[end + 2 :]
        frames = text.split(FRAME_END)
        self._pending = frames.pop()
        if len(self._pending) > _MAX_PENDING:
            log.warning("ami.frame_dropped", reason="no frame end", size=len(self._pending))
            self._pending = ""
        for frame in frames:
            self._frame(frame)

    def _frame(self, frame: str) -> None:
        frame = frame.strip(EOL)  # tolerate a stray single EOL between frames
        if frame.startswith("Event: "):
            end = frame.find(EOL)
            name = frame[7:end] if end > 0 else frame[7:]
            if name in self.wanted_events:
                headers = parse_headers(frame)
                if headers.get("ActionID") in self.responses:
                    self.handle_message(Message(headers))
                else:
                    self.on_event(name, headers)
            elif "ActionID: " in frame:
                # An event that belongs to an action's event list (e.g. CoreShowChannel).
                self._to_action(frame)
        elif frame.startswith("Response: "):
            self._to_action(frame)
        elif frame:
            log.warning("ami.frame_skipped", reason="neither Event nor Response", frame=frame[:200])

    def _to_action(self, frame: str) -> None:
        message = Message(parse_headers(frame))
        action = self.responses.get(message.id)
        if action is None:
            return
        if message.get("Response") == "Error" and action.as_list and not action.future.done():
            # panoramisk waits for an event list that an error never starts; finish it here.
            action.future.set_result([message])
            self.responses.pop(message.id, None)
            return
        self.handle_message(message)

    def close(self) -> None:
        # panoramisk would queue unanswered actions and re-send them after the reconnect,
        # which for an Originate means a second call to the same client. Fail them instead.
        for action in list(self.responses.values()):
            if not action.future.done():
                action.future.set_exception(AmiDisconnected(f"connection lost before {action['Action']} was answered"))
        self.responses.clear()
        super().close()
