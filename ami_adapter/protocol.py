"""AMI framing on top of panoramisk's protocol, without its 1.4 traps.

panoramisk decodes every TCP chunk on its own with ``errors='ignore'``, so a UTF-8 letter
split across two reads vanishes ("Иван" -> "ван"). Here one incremental decoder spans the
whole connection. Events are filtered by name before their headers are parsed, because
most of what Asterisk sends (VarSet, Newexten) is of no interest and this runs inside the
reader: Asterisk drops a client that stops reading for ~100 ms.

Every write takes the connection's ``wire`` lock, so an action may also be written from another
thread (``write_off_loop``): the dialer's Originate leaves from the database's thread the moment
its lead's commit is done, not once the loop has heard of it.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from panoramisk.actions import Action
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

log = structlog.get_logger("ami")

EOL = "\r\n"
FRAME_END = "\r\n\r\n"
BANNER = "Asterisk Call Manager/"
_MAX_PENDING = 1 << 20  # a frame this long without a blank line is not AMI


class _Throttled:
    """At most ``per_minute`` warnings a minute; then how many were held back, once the minute is over.

    The reader must stay cheap and the log small when a PBX (or whatever sits at its port)
    sends a stream of garbage.
    """

    def __init__(self, per_minute: int = 10) -> None:
        self._per_minute = per_minute
        self._window_start = -60.0
        self._logged = 0
        self._held_back = 0

    def warning(self, event: str, **fields: Any) -> None:
        now = time.monotonic()
        if now - self._window_start >= 60:
            if self._held_back:
                log.warning("ami.warnings_held_back", count=self._held_back)
            self._window_start, self._logged, self._held_back = now, 0, 0
        if self._logged < self._per_minute:
            self._logged += 1
            log.warning(event, **fields)
        else:
            self._held_back += 1


class AmiUnsafeAction(ValueError):
    """An action header holds CR, LF or NUL: sent, it would end the header or the action early."""


def check_action(action: Mapping[str, Any]) -> None:
    """Raise AmiUnsafeAction when a key or value could inject headers or actions.

    Defence in depth: everything we send is validated where it enters (digits-only numbers,
    config fields), but this is the one place every byte passes. The message names the header,
    never its value, which may be the secret.
    """
    for key, value in action.items():
        for text in (key, *(value if isinstance(value, list) else [value])):
            if isinstance(text, str) and ("\r" in text or "\n" in text or "\0" in text):
                raise AmiUnsafeAction(f"{action.get('Action')}: header {key!r} contains CR, LF or NUL; not sent")


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


@dataclass
class PreparedAction:
    """An action checked and rendered ahead of its sending (AmiClient.prepare)."""

    action: Action  # panoramisk's: its ActionID and the future its answer fills
    text: str  # its frame, as panoramisk renders it
    handed: bool = False  # given to AmiClient.send_prepared, on the loop: that happens once
    written: bool = False  # on a connection's wire (set under its lock, by the loop or another thread)


class AmiProtocol(AMIProtocol):
    """Set by the client after construction: ``on_event``, ``wanted_events``; by the login: ``logged_in``."""

    on_event: Callable[[str, dict[str, str]], None]
    wanted_events: frozenset[str]
    logged_in: bool
    wire: threading.Lock  # taken by every write, and to mark the protocol closing (``_shut``)
    _shut: bool  # closing: nothing is written from another thread from then on
    _rest: bytes  # what a write from another thread left for the loop to write, first
    _fd: int | None  # the socket's descriptor, for writes from another thread (plain TCP only)
    _loop: asyncio.AbstractEventLoop

    def send(self, data: Any, as_list: bool = False) -> Any:
        check_action(data)
        with self.wire:
            self._write_rest()
            return super().send(data, as_list=as_list)

    def send_prepared(self, prepared: PreparedAction) -> None:
        """Write an action checked and rendered beforehand (AmiClient.prepare) as ``send`` writes
        one, unless it is written already (``write_off_loop``): its answer is matched to it by its
        ActionID."""
        with self.wire:
            if prepared.written:
                return
            self._write_rest()
            self.responses[prepared.action.id] = prepared.action
            self.transport.write(prepared.text.encode(getattr(self, "encoding", "ascii")))
            prepared.written = True

    def write_off_loop(self, prepared: PreparedAction) -> bool:
        """``send_prepared`` from a thread other than the loop's, when it can be done from there
        now: the connection logged in and open, plain TCP, nothing of the loop's waiting to be
        written before it; True when this wrote it. Otherwise nothing is written, and
        ``send_prepared`` writes it later."""
        data = prepared.text.encode(getattr(self, "encoding", "ascii"))
        with self.wire:
            transport = self.transport
            if (
                prepared.written
                or self._fd is None
                or self._shut
                or not self.logged_in
                or self._rest
                or transport.is_closing()
                or transport.get_write_buffer_size()
            ):
                return False
            # Its answer may be read on the loop before this thread goes on: it must find the action.
            self.responses[prepared.action.id] = prepared.action
            try:
                written = os.write(self._fd, data)
            except OSError:  # a full socket buffer (BlockingIOError) or a broken link: nothing went
                del self.responses[prepared.action.id]
                return False
            prepared.written = True
            if written < len(data):
                # The rest goes before anything else is written, by the loop (no thread waits here).
                self._rest = data[written:]
                self._loop.call_soon_threadsafe(self._flush_rest)
            return True

    def _flush_rest(self) -> None:
        with self.wire:
            if not self._shut:
                self._write_rest()

    def _write_rest(self) -> None:
        """What ``write_off_loop`` could not write at once, written now, ahead of what follows. Under ``wire``."""
        if self._rest:
            rest, self._rest = self._rest, b""
            self.transport.write(rest)

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.wire = threading.Lock()
        self.logged_in = False
        self._shut = False
        self._rest = b""
        # Writes from another thread go to the socket itself: only for plain TCP (TLS encrypts on
        # the loop), and only while the protocol is open, which keeps the descriptor this socket's:
        # the transport closes it after connection_lost, and close() marks ``_shut`` under ``wire``.
        sock = transport.get_extra_info("socket")
        self._fd = None
        if sock is not None and transport.get_extra_info("sslcontext") is None:
            self._fd, self._loop = sock.fileno(), asyncio.get_running_loop()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._skipping = False  # inside a frame too long to keep: everything up to its end goes
        self._banner_done = False
        self._warnings = _Throttled()
        self.opened_at = time.monotonic()
        self.last_received = self.opened_at

    def data_received(self, data: bytes) -> None:
        self.last_received = time.monotonic()
        text = self._pending + self._decoder.decode(data)
        if not self._banner_done:
            end = text.find(EOL)
            if end < 0:
                self._pending = self._bounded(text)
                return
            self.version = text[:end].removeprefix(BANNER).strip()
            self._banner_done = True
            text = text[end + 2 :]
        if self._skipping:
            end = text.find(FRAME_END)
            if end < 0:
                self._pending = text[-3:]  # a blank line may be split across reads
                return
            self._skipping = False
            text = text[end + len(FRAME_END) :]
        frames = text.split(FRAME_END)
        self._pending = self._bounded(frames.pop())
        for frame in frames:
            try:
                self._frame(frame)
            except Exception as exc:
                # One event we cannot make sense of (a header missing, a value out of range) must
                # not end the session: an exception here would close the connection, and every
                # live call would wait for a reconnect and a resync. Framing is intact: skip it.
                self._warnings.warning("ami.event_skipped", error=repr(exc), frame=frame[:200])

    def _bounded(self, pending: str) -> str:
        # A frame this long without a blank line is not AMI. It is dropped whole, up to its
        # blank line, so no line inside it can pass for the start of a frame.
        if len(pending) > _MAX_PENDING:
            self._warnings.warning("ami.frame_dropped", reason="no frame end", size=len(pending))
            self._skipping = True
            return pending[-3:]  # the blank line that ends it may have begun already
        return pending

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
            self._warnings.warning("ami.frame_skipped", reason="neither Event nor Response", frame=frame[:200])

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
        with self.wire:
            self._shut = True
        # panoramisk would queue unanswered actions and re-send them after the reconnect,
        # which for an Originate means a second call to the same client. Fail them instead.
        for action in list(self.responses.values()):
            if not action.future.done():
                action.future.set_exception(AmiDisconnected(f"connection lost before {action['Action']} was answered"))
        self.responses.clear()
        super().close()
