"""A raw asyncio AMI client and call helpers for the simulator's own tests (no AMI library on purpose)."""

from __future__ import annotations

import asyncio
import inspect
import itertools
from collections.abc import Callable

SCALE = 50.0
WAIT = 10.0  # real seconds a test waits for something before it fails
POLL = 0.01

Message = dict[str, str]

# What the daemon sets on every client leg (see extensions_leadrouter.conf).
LEADROUTER_VARIABLES = [
    ("Variable", "LEADROUTER_MANAGER_PREFIX=Local/"),
    ("Variable", "LEADROUTER_MANAGER_SUFFIX=@sim-managers"),
    ("Variable", "LEADROUTER_RING_TIMEOUT=20"),
    ("Variable", "LEADROUTER_HOLD_MAX=600"),
]


class RawAmi:
    """Frames AMI messages off a TCP stream and lets a test wait for the ones it expects."""

    _ids = itertools.count(1)

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.messages: list[Message] = []
        self.closed = asyncio.Event()
        self._arrived = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, port: int) -> RawAmi:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await reader.readline() == b"Asterisk Call Manager/13.0.0\r\n"
        return cls(reader, writer)

    async def _read(self) -> None:
        lines: list[str] = []
        try:
            while line := await self.reader.readline():
                text = line.decode("utf-8").rstrip("\r\n")
                if text:
                    lines.append(text)
                elif lines:
                    self.messages.append(dict(_split(x) for x in lines))
                    lines = []
                    self._arrived.set()
        finally:
            self.closed.set()
            self._arrived.set()

    def send(self, action: str, *headers: tuple[str, str]) -> str:
        action_id = f"t{next(self._ids)}"
        fields = [("Action", action), *headers, ("ActionID", action_id)]
        self.writer.write(("".join(f"{k}: {v}\r\n" for k, v in fields) + "\r\n").encode())
        return action_id

    async def action(self, action: str, *headers: tuple[str, str]) -> Message:
        action_id = self.send(action, *headers)
        return await self.wait(lambda m: m.get("ActionID") == action_id and "Response" in m)

    async def login(self, username: str = "leadrouter", secret: str = "s3cret", events: str | None = None) -> Message:
        headers = [("Username", username), ("Secret", secret)]
        if events is not None:
            headers.append(("Events", events))
        return await self.action("Login", *headers)

    def mark(self) -> int:
        """A position in the stream, to wait for something that comes after it."""
        return len(self.messages)

    async def wait(self, predicate: Callable[[Message], bool], limit: float = WAIT, since: int = 0) -> Message:
        async def scan() -> Message:
            seen = since
            while True:
                for message in self.messages[seen:]:
                    if predicate(message):
                        return message
                seen = len(self.messages)
                if self.closed.is_set():
                    raise AssertionError("connection closed before the expected message arrived")
                self._arrived.clear()
                await self._arrived.wait()

        return await asyncio.wait_for(scan(), limit)

    async def event(self, name: str, limit: float = WAIT, since: int = 0, **fields: str) -> Message:
        return await self.wait(
            lambda m: m.get("Event") == name and all(m.get(k) == v for k, v in fields.items()), limit, since
        )

    def events(self, name: str, **fields: str) -> list[Message]:
        return [m for m in self.messages if m.get("Event") == name and all(m.get(k) == v for k, v in fields.items())]

    async def close(self) -> None:
        self.writer.close()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def _split(line: str) -> tuple[str, str]:
    key, _, value = line.partition(":")
    return key, value.removeprefix(" ")


def originate(
    client_number: str, channel_id: str, *, timeout_ms: int = 30000, callerid: str | None = None
) -> list[tuple[str, str]]:
    """The Originate a daemon sends for a client leg parked in leadrouter-hold."""
    headers = [
        ("Channel", f"Local/{client_number}@sim-clients"),
        ("Context", "leadrouter-hold"),
        ("Exten", "s"),
        ("Priority", "1"),
        ("Async", "true"),
        ("Timeout", str(timeout_ms)),
        *LEADROUTER_VARIABLES,
        ("ChannelId", channel_id),
    ]
    if callerid is not None:
        headers.append(("CallerID", callerid))
    return headers


def connect_to(channel: str, manager: str) -> list[tuple[str, str]]:
    return [("Channel", channel), ("Context", "leadrouter-connect"), ("Exten", manager), ("Priority", "1")]


async def wait_until(condition: Callable[[], object], limit: float = WAIT, what: str = "the condition") -> None:
    """Poll a condition on some state (not a message), failing after ``limit`` real seconds.

    The condition may be a coroutine function (the daemon's tests ask their database); this is the
    one polling helper of the simulator's tests and the daemon's, which may use the simulator's.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {limit} s waiting for {what}")
        await asyncio.sleep(POLL)
