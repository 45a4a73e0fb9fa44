"""Writes from another thread than the loop's (AmiProtocol.write_off_loop) over real TCP: what the
socket did not take at once goes out before anything written after it, nothing is written while
the loop has bytes waiting, and nothing once the connection is closing."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Callable

import pytest
from panoramisk.actions import Action

from ami_adapter.protocol import AmiProtocol, PreparedAction

_SMALL = 4096  # bytes of socket buffer on either side: a big frame cannot go in one write


def _in_a_thread(function: Callable[[PreparedAction], None], prepared: PreparedAction) -> None:
    """``function(prepared)`` on a thread of its own, waited for without the loop turning meanwhile."""
    thread = threading.Thread(target=function, args=(prepared,))
    thread.start()
    thread.join()


def _prepared(action: dict[str, str | list[str]]) -> PreparedAction:
    built = Action(action, as_list=False)
    return PreparedAction(built, str(built))


@pytest.fixture
async def wire() -> AsyncIterator[tuple[AmiProtocol, asyncio.StreamReader, asyncio.Event]]:
    """Our protocol on a connection to a sink that reads nothing until the event is set."""
    accepted: asyncio.Future[asyncio.StreamReader] = asyncio.get_running_loop().create_future()
    release = asyncio.Event()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result(reader)
        await release.wait()

    listening = socket.socket()
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SMALL)  # inherited by the accepted one
    listening.bind(("127.0.0.1", 0))
    server = await asyncio.start_server(sink, sock=listening, limit=1 << 22)
    client = socket.create_connection(listening.getsockname())
    client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SMALL)
    client.setblocking(False)
    _, protocol = await asyncio.get_running_loop().create_connection(AmiProtocol, sock=client)
    protocol.logged_in = True  # as the client marks it once its Login is answered
    reader = await accepted
    yield protocol, reader, release
    release.set()
    protocol.close()
    server.close()
    await server.wait_closed()


async def test_what_the_socket_did_not_take_goes_before_what_is_written_next(
    wire: tuple[AmiProtocol, asyncio.StreamReader, asyncio.Event],
) -> None:
    protocol, reader, release = wire
    big = _prepared({"Action": "Originate", "ActionID": "big", "Variable": ["X=" + "x" * 300_000]})
    after = _prepared({"Action": "Ping", "ActionID": "after"})
    # The loop does not turn until the Ping below is sent: the rest is still the protocol's then.
    _in_a_thread(protocol.write_off_loop, big)
    assert big.written  # part of it is on the wire; the loop has the rest
    assert big.action.id in protocol.responses  # its answer finds it
    _in_a_thread(protocol.write_off_loop, after)  # the rest is waiting: not from there
    assert not after.written
    protocol.send({"Action": "Ping", "ActionID": "sent"})  # on the loop, the rest not flushed yet: first
    protocol.send_prepared(after)
    assert protocol.transport.get_write_buffer_size() > 0  # the socket took only part of it
    release.set()
    expected = (big.text + _prepared({"Action": "Ping", "ActionID": "sent"}).text + after.text).encode()
    received = await asyncio.wait_for(reader.readexactly(len(expected)), 10)
    assert received.startswith(big.text.encode())  # whole, and first
    frames = received.decode().split("\r\n\r\n")
    assert [frame.split("ActionID: ")[1].split("\r\n")[0] for frame in frames if frame] == ["big", "sent", "after"]


async def test_what_the_socket_did_not_take_goes_out_though_nothing_follows_it(
    wire: tuple[AmiProtocol, asyncio.StreamReader, asyncio.Event],
) -> None:
    protocol, reader, release = wire
    big = _prepared({"Action": "Originate", "ActionID": "big", "Variable": ["X=" + "x" * 300_000]})
    _in_a_thread(protocol.write_off_loop, big)
    assert big.written
    release.set()
    received = await asyncio.wait_for(reader.readexactly(len(big.text)), 10)  # the loop wrote the rest
    assert received == big.text.encode()


async def test_nothing_is_written_off_the_loop_while_the_loop_has_bytes_waiting_or_the_link_is_closing(
    wire: tuple[AmiProtocol, asyncio.StreamReader, asyncio.Event],
) -> None:
    protocol, _, _ = wire
    protocol.send({"Action": "Originate", "ActionID": "big", "Variable": ["X=" + "x" * 300_000]})
    assert protocol.transport.get_write_buffer_size() > 0
    waiting = _prepared({"Action": "Ping", "ActionID": "waiting"})
    await asyncio.to_thread(protocol.write_off_loop, waiting)
    assert not waiting.written and waiting.action.id not in protocol.responses
    protocol.close()
    closing = _prepared({"Action": "Ping", "ActionID": "closing"})
    await asyncio.to_thread(protocol.write_off_loop, closing)
    assert not closing.written
