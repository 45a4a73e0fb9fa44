"""The AMI side of the simulator: TCP sessions, login and permissions, actions, event delivery."""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType

from .channel import Channel
from .clock import ScaledClock
from .dialplan import Dialplan, split_args
from .switch import DEFAULT_ORIGINATE_TIMEOUT, ChannelInfo, ChannelRecord, OriginateRequest, Switch
from .wire import ALL, BANNER, CALL, CLASSES, DEFAULT_USERS, SYSTEM, AmiUser, Headers, encode, parse_classes
from .world import World

# Stand-ins for the trunk and the managers' phones, driven by the World, for dialplans that
# (like leadrouter's shipped one) dial ``sim-clients`` / ``sim-managers`` without defining them.
SIM_CONTEXTS = """
[sim-clients]
exten => _X.,1,SimClient()

[sim-managers]
exten => _X.,1,SimManager()

[sim-callers]
exten => _X.,1,SimCaller()
"""

READ_LIMIT = 1 << 20
# How long a stopping Asterisk refuses Originates before it says Shutdown and closes (recorded: ~1 s).
SHUTDOWN_SECONDS = 1.0


def load_dialplan(source: str | Path) -> Dialplan:
    """A Path, or a one-line str, is a file to read; a str with line breaks is the dialplan itself.

    The World-driven ``sim-clients`` and ``sim-managers`` contexts are added unless the dialplan
    brings its own (the transcripts' dialplan does, with real applications).
    """
    if isinstance(source, str) and "\n" in source:
        text = source
    else:
        text = Path(source).read_text(encoding="utf-8")
    dialplan = Dialplan.parse(text)
    if "sim-clients" not in dialplan.contexts:
        dialplan = Dialplan.parse(text + SIM_CONTEXTS)
    return dialplan


def _header(message: Headers, name: str) -> str | None:
    lowered = name.lower()
    for key, value in message:
        if key.lower() == lowered:
            return value
    return None


def _headers(message: Headers, name: str) -> list[str]:
    lowered = name.lower()
    return [value for key, value in message if key.lower() == lowered]


def _parse_callerid(text: str) -> tuple[str, str]:
    """(number, name) from ``"Name" <number>``, ``Name <number>`` or a bare number or name."""
    text = text.strip()
    if "<" in text and text.endswith(">"):
        name, _, number = text[:-1].rpartition("<")
        return number.strip(), name.strip().strip('"').strip()
    if re.fullmatch(r"[0-9+*#()\- ]+", text):
        return text.replace(" ", ""), ""
    return "", text.strip('"')


