"""One AMI session that stays up: login, reconnect, a watchdog that notices a silent server.

panoramisk keeps the socket and matches responses to actions; this wrapper fixes what
panoramisk 1.4 gets wrong for a dialer: its ping never checks the reply (a hung Asterisk
is never noticed), and it re-sends unanswered actions after a reconnect (an Originate
reached the server twice). Here every action is forgettable, a pending one fails with
AmiDisconnected, and the watchdog drops a connection whose server stays silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import structlog
from panoramisk import Manager
from panoramisk.actions import Action
from panoramisk.message import Message

from ami_adapter.protocol import AmiDisconnected, AmiProtocol, AmiUnsafeAction, PreparedAction, check_action

log = structlog.get_logger("ami")


class AmiError(Exception):
    """Asterisk answered an action with an error."""


class AmiNotConnected(ConnectionError):
    """No logged-in AMI session right now; nothing was sent."""


class _EveryAction:
    """panoramisk re-sends actions missing from ``forgetable_actions``; forget all of them."""

    def __contains__(self, _name: object) -> bool:
        return True


@dataclass(frozen=True)
class AmiSettings:
    host: str
    port: int
    username: str
    secret: str = field(repr=False)  # kept out of every log line and traceback that shows the settings
    # DialBegin, Bridge*, Hangup, DeviceStateChange...; Cdr; FullyBooted, Shutdown; the dialplan's UserEvents
    events: str = "call,cdr,system,user"
    ping_interval: float = 10.0
    ping_timeout: float = 5.0
    reconnect_delay: int = 2
    action_timeout: float = 10.0


class _Manager(Manager):
    client: AmiClient

    def ping(self) -> None:
        # panoramisk's pinger fires and forgets; AmiClient._watchdog checks the replies.
        pass

    def connection_made(self, connecting: asyncio.Future[Any]) -> None:
        super().connection_made(connecting)
        if self.protocol is not None and not connecting.exception():
            self.protocol.on_event = self.client.on_event
            self.protocol.wanted_events = self.client.wanted_events

    def login(self, future: asyncio.Future[Any]) -> bool:
        self.authenticated_future = None
        if future.exception() is not None:
            log.warning("ami.login_interrupted", error=str(future.exception()))
            return False
        response = future.result()
        self.authenticated = bool(response.success)
        if self.authenticated:
            self.protocol.logged_in = True
            log.info("ami.logged_in", host=self.config["host"], port=self.config["port"])
            self.loop.call_soon(self.client.logged_in)
        else:
            log.error("ami.login_refused", message=response.get("Message", ""), username=self.config["username"])
        return self.authenticated


class AmiClient:
    def __init__(
        self,
        settings: AmiSettings,
        *,
        on_event: Callable[[str, dict[str, str]], None],
        wanted_events: frozenset[str],
        on_connected: Callable[[], Coroutine[Any, Any, None]] | None = None,
        on_disconnected: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.on_event = on_event
        self.wanted_events = wanted_events
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._manager: _Manager | None = None
        self._watchdog_task: asyncio.Task[None] | None = None
        self._logged_in = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        settings = self.settings
        self._manager = _Manager(
            host=settings.host,
            port=settings.port,
            username=settings.username,
            secret=settings.secret,
            events=settings.events,
            reconnect_timeout=settings.reconnect_delay,
            protocol_factory=AmiProtocol,
            forgetable_actions=_EveryAction(),
            on_disconnect=self._disconnected,
            loop=asyncio.get_running_loop(),
        )
        self._manager.client = self
        self._manager.connect()
        self._watchdog_task = asyncio.create_task(self._watchdog(), name="ami-watchdog")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._watchdog_task is not None:
            self._watchdog_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog_task
        for task in list(self._tasks):
            task.cancel()
        if self._manager is not None:
            self._manager.close()
        self._logged_in.clear()

    @property
    def connected(self) -> bool:
        manager = self._manager
        return bool(manager and manager.authenticated and manager.protocol is not None and not manager.protocol.closed)

    async def wait_connected(self) -> None:
        await self._logged_in.wait()

    def logged_in(self) -> None:
        self._logged_in.set()
        if self._on_connected is not None:
            task = asyncio.create_task(self._on_connected(), name="ami-on-connected")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _disconnected(self, _manager: Manager, exc: BaseException | None) -> None:
        self._logged_in.clear()
        if self._manager is not None:
            self._manager.authenticated = False
        log.warning("ami.disconnected", error=str(exc) if exc else None, retry_in=self.settings.reconnect_delay)
        if self._on_disconnected is not None:
            self._on_disconnected()

    def drop_connection(self, reason: str) -> None:
        """Abort the socket; panoramisk then reconnects after reconnect_delay."""
        manager = self._manager
        if manager is None or manager.protocol is None or manager.protocol.closed:
            return
        log.warning("ami.dropping_connection", reason=reason)
        manager.protocol.transport.abort()

    async def send(self, action: Mapping[str, str | list[str]]) -> dict[str, str]:
        """Send one action and return its response headers; raises AmiError on an error reply."""
        return await self.send_now(action)

    def send_now(self, action: Mapping[str, str | list[str]]) -> Awaitable[dict[str, str]]:
        """Write one action before returning (nothing else runs first); awaiting the result gives
        its response headers as ``send`` does. Raises AmiNotConnected, or AmiError for an action
        that may not be sent, at once."""
        return self.send_prepared(self.prepare(action))

    def prepare(self, action: Mapping[str, str | list[str]]) -> PreparedAction:
        """The action checked and rendered now, for ``send_prepared`` to write later: the CPU of
        building it spent while something else is awaited (a commit on the database's thread).
        Raises AmiError for an action that may not be sent."""
        try:
            check_action(action)
        except AmiUnsafeAction as exc:
            raise AmiError(str(exc)) from None
        built = Action(dict(action), as_list=False)
        return PreparedAction(built, str(built))

    def send_prepared(self, prepared: PreparedAction) -> Awaitable[dict[str, str]]:
        """``send_now`` of a prepared action: written before this returns, unless ``write_off_loop``
        wrote it already; raises AmiNotConnected at once. Called once for an action, which is
        written at most once."""
        if prepared.handed:
            raise AmiError(f"{prepared.action['Action']}: already sent; an action is never sent twice")
        prepared.handed = True
        manager = self._manager
        if self.connected and manager is not None:
            manager.protocol.send_prepared(prepared)
        elif not prepared.written:
            # (Written off the loop before the link went: its answer fails as any other's did.)
            raise AmiNotConnected(f"{prepared.action['Action']} not sent: AMI is not connected")
        return self._headers(prepared.action, self._answer(prepared.action, prepared.action.future))

    def write_off_loop(self, prepared: PreparedAction) -> bool:
        """Thread-safe, from a thread other than the loop's: write the prepared action now if the
        connection takes it from there (AmiProtocol.write_off_loop), and say whether it did;
        ``send_prepared``, which must follow on the loop all the same, then only gives its answer.
        Raises nothing."""
        manager = self._manager
        protocol = manager.protocol if manager is not None else None
        return protocol is not None and not protocol.closed and protocol.write_off_loop(prepared)

    async def _headers(self, action: Mapping[str, str | list[str]], answer: Awaitable[Any]) -> dict[str, str]:
        response = await answer
        headers = dict(response.items())
        if not response.success:
            raise AmiError(f"{action['Action']}: {headers.get('Message', headers.get('Response'))}")
        return headers

    async def send_list(self, action: Mapping[str, str | list[str]]) -> list[dict[str, str]]:
        """Send an action answered by an event list; return the list's items."""
        messages = await self._write_list(action)
        if isinstance(messages, Message):
            messages = [messages]
        first = messages[0]
        if not first.success:
            raise AmiError(f"{action['Action']}: {first.get('Message', first.get('Response'))}")
        return [dict(item.items()) for item in messages[1:] if not item.get("Event", "").endswith("Complete")]

    def _write_list(self, action: Mapping[str, str | list[str]]) -> Awaitable[Any]:
        """The action answered by an event list on the wire now; the list is awaited from the result."""
        if not self.connected or self._manager is None:
            raise AmiNotConnected(f"{action['Action']} not sent: AMI is not connected")
        try:
            future = self._manager.send_action(dict(action), as_list=True)
        except AmiUnsafeAction as exc:
            raise AmiError(str(exc)) from None
        return self._answer(action, future)

    async def _answer(self, action: Mapping[str, str | list[str]], future: asyncio.Future[Any]) -> Any:
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation that
            # arrives as the answer does, and the cancelled caller then runs on.
            async with asyncio.timeout(self.settings.action_timeout):
                return await future
        except TimeoutError:
            raise AmiDisconnected(f"{action['Action']}: no answer in {self.settings.action_timeout}s") from None

    async def _watchdog(self) -> None:
        settings = self.settings
        while True:
            await asyncio.sleep(settings.ping_interval)
            manager = self._manager
            if manager is None or manager.protocol is None or manager.protocol.closed:
                continue
            if not manager.authenticated:
                # A hung server still accepts TCP connections and then says nothing at all.
                if time.monotonic() - manager.protocol.opened_at > settings.ping_timeout:
                    self.drop_connection("no login answer")
                continue
            try:
                async with asyncio.timeout(settings.ping_timeout):  # see _send: not wait_for
                    await self.send({"Action": "Ping"})
            except (TimeoutError, AmiDisconnected, AmiError, AmiNotConnected) as exc:
                if not isinstance(exc, AmiNotConnected):
                    self.drop_connection(f"ping unanswered: {exc}")
