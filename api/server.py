"""uvicorn inside the daemon's own event loop, leaving signals to the daemon, and hard to stall.

Idle or slow connections are what stalls an HTTP server that has no limits: each holds a
file descriptor forever, and once the process runs out, accept() fails on every loop turn
and nothing answers, not even /health. So: at most ``max_connections`` are open (more are
closed at once, logged once per burst); a connection that has not sent a whole request
header within ``header_timeout`` is closed (slowloris, idle sockets); a request header over
``max_header_bytes`` is refused (400) before more of it is buffered; the open-file limit is
raised to its hard limit, and the connection cap kept below it; accept errors that still
happen are logged once per burst.

The parser is httptools (llhttp, in C) rather than h11: h11's pure-Python parser and state
machine cost a POST /leads about 90 µs of the daemon's CPU, a fifth of the HTTP layer's.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
from collections.abc import Generator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Self

import structlog
import uvicorn
from fastapi import FastAPI
from uvicorn._types import ASGI3Application
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

log = structlog.get_logger("api")

# File descriptors kept for everything but HTTP clients: the database, AMI, MQTT, logs.
RESERVED_FILES = 256
# A burst ends when nothing was refused for this long; the next refusal is logged again.
BURST_QUIET = 60.0


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = 4096
    header_timeout: float = 10.0  # seconds from connect (or the last response) to a complete request header
    keep_alive: int = 5  # seconds an idle keep-alive connection stays open
    max_header_bytes: int = 16384


class _Bursts:
    """Logs repeated trouble once per burst: at its first occurrence, with the previous burst's count."""

    def __init__(self, event: str) -> None:
        self._event = event
        self._count = 0
        self._last = 0.0

    def happened(self, **fields: Any) -> None:
        now = asyncio.get_running_loop().time()
        if not self._count or now - self._last > BURST_QUIET:
            log.warning(self._event, previous_burst=self._count, **fields)
            self._count = 0
        self._count += 1
        self._last = now


class _OneWrite(asyncio.Transport):
    """What a request's cycle writes to, holding its writes until the response completes (or the
    loop's next turn, for a streamed one): a response's head and body, which uvicorn writes as two
    ASGI messages arrive, leave in one send(). On loopback each send() also runs the receiving
    side's TCP stack: ~50 µs of the daemon's CPU here (py-spy)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._held:
            self._loop.call_soon(self.flush)  # a streamed response's chunks still leave as they come
        self._held.append(bytes(data))

    def flush(self) -> None:
        if self._held:
            data = b"".join(self._held)
            self._held.clear()
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()


class _Guarded(HttpToolsProtocol):
    """uvicorn's httptools protocol with a connection cap, a deadline and a size limit for each request header."""

    limits: ClassVar[ConnectionLimits]
    refusals: ClassVar[_Bursts]
    _deadline: asyncio.TimerHandle | None = None
    _in_header = True  # between requests: what arrives is the next request's header
    _header_bytes = 0  # received of that header so far
    _began_in_read = False  # a request began within the read being parsed
    _refuse_next = False  # the next request's header is over the limit: 400 once the answer in progress left

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._writes = _OneWrite(transport, self.loop)
        if len(self.connections) > self.limits.max_connections:
            self.refusals.happened(max_connections=self.limits.max_connections)
            transport.close()
            return
        self._arm_deadline()

    def data_received(self, data: bytes) -> None:
        self._began_in_read = False
        super().data_received(data)
        if not self._in_header:
            return
        if self._began_in_read:
            # The unfinished header began in this read, after whatever request came before it in
            # the same read (pipelining): it is at most the read's tail past its last blank line.
            end = data.rfind(b"\r\n\r\n")
            self._header_bytes = len(data) - (end + 4 if end >= 0 else 0)
        else:
            self._header_bytes += len(data)
        # llhttp keeps an unfinished header whatever its size: refused past the limit, as h11 refused it.
        if self._header_bytes > self.limits.max_header_bytes and not self.transport.is_closing():
            if self.cycle is not None and not self.cycle.response_complete:
                # A request before it is being answered: its answer first (answers keep the
                # requests' order), then the refusal; nothing more is read meanwhile.
                self._refuse_next = True
                self.flow.pause_reading()
            else:
                self.send_400_response("Invalid HTTP request received.")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_header = True
        self._began_in_read = True

    def on_headers_complete(self) -> None:
        self._in_header = False
        self._header_bytes = 0
        super().on_headers_complete()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        # Before its task exists, so even a handler that never awaits writes through it; a
        # pipelined request's cycle starts here too, once the one before it has answered.
        cycle.transport = self._writes
        super()._start_asgi_task(cycle, app)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_header = True

    def on_response_complete(self) -> None:
        self._writes.flush()  # now, not after whatever else the loop has queued meanwhile
        if self._refuse_next and not self.transport.is_closing():
            self.send_400_response("Invalid HTTP request received.")
            return
        super().on_response_complete()
        self._arm_deadline()  # the next request's header is due within header_timeout too

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def _arm_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(self.limits.header_timeout, self._header_overdue)

    def _header_overdue(self) -> None:
        # Owed: no request is being answered and the next one's header is not complete (nothing
        # sent, or dribbling). A request being answered is left alone, even one whose body is
        # still arriving: a large import may take a slow link minutes (max_connections bounds those).
        answering = self.cycle is not None and not self.cycle.response_complete
        if self._in_header and not answering and not self.transport.is_closing():
            self.transport.close()