class Session:
    """One AMI client connection: its login, its permissions and event mask, its filters."""

    def __init__(self, sim: Simulator, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sim = sim
        self.reader = reader
        self.writer = writer
        self.authenticated = False
        self.read: frozenset[str] = frozenset()
        self.write: frozenset[str] = frozenset()
        self.mask: frozenset[str] = ALL
        self.challenge = ""
        self.whitelist: list[re.Pattern[str]] = []
        self.blacklist: list[re.Pattern[str]] = []
        self.closed = False
        self._chunks: deque[bytes] = deque()
        self._chunk_writer: asyncio.Task[None] | None = None

    def receives(self, category: str) -> bool:
        return self.authenticated and category in self.read and category in self.mask

    async def serve(self) -> None:
        self.send(BANNER)
        lines: list[str] = []
        try:
            while not self.closed:
                line = await self.reader.readline()
                if not line:
                    break
                if self.sim.record:
                    self.sim.raw_received.extend(line)
                text = line.decode("utf-8", errors="replace").rstrip("\r\n")
                if text:
                    lines.append(text)
                    continue
                if not lines:
                    continue
                message = [self._split(entry) for entry in lines]
                lines = []
                if self.sim.record:
                    self.sim.received.append(message)
                if self.sim.stalled:
                    continue
                if not await self.sim.handle(self, message):
                    await self.flush()
                    break
        except (ConnectionError, ValueError):
            # ValueError: a line longer than READ_LIMIT; a real Asterisk would drop such a client too.
            pass
        finally:
            self.close()

    @staticmethod
    def _split(line: str) -> tuple[str, str]:
        key, _, value = line.partition(":")
        return key.strip(), value.lstrip(" ")

    def send(self, data: bytes) -> None:
        if self.closed or self.sim.stalled:
            return
        # While chunks are still going out, later messages queue behind them to keep their order.
        if self.sim.write_chunk_size is None and self._chunk_writer is None:
            self.writer.write(data)
            return
        self._chunks.append(data)
        if self._chunk_writer is None:
            self._chunk_writer = asyncio.ensure_future(self._write_chunks())

    async def _write_chunks(self) -> None:
        # Each chunk goes out in its own write with a loop turn in between, so a client's reads can
        # end inside a message, or inside a multi-byte UTF-8 letter.
        try:
            while self._chunks and not self.closed:
                data = self._chunks.popleft()
                size = self.sim.write_chunk_size or len(data)
                for start in range(0, len(data), size):
                    if self.closed:
                        return
                    self.writer.write(data[start : start + size])
                    await asyncio.sleep(0)
        finally:
            self._chunk_writer = None

    async def flush(self) -> None:
        if self._chunk_writer is not None:
            await self._chunk_writer

    def deliver(self, text: str, data: bytes) -> None:
        if self.whitelist or self.blacklist:
            if self.whitelist and not any(pattern.search(text) for pattern in self.whitelist):
                return
            if any(pattern.search(text) for pattern in self.blacklist):
                return
        self.send(data)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.writer.close()
        self.sim.forget(self)


Handler = Callable[[Session, Headers], Awaitable[bool]]


class Simulator:
    """A fake Asterisk speaking AMI over TCP; its calls run on the injected clock.

    Test controls, for provoking what a real Asterisk or network does to a client:

    * ``record=True`` (constructor): keep in ``received`` / ``raw_received`` every action as
      parsed, and the exact bytes read, so a test can prove what did (or did not) reach the wire.
      Off by default: ``leadrouter simulator`` and the demo run for hours and would keep them all;
    * ``write_chunk_size``: write each message in chunks of this many bytes (split frames,
      UTF-8 letters cut in half);
    * ``stall(on)``: a hung Asterisk (sessions open, nothing answered or sent);
    * ``drop_connections()``: Asterisk dropping its AMI clients while calls go on;
    * ``stop_listening()`` / ``start()``: the AMI port closed and opened again (an AMI gap that
      lasts until the test says so), calls going on meanwhile;
    * ``shut_down()`` / ``boot()`` / ``restart()``: ``core stop now`` / ``core restart now``;
    * ``logged_in()``: how many AMI clients are logged in (``manager show connected``), so a
      test can drop or hang a session that is really there;
    * ``live_channels()``: what ``core show channels`` would list;
    * ``channel_history()``: every channel since start, gone or live, with its variables and
      when it was created, answered and ended (``shut_down`` for those ``close()`` cut off),
      so a test can audit a run against what really happened on the PBX.
    """

    def __init__(
        self,
        *,
        clock: ScaledClock,
        dialplan: str | Path,
        world: World | None = None,
        users: Mapping[str, AmiUser] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        timestamp_events: bool = False,
        record: bool = False,
        recordings: Path | None = None,
    ) -> None:
        """``recordings``: the folder MixMonitor writes real WAV files to; None: none are written."""
        self.clock = clock
        self.recordings = recordings
        self.world = world if world is not None else World()
        self.dialplan = load_dialplan(dialplan)
        self.users = {name.lower(): user for name, user in (DEFAULT_USERS if users is None else users).items()}
        self.host = host
        self.port = port
        self.record = record
        self.received: list[list[tuple[str, str]]] = []  # with record=True only
        self.raw_received = bytearray()  # with record=True only
        self.write_chunk_size: int | None = None
        self.stalled = False
        self.shutting_down = False
        # manager.conf [general] timestampevents = yes: every event says when the PBX sent it.
        self.timestamp_events = timestamp_events
        self.astdb: dict[str, str] = {}  # AstDB lives on disk: a restart keeps it
        self.switch = Switch(
            clock=clock, dialplan=self.dialplan, world=self.world, bus=self, astdb=self.astdb, recordings=recordings
        )
        self._sessions: dict[Session, asyncio.Task[None] | None] = {}
        self._listeners: dict[str, list[Session]] = {}
        self._server: asyncio.Server | None = None
        self._started: float | None = None  # when the simulated Asterisk (re)booted: Uptime counts from it
        # Cached device states (Custom: devices; a real PBX caches PJSIP endpoints' too): listed by
        # DeviceStateList, as tests/fixtures/ami/resilience/resync_listing.txt shows.
        self.device_states: dict[str, str] = {}
        self._actions: dict[str, tuple[Handler, frozenset[str]]] = {
            "login": (self._login, frozenset()),
            "logoff": (self._logoff, frozenset()),
            "challenge": (self._challenge, frozenset()),
            "ping": (self._ping, frozenset()),
            "events": (self._events, frozenset()),
            "originate": (self._originate, frozenset({"originate"})),
            "redirect": (self._redirect, frozenset({"call"})),
            "hangup": (self._hangup, frozenset({"system", "call"})),
            "coreshowchannels": (self._core_show_channels, frozenset({"system", "reporting"})),
            "devicestatelist": (self._device_state_list, frozenset({"call", "reporting"})),
            "extensionstatelist": (self._extension_state_list, frozenset({"call", "reporting"})),
            "filter": (self._filter, frozenset({"system"})),
            "status": (self._status, frozenset({"system", "call", "reporting"})),
            "setvar": (self._setvar, frozenset({"call"})),
            "getvar": (self._getvar, frozenset({"call", "reporting"})),
            "command": (self._command, frozenset({"command"})),
            "dbget": (self._dbget, frozenset({"system", "reporting"})),
            "dbdel": (self._dbdel, frozenset({"system"})),
        }

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        if self._started is None:
            self._started = self.clock.monotonic()
        self._server = await asyncio.start_server(self._accept, self.host, self.port, limit=READ_LIMIT)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        await self.drop_connections()
        await self.switch.close()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def live_channels(self) -> list[ChannelInfo]:
        return self.switch.live()

    def channel_history(self) -> list[ChannelRecord]:
        return list(self.switch.history)

    def logged_in(self) -> int:
        return sum(session.authenticated and not session.closed for session in self._sessions)

    def stall(self, on: bool) -> None:
        """A hung Asterisk: sessions stay open, actions are recorded but not run, nothing is sent."""
        self.stalled = on
        self._refresh_listeners()

    async def drop_connections(self) -> None:
        """Close every AMI session; calls keep running, as they do when Asterisk drops its AMI clients."""
        tasks = [task for task in self._sessions.values() if task is not None]
        for session in list(self._sessions):
            session.close()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def stop_listening(self) -> None:
        """Close the AMI port and every session: no client gets in until ``start()``; calls go on."""
        if self._server is not None:
            self._server.close()
        await self.drop_connections()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def shut_down(self, *, restart: bool = True) -> None:
        """``core stop now`` (or the first half of ``core restart now``), as recorded in
        tests/fixtures/ami/resilience/: every call hangs up at once (an Originate still ringing
        fails with Reason 0), every Originate from then on is refused with "Asterisk is shutting
        down", a second later ``Shutdown`` goes out and every session closes with the port."""
        self.shutting_down = True
        self.switch.shut_down()
        await self.clock.sleep(SHUTDOWN_SECONDS)
        self.publish(SYSTEM, "Shutdown", [("Shutdown", "Cleanly"), ("Restart", "True" if restart else "False")])
        await self.stop_listening()
        await self.switch.close()

    async def boot(self) -> None:
        """Asterisk starting afresh: no calls, channel numbers from the start, the port open again,
        and ``FullyBooted`` (``Uptime: 0``) right behind every login's response."""
        self.switch = Switch(
            clock=self.clock,
            dialplan=self.dialplan,
            world=self.world,
            bus=self,
            astdb=self.astdb,
            recordings=self.recordings,
        )
        self.shutting_down = False
        self._started = None
        await self.start()

    async def restart(self) -> None:
        """``core restart now``: the calls are gone, the sessions dropped; the next login finds a fresh PBX."""
        await self.shut_down(restart=True)
        await self.boot()

    def place_inbound(self, caller: str, number: str, context: str = "leadrouter-inbound") -> None:
        """A caller dials a company number: the trunk's channel enters ``context`` (the shipped
        dialplan's leadrouter-inbound) at ``number``, its caller ID ``caller``; the caller then
        behaves as the World's client ``caller`` (talks ``talk`` seconds, then hangs up).

        Like the recorded flow (shipped/inbound.txt), which stood an Originate of
        ``Local/<number>@leadrouter-inbound`` in for the trunk: the caller's channel is its ;2 half.
        """
        self.switch.originate(
            OriginateRequest(
                channel=f"Local/{number}@{context}",
                context="sim-callers",
                exten=caller.removeprefix("+"),
                priority=1,
                timeout=DEFAULT_ORIGINATE_TIMEOUT,
                caller_num=caller,
                caller_name="",
                variables=(),
                channel_id="",
                other_channel_id="",
                action_id=None,
                asynchronous=True,
            )
        )

    def set_device_state(self, device: str, state: str) -> None:
        """A cached device's state changes (a phone registers or drops, a presence key): what
        ``Setvar DEVICE_STATE(Custom:101)=UNAVAILABLE`` does on Asterisk (resync_listing.txt):
        a ``DeviceStateChange``, and the device listed by ``DeviceStateList`` from then on."""
        if not device.startswith("Custom:"):
            raise ValueError(f"{device}: only Custom: devices have a cached state here")
        self.device_states[device] = state
        self.publish(CALL, "DeviceStateChange", [("Device", device), ("State", state)])

    # ---- the event bus the PBX publishes on ----

    def wants(self, category: str) -> bool:
        return bool(self._listeners.get(category))

    def publish(self, category: str, event: str, headers: Headers) -> None:
        sessions = self._listeners.get(category)
        if not sessions:
            return
        head = f"Event: {event}\r\nPrivilege: {category},all\r\n"
        if self.timestamp_events:
            head += f"Timestamp: {self.clock.now().timestamp():.6f}\r\n"
        text = "".join([head, *[f"{name}: {value}\r\n" for name, value in headers], "\r\n"])
        data = text.encode()
        for session in sessions:
            session.deliver(text, data)

    def forget(self, session: Session) -> None:
        self._sessions.pop(session, None)
        self._refresh_listeners()

    def _refresh_listeners(self) -> None:
        if self.stalled:
            self._listeners = {}
            return
        self._listeners = {
            category: [session for session in self._sessions if session.receives(category)] for category in CLASSES
        }

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = Session(self, reader, writer)
        self._sessions[session] = asyncio.current_task()
        await session.serve()

    # ---- actions ----

    def _reply(self, session: Session, request: Headers, response: str, *pairs: tuple[str, str]) -> None:
        headers = [("Response", response)]
        action_id = _header(request, "ActionID")
        if action_id is not None:
            headers.append(("ActionID", action_id))
        headers.extend(pairs)
        session.send(encode(headers))

    def _error(self, session: Session, request: Headers, message: str) -> bool:
        self._reply(session, request, "Error", ("Message", message))
        return True

    def _list_item(self, session: Session, request: Headers, event: str, *pairs: tuple[str, str]) -> None:
        headers = [("Event", event)]
        action_id = _header(request, "ActionID")
        if action_id is not None:
            headers.append(("ActionID", action_id))
        headers.extend(pairs)
        session.send(encode(headers))

    async def handle(self, session: Session, message: Headers) -> bool:
        """Run one action; False when the session must be closed afterwards."""
        action = (_header(message, "Action") or "").strip()
        if not action:
            return self._error(session, message, "Missing action in request")
        name = action.lower()
        if not session.authenticated and name not in ("login", "logoff", "challenge"):
            return self._error(session, message, "Permission denied")
        entry = self._actions.get(name)
        if entry is None:
            return self._error(
                session,
                message,
                f"Invalid/unknown command: {action}. Use Action: ListCommands to show available commands.",
            )
        handler, required = entry
        # manager.c admits an action when the user holds any one of its classes.
        if required and not required & session.write:
            return self._error(session, message, "Permission denied")
        return await handler(session, message)

    async def _login(self, session: Session, message: Headers) -> bool:
        if session.authenticated:
            self._reply(session, message, "Success", ("Message", "Already authenticated"))
            return True
        user = self.users.get((_header(message, "Username") or "").lower())
        if user is None or not self._authentic(session, message, user):
            # Asterisk pauses a second before refusing, then hangs up on the client.
            await self.clock.sleep(1.0)
            self._reply(session, message, "Error", ("Message", "Authentication failed"))
            return False
        session.authenticated = True
        session.read, session.write = user.read, user.write
        for pattern in user.eventfilter:
            target = session.blacklist if pattern.startswith("!") else session.whitelist
            try:
                target.append(re.compile(pattern.removeprefix("!")))
            except re.error:
                pass  # Asterisk logs a filter that does not compile and goes on without it
        events = _header(message, "Events")
        if events is not None:
            session.mask = parse_classes(events)
        self._reply(session, message, "Success", ("Message", "Authentication accepted"))
        if session.receives(SYSTEM):
            assert self._started is not None  # a login needs a started server
            uptime = str(int(self.clock.monotonic() - self._started))
            session.send(
                encode(
                    [
                        ("Event", "FullyBooted"),
                        ("Privilege", "system,all"),
                        ("Uptime", uptime),
                        ("LastReload", uptime),
                        ("Status", "Fully Booted"),
                    ]
                )
            )
        self._refresh_listeners()
        return True

    @staticmethod
    def _authentic(session: Session, message: Headers, user: AmiUser) -> bool:
        if (_header(message, "AuthType") or "").lower() == "md5":
            expected = hashlib.md5((session.challenge + user.secret).encode()).hexdigest()
            return bool(session.challenge) and (_header(message, "Key") or "") == expected
        return _header(message, "Secret") == user.secret

    async def _challenge(self, session: Session, message: Headers) -> bool:
        if (_header(message, "AuthType") or "").lower() != "md5":
            return self._error(session, message, "Must specify AuthType")
        session.challenge = str(secrets.randbelow(10**9))
        self._reply(session, message, "Success", ("Challenge", session.challenge))
        return True

    async def _logoff(self, session: Session, message: Headers) -> bool:
        self._reply(session, message, "Goodbye", ("Message", "Thanks for all the fish."))
        return False

    async def _ping(self, session: Session, message: Headers) -> bool:
        timestamp = f"{self.clock.now().timestamp():.6f}"
        self._reply(session, message, "Success", ("Ping", "Pong"), ("Timestamp", timestamp))
        return True

    async def _events(self, session: Session, message: Headers) -> bool:
        mask = _header(message, "EventMask")
        if not mask:
            return self._error(session, message, "Invalid event mask")
        session.mask = parse_classes(mask)
        self._refresh_listeners()
        self._reply(session, message, "Success", ("Events", "On" if session.mask else "Off"))
        return True

    async def _filter(self, session: Session, message: Headers) -> bool:
        if (_header(message, "Operation") or "").lower() != "add":
            return self._error(session, message, "Unknown operation")
        pattern = _header(message, "Filter") or ""
        target = session.blacklist if pattern.startswith("!") else session.whitelist
        try:
            target.append(re.compile(pattern.removeprefix("!")))
        except re.error:
            return self._error(session, message, "Filter did not compile.  Check the syntax of the filter given.")
        self._reply(session, message, "Success", ("Message", "Success"))
        return True

    async def _originate(self, session: Session, message: Headers) -> bool:
        if self.shutting_down:
            return self._error(session, message, "Asterisk is shutting down")
        channel = _header(message, "Channel") or ""
        if not channel:
            return self._error(session, message, "Channel not specified")
        if "/" not in channel:
            return self._error(session, message, "Invalid channel")
        if _header(message, "Application"):
            return self._error(session, message, "The simulator originates into dialplan only (Context/Exten)")
        context = _header(message, "Context") or "default"
        exten = _header(message, "Exten") or "s"
        priority = self.dialplan.priority(context, exten, (_header(message, "Priority") or "1").strip())
        if priority is None:
            return self._error(session, message, "Invalid priority")
        timeout_text = (_header(message, "Timeout") or "").strip()
        timeout = DEFAULT_ORIGINATE_TIMEOUT
        if timeout_text:
            if not timeout_text.isdigit():
                return self._error(session, message, "Invalid timeout")
            timeout = int(timeout_text) / 1000 or DEFAULT_ORIGINATE_TIMEOUT
        channel_id = (_header(message, "ChannelId") or "").strip()
        other_id = (_header(message, "OtherChannelId") or "").strip()
        for uid in (channel_id, other_id):
            if uid and self.switch.uniqueid_in_use(uid):
                return self._error(session, message, f"Uniqueid already in use: {uid}")
        caller_num, caller_name = _parse_callerid(_header(message, "CallerID") or "")
        variables: list[tuple[str, str]] = []
        for header in _headers(message, "Variable"):
            for assignment in split_args(header):
                name, equals, value = assignment.partition("=")
                if equals and name.strip():
                    variables.append((name.strip(), value))
        asynchronous = (_header(message, "Async") or "").strip().lower() in ("true", "yes", "1", "on", "y", "t")
        request = OriginateRequest(
            channel=channel,
            context=context,
            exten=exten,
            priority=priority,
            timeout=timeout,
            caller_num=caller_num,
            caller_name=caller_name,
            variables=tuple(variables),
            channel_id=channel_id,
            other_channel_id=other_id,
            action_id=_header(message, "ActionID"),
            asynchronous=asynchronous,
        )
        if asynchronous:
            self._reply(session, message, "Success", ("Message", "Originate successfully queued"))
            self.switch.originate(request)
            return True
        # A synchronous Originate holds the session until the call is answered or fails, as in Asterisk.
        if await self.switch.originate(request):
            self._reply(session, message, "Success", ("Message", "Originate successfully queued"))
        else:
            self._error(session, message, "Originate failed")
        return True

    async def _redirect(self, session: Session, message: Headers) -> bool:
        name = _header(message, "Channel") or ""
        if not name:
            return self._error(session, message, "Channel not specified")
        chan = self.switch.find(name)
        if chan is None:
            return self._error(session, message, f"Channel does not exist: {name}")
        context = _header(message, "Context") or chan.context
        exten = _header(message, "Exten") or chan.exten
        priority = self.dialplan.priority(context, exten, (_header(message, "Priority") or "1").strip())
        if priority is None:
            return self._error(session, message, "Invalid priority")
        if chan.hangup_pending:
            return self._error(session, message, "Redirect failed, channel not up.")
        if not self.switch.can_redirect(chan):
            return self._error(session, message, "Redirect failed")
        self._reply(session, message, "Success", ("Message", "Redirect successful"))
        self.switch.redirect(chan, context, exten, priority)
        return True

    async def _hangup(self, session: Session, message: Headers) -> bool:
        name = _header(message, "Channel") or ""
        if not name:
            return self._error(session, message, "No channel specified")
        cause_text = (_header(message, "Cause") or "").strip()
        cause = int(cause_text) if cause_text.isdigit() and int(cause_text) <= 127 else 0
        chan = self.switch.find(name)
        if chan is None:
            return self._error(session, message, "No such channel")
        self._reply(session, message, "Success", ("Message", "Channel Hungup"))
        self.switch.hangup(chan, cause)
        return True

    def _describe(self, chan: Channel) -> list[tuple[str, str]]:
        seconds = self.switch.duration(chan)
        duration = f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        return [
            *chan.snapshot(),
            ("Application", chan.app),
            ("ApplicationData", chan.appdata),
            ("Duration", duration),
            ("BridgeId", chan.bridge.uniqueid if chan.bridge else ""),
        ]

    async def _core_show_channels(self, session: Session, message: Headers) -> bool:
        self._reply(session, message, "Success", ("EventList", "start"), ("Message", "Channels will follow"))
        channels = list(self.switch.channels.values())
        for chan in channels:
            self._list_item(session, message, "CoreShowChannel", *self._describe(chan))
        self._list_item(
            session,
            message,
            "CoreShowChannelsComplete",
            ("EventList", "Complete"),
            ("ListItems", str(len(channels))),
        )
        return True

    async def _device_state_list(self, session: Session, message: Headers) -> bool:
        # Asterisk lists the device states it caches, and Local devices are never cached: only
        # the Custom: devices set here are listed, however busy the simulated phones.
        self._reply(
            session, message, "Success", ("EventList", "start"), ("Message", "Device State Changes will follow")
        )
        for device, state in self.device_states.items():
            self._list_item(session, message, "DeviceStateChange", ("Device", device), ("State", state))
        count = str(len(self.device_states))
        self._list_item(session, message, "DeviceStateListComplete", ("EventList", "Complete"), ("ListItems", count))
        return True

    async def _extension_state_list(self, session: Session, message: Headers) -> bool:
        # The simulated dialplan has no hints.
        return self._error(session, message, "No dialplan hints are available")

    async def _status(self, session: Session, message: Headers) -> bool:
        name = _header(message, "Channel")
        if name:
            chan = self.switch.find(name)
            if chan is None:
                return self._error(session, message, "No such channel")
            channels = [chan]
        else:
            channels = list(self.switch.channels.values())
        self._reply(session, message, "Success", ("EventList", "start"), ("Message", "Channel status will follow"))
        action_id = _header(message, "ActionID")
        for chan in channels:
            headers = [
                ("Event", "Status"),
                ("Privilege", "Call"),
                *chan.snapshot(),
                ("Type", "Local"),
                ("DNID", ""),
                ("EffectiveConnectedLineNum", chan.conn_num or "<unknown>"),
                ("EffectiveConnectedLineName", chan.conn_name or "<unknown>"),
                ("TimeToHangup", "0"),
                ("BridgeID", chan.bridge.uniqueid if chan.bridge else ""),
                ("Application", chan.app),
                ("Data", chan.appdata),
                ("Nativeformats", "(ulaw)"),
                ("Readformat", "ulaw"),
                ("Readtrans", ""),
                ("Writeformat", "ulaw"),
                ("Writetrans", ""),
                ("Callgroup", "0"),
                ("Pickupgroup", "0"),
                ("Seconds", str(self.switch.duration(chan))),
            ]
            if action_id is not None:
                headers.append(("ActionID", action_id))
            session.send(encode(headers))
        count = str(len(channels))
        self._list_item(
            session, message, "StatusComplete", ("EventList", "Complete"), ("ListItems", count), ("Items", count)
        )
        return True

    def _variable_target(self, session: Session, message: Headers) -> tuple[str, Channel | None] | None:
        """Setvar's and Getvar's variable and channel (None: a global), or None once refused."""
        variable = _header(message, "Variable")
        if not variable:
            self._error(session, message, "No variable specified")
            return None
        name = _header(message, "Channel")
        chan = self.switch.find(name) if name else None
        if name and chan is None:
            self._error(session, message, "No such channel")
            return None
        return variable, chan

    async def _setvar(self, session: Session, message: Headers) -> bool:
        target = self._variable_target(session, message)
        if target is not None:
            variable, chan = target
            value = _header(message, "Value") or ""
            device = variable.removeprefix("DEVICE_STATE(").removesuffix(")")
            self._reply(session, message, "Success", ("Message", "Variable Set"))
            if chan is None and variable.startswith("DEVICE_STATE(Custom:") and variable.endswith(")"):
                self.set_device_state(device, value)
            else:
                self.switch.set_variable(chan, variable, value)
        return True

    async def _getvar(self, session: Session, message: Headers) -> bool:
        target = self._variable_target(session, message)
        if target is not None:
            variable, chan = target
            value = self.switch.get_variable(chan, variable)
            self._reply(session, message, "Success", ("Variable", variable), ("Value", value))
        return True

    def _db_key(self, session: Session, message: Headers) -> str | None:
        """DBGet's and DBDel's "/family/key", or None once refused."""
        family, key = _header(message, "Family"), _header(message, "Key")
        if not family:
            self._error(session, message, "No family specified.")
            return None
        if not key:
            self._error(session, message, "No key specified.")
            return None
        return f"/{family}/{key}"

    async def _dbget(self, session: Session, message: Headers) -> bool:
        key = self._db_key(session, message)
        if key is None:
            return True
        value = self.switch.astdb.get(key)
        if value is None:
            return self._error(session, message, "Database entry not found")
        self._reply(session, message, "Success", ("EventList", "start"), ("Message", "Result will follow"))
        # Written straight to the session, not published: no Privilege, no Timestamp, ActionID last.
        headers = [
            ("Event", "DBGetResponse"),
            ("Family", _header(message, "Family") or ""),
            ("Key", _header(message, "Key") or ""),
            ("Val", value),
        ]
        action_id = _header(message, "ActionID")
        if action_id is not None:
            headers.append(("ActionID", action_id))
        session.send(encode(headers))
        self._list_item(session, message, "DBGetComplete", ("EventList", "Complete"), ("ListItems", "1"))
        return True

    async def _dbdel(self, session: Session, message: Headers) -> bool:
        key = self._db_key(session, message)
        if key is None:
            return True
        if self.switch.astdb.pop(key, None) is None:
            return self._error(session, message, "Database entry could not be deleted")
        self._reply(session, message, "Success", ("Message", "Key deleted successfully"))
        return True

    async def _command(self, session: Session, message: Headers) -> bool:
        # There is no CLI behind the simulator: every command is unknown to it.
        command = _header(message, "Command") or ""
        self._reply(
            session,
            message,
            "Error",
            ("Message", "Command output follows"),
            ("Output", f"No such command '{command}' (type 'core show help {command}' for other possible commands)"),
        )
        return True
