"""The HTTP server cannot be stalled by connections that say nothing: idle and dribbling
clients are closed after the header timeout, connections past the cap are closed at once
and logged once per burst, a header over the size limit is refused, and /health answers
within a second beside 2,000 idle sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from api.server import ApiServer, ConnectionLimits
from pbxsim.tests.amitools import wait_until
from tests.conftest import JsonLog

IDLE_CONNECTIONS = 2000


def _app(release: asyncio.Event | None = None) -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/held")
    async def held() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            assert release is not None
            await release.wait()  # the response has begun; its body waits for the test
            yield b"released"

        return StreamingResponse(chunks(), media_type="text/plain")

    return app


@contextlib.asynccontextmanager
async def _server(limits: ConnectionLimits, release: asyncio.Event | None = None) -> AsyncIterator[ApiServer]:
    async with ApiServer(_app(release), "127.0.0.1", 0, limits) as server:
        yield server


async def _connect(port: int, count: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    return [await asyncio.open_connection("127.0.0.1", port) for _ in range(count)]


def _close(connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> None:
    for _, writer in connections:
        writer.close()


async def _closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    try:
        await asyncio.wait_for(reader.read(), within)  # whatever is left, up to the end of the stream
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


async def test_health_answers_within_a_second_beside_two_thousand_idle_connections() -> None:
    async with _server(ConnectionLimits(max_connections=IDLE_CONNECTIONS + 100, header_timeout=60)) as server:
        idle = await _connect(server.port, IDLE_CONNECTIONS)
        try:
            # Every idle socket is accepted and held by the server before the measurement.
            await wait_until(lambda: server.open_connections >= IDLE_CONNECTIONS, 30, "accepts")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
                started = time.perf_counter()
                response = await client.get("/health", timeout=5)
                elapsed = time.perf_counter() - started
            assert response.status_code == 200
            assert elapsed < 1.0, f"/health took {elapsed:.3f} s beside {IDLE_CONNECTIONS} idle connections"
        finally:
            _close(idle)


async def test_connections_past_the_cap_are_closed_at_once_and_logged_once(json_log: JsonLog) -> None:
    async with _server(ConnectionLimits(max_connections=20, header_timeout=60)) as server:
        held = await _connect(server.port, 20)
        extra = await _connect(server.port, 15)
        try:
            assert all([await _closed_by_server(reader, 5) for reader, _ in extra])
            assert not await _closed_by_server(held[0][0], 0.2)
            refusals = json_log.events("http.refused")
            assert len(refusals) == 1 and refusals[0]["max_connections"] == 20, refusals
        finally:
            _close(held + extra)


async def test_silent_and_dribbling_clients_are_closed_after_the_header_timeout() -> None:
    async with _server(ConnectionLimits(header_timeout=0.5, keep_alive=30)) as server:
        [(silent, silent_writer), (dribbler, dribbler_writer), (fair, fair_writer)] = await _connect(server.port, 3)
        try:
            request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"

            async def dribble() -> None:
                for byte in request[:-2]:  # never the blank line that ends the header
                    dribbler_writer.write(bytes([byte]))
                    await asyncio.sleep(0.05)

            dribbling = asyncio.create_task(dribble())
            fair_writer.write(request)
            assert (await fair.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
            assert await _closed_by_server(silent, 5)
            assert await _closed_by_server(dribbler, 5)
            # A keep-alive client has the same deadline for its next request's header.
            assert await _closed_by_server(fair, 5)
            dribbling.cancel()
        finally:
            _close([(silent, silent_writer), (dribbler, dribbler_writer), (fair, fair_writer)])


async def test_failed_accepts_are_logged_once_per_burst(json_log: JsonLog) -> None:
    async with _server(ConnectionLimits()):
        loop = asyncio.get_running_loop()
        for _ in range(500):  # what asyncio reports on every accept() while file descriptors are out
            loop.call_exception_handler(
                {"message": "socket.accept() out of system resource", "exception": OSError(24, "Too many open files")}
            )
        loop.call_exception_handler({"message": "something else entirely"})  # still reaches the usual handler
    failures = json_log.events("http.accept_failed")
    assert len(failures) == 1 and "Too many open files" in failures[0]["error"]
    assert any("something else entirely" in json.dumps(line) for line in json_log.lines())


async def test_a_header_over_the_limit_is_refused_and_one_under_it_answered() -> None:
    async with _server(ConnectionLimits(max_header_bytes=4096)) as server:
        (reader, writer), (fair, fair_writer) = await _connect(server.port, 2)
        try:
            # Sent without the blank line that ends it: refused before the rest is waited for.
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 5000 + b"\r\n")
            answer = await asyncio.wait_for(reader.read(), 5)
            assert answer.startswith(b"HTTP/1.1 400"), answer
            fair_writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 3000 + b"\r\n\r\n")
            assert (await fair.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        finally:
            _close([(reader, writer), (fair, fair_writer)])


async def test_a_pipelined_header_over_the_limit_is_refused_after_the_request_before_it() -> None:
    """One read holds a whole request and the start of an oversized next one: the first is
    answered, the second refused, however the two share the read."""
    async with _server(ConnectionLimits(max_header_bytes=4096)) as server:
        [(reader, writer)] = await _connect(server.port, 1)
        try:
            writer.write(
                b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /health HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 20_000 + b"\r\n"
            )
            answers = await asyncio.wait_for(reader.read(), 5)
            assert answers.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 400" in answers, answers
        finally:
            _close([(reader, writer)])


async def test_a_request_answered_after_the_header_timeout_is_not_cut_and_its_head_leaves_first() -> None:
    release = asyncio.Event()
    async with _server(ConnectionLimits(header_timeout=0.3, keep_alive=30), release) as server:
        [(reader, writer)] = await _connect(server.port, 1)
        try:
            writer.write(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
            # The head arrives while the body is still held back by the app.
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200"), head
            await asyncio.sleep(0.6)  # past the header timeout: the server is answering, the client owes nothing
            release.set()
            assert b"released" in await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)
        finally:
            _close([(reader, writer)])


async def test_a_port_taken_is_an_error_that_says_where_not_the_process_exiting() -> None:
    # uvicorn calls sys.exit when it cannot listen; the daemon must hear an error it can report.
    limits = ConnectionLimits(max_connections=10, header_timeout=5, keep_alive=5, max_header_bytes=8192)
    async with _server(limits) as taken:
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{taken.port}"):
            async with ApiServer(_app(), "127.0.0.1", taken.port, limits):
                pass
        async with httpx.AsyncClient() as client:  # the first server serves on
            assert (await client.get(f"http://127.0.0.1:{taken.port}/health")).status_code == 200