def raise_open_file_limit() -> int:
    """Raise this process's open-file limit to its hard limit (systemd's LimitNOFILE); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.up = asyncio.Event()  # set once listening: ApiServer waits on it, not in steps of a poll

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        except SystemExit as exc:
            # uvicorn exits the process when it cannot listen (the port taken, say), past the
            # daemon's own report of why it stops: the daemon hears it as the error it is.
            if self.lifespan.should_exit:
                raise  # not the listening: a lifespan's start (off here) failed
            where = f"{self.config.host}:{self.config.port}"
            raise OSError(f"the HTTP API cannot listen on {where} (see the line before)") from exc
        if self.started:
            self.up.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn would take SIGINT/SIGTERM for itself; the daemon owns shutdown and
        # decides when the API stops (first, so no lead is accepted while it winds down).
        yield


class ApiServer:
    def __init__(self, app: FastAPI, host: str, port: int, limits: ConnectionLimits) -> None:
        files = raise_open_file_limit()
        if limits.max_connections > files - RESERVED_FILES:
            log.warning("http.max_connections_lowered", configured=limits.max_connections, open_file_limit=files)
            limits = ConnectionLimits(**{**limits.__dict__, "max_connections": max(1, files - RESERVED_FILES)})
        protocol = type("LeadrouterHttp", (_Guarded,), {"limits": limits, "refusals": _Bursts("http.refused")})
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            http=protocol,
            timeout_keep_alive=limits.keep_alive,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None
        self._accept_errors = _Bursts("http.accept_failed")

    @property
    def task(self) -> asyncio.Task[None]:
        """The server's task, for the daemon to watch: it is not meant to end before __aexit__."""
        assert self._task is not None, "enter the server first"
        return self._task

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self._server.servers[0].sockets[0].getsockname()[1])

    @property
    def open_connections(self) -> int:
        """Connections open now, idle ones included: what max_connections counts."""
        return len(self._server.server_state.connections)

    def _exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # asyncio reports every failed accept() (out of file descriptors, say) and retries a
        # second later; one line per burst says the same without filling the disk.
        if context.get("message") == "socket.accept() out of system resource":
            self._accept_errors.happened(error=str(context.get("exception")))
        elif self._previous_handler is not None:
            self._previous_handler(loop, context)
        else:
            loop.default_exception_handler(context)

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        self._previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._exception)
        self._task = asyncio.create_task(self._server.serve(), name="http")
        up = asyncio.ensure_future(self._server.up.wait())
        try:
            await asyncio.wait({up, self._task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            up.cancel()
        if not self._server.started:
            self._task.result()  # re-raise why it could not start (port in use...)
            raise RuntimeError("HTTP server stopped while starting")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task
        asyncio.get_running_loop().set_exception_handler(self._previous_handler)
