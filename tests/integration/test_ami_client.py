"""The three panoramisk 1.4 traps, shown not to happen with our wrapper, over real TCP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from ami_adapter.asterisk import SHIPPED_DIALPLAN
from ami_adapter.client import AmiClient, AmiError, AmiNotConnected, AmiSettings
from ami_adapter.protocol import AmiDisconnected
from pbxsim import ScaledClock, Simulator
from pbxsim.tests.amitools import wait_until
from tests.integration.rig import actions_received


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(clock=ScaledClock(20), dialplan=SHIPPED_DIALPLAN, record=True) as sim:
        yield sim


def _client(sim: Simulator, events: list[tuple[str, dict[str, str]]], **kw: object) -> AmiClient:
    settings = AmiSettings(
        host="127.0.0.1",
        port=sim.port,
        username="leadrouter",
        secret=str(kw.pop("secret", "s3cret")),
        ping_interval=0.2,
        ping_timeout=0.3,
        reconnect_delay=1,
    )
    return AmiClient(
        settings,
        on_event=lambda name, headers: events.append((name, headers)),
        wanted_events=frozenset({"NewCallerid", "OriginateResponse", "Hangup"}),
    )


async def test_a_utf8_name_split_across_every_tcp_read_arrives_intact(sim: Simulator) -> None:
    events: list[tuple[str, dict[str, str]]] = []
    sim.write_chunk_size = 1  # every byte its own write: "И" is two reads
    async with _client(sim, events) as ami:
        await asyncio.wait_for(ami.wait_connected(), 5)
        await ami.send(
            {
                "Action": "Originate",
                "Channel": "Local/79160000011@sim-clients",
                "Context": "leadrouter-hold",
                "Exten": "s",
                "Priority": "1",
                "Async": "true",
                "CallerID": "Иван Петров <79160000011>",
                "ChannelId": "utf8-1",
            }
        )
        await wait_until(lambda: any(name == "NewCallerid" for name, _ in events), 10, "NewCallerid")
    names = {headers["CallerIDName"] for name, headers in events if name == "NewCallerid"}
    assert names == {"Иван Петров"}


async def test_a_silent_server_is_detected_and_the_client_reconnects(sim: Simulator) -> None:
    async with _client(sim, []) as ami:
        await asyncio.wait_for(ami.wait_connected(), 5)
        sim.stall(True)  # Asterisk hangs: the socket stays open, nothing comes back
        await wait_until(lambda: not ami.connected, 3, "the watchdog to notice")
        sim.stall(False)
        await wait_until(lambda: ami.connected, 5, "a fresh login")
        assert len(actions_received(sim, "Login")) >= 2


async def test_an_unanswered_originate_is_failed_not_resent_after_reconnect(sim: Simulator) -> None:
    async with _client(sim, []) as ami:
        await asyncio.wait_for(ami.wait_connected(), 5)
        sim.stall(True)
        pending = asyncio.create_task(
            ami.send(
                {
                    "Action": "Originate",
                    "Channel": "Local/79160000001@sim-clients",
                    "Context": "leadrouter-hold",
                    "Exten": "s",
                    "Priority": "1",
                    "Async": "true",
                    "ChannelId": "once-1",
                }
            )
        )
        with pytest.raises(AmiDisconnected):
            await asyncio.wait_for(pending, 5)
        sim.stall(False)
        await wait_until(lambda: ami.connected, 5, "a fresh login")
        # panoramisk re-sends right after the login; the simulator answers actions in the order
        # they arrive, so once this Ping is answered a re-sent Originate would have been read.
        await asyncio.wait_for(ami.send({"Action": "Ping"}), 5)
    assert [originate["ChannelId"] for originate in actions_received(sim, "Originate")] == ["once-1"]


async def test_a_refused_login_is_retried_without_crashing(sim: Simulator) -> None:
    async with _client(sim, [], secret="wrong") as ami:
        await wait_until(lambda: len(actions_received(sim, "Login")) >= 2, 5, "a second attempt")
        assert not ami.connected


async def test_send_now_puts_the_action_on_the_wire_before_its_answer_is_awaited(sim: Simulator) -> None:
    # Speed to dial: the dialer writes an Originate the moment its lead commits, and awaits the
    # answer in a task of its own later.
    async with _client(sim, []) as ami:
        await asyncio.wait_for(ami.wait_connected(), 5)
        answer = ami.send_now({"Action": "Ping"})
        # Nothing awaits the answer yet, and no task was made to send it: the Ping left already.
        await wait_until(lambda: bool(actions_received(sim, "Ping")), 5, "the Ping to arrive")
        assert (await asyncio.wait_for(answer, 5))["Response"] == "Success"


async def test_a_prepared_action_leaves_only_when_sent_and_only_once(sim: Simulator) -> None:
    """The intake builds its Originates while its commit is on the database's thread and sends
    them once it committed: a prepared action is on the wire only then, once, and answered."""
    async with _client(sim, []) as ami:
        await asyncio.wait_for(ami.wait_connected(), 5)
        prepared = ami.prepare({"Action": "Ping", "ActionID": "prepared-1"})
        await asyncio.wait_for(ami.send({"Action": "Ping", "ActionID": "after-1"}), 5)
        # The simulator answers in arrival order: the later Ping answered, the prepared one never came.
        assert [ping["ActionID"] for ping in actions_received(sim, "Ping")] == ["after-1"]
        answer = ami.send_prepared(prepared)
        assert (await asyncio.wait_for(answer, 5))["Response"] == "Success"
        with pytest.raises(AmiError, match="never sent twice"):
            ami.send_prepared(prepared)
        await asyncio.wait_for(ami.send({"Action": "Ping", "ActionID": "after-2"}), 5)
    assert [ping["ActionID"] for ping in actions_received(sim, "Ping")] == ["after-1", "prepared-1", "after-2"]


async def test_a_prepared_action_written_off_the_loop_leaves_from_there_once_and_only_when_logged_in(
    sim: Simulator,
) -> None:
    """The intake's Originate leaves from the database's thread once its lead committed
    (write_off_loop): on the wire before the loop sends it, once, and answered as any other. Not
    while the session is not logged in: then nothing leaves from the thread, and the loop's send
    writes it once the session is back."""
    async with _client(sim, []) as ami:
        await asyncio.wait_for(ami.wait_connected(), 5)
        prepared = ami.prepare({"Action": "Ping", "ActionID": "off-loop"})
        await asyncio.to_thread(ami.write_off_loop, prepared)
        await wait_until(lambda: bool(actions_received(sim, "Ping")), 5, "the Ping written off the loop")
        await asyncio.to_thread(ami.write_off_loop, prepared)  # written already: nothing more
        answer = ami.send_prepared(prepared)  # the loop's send: only the answer is left
        assert (await asyncio.wait_for(answer, 5))["Response"] == "Success"
        with pytest.raises(AmiError, match="never sent twice"):
            ami.send_prepared(prepared)
        await asyncio.wait_for(ami.send({"Action": "Ping", "ActionID": "after"}), 5)

        sim.stall(True)  # a hung PBX: the next session's login is never answered
        ami.drop_connection("test")
        await wait_until(lambda: len(actions_received(sim, "Login")) == 2, 5, "the next session's login")
        late = ami.prepare({"Action": "Ping", "ActionID": "late"})
        await asyncio.to_thread(ami.write_off_loop, late)
        sim.stall(False)  # the watchdog drops the silent session, and the next one logs in
        await wait_until(lambda: len(actions_received(sim, "Login")) == 3, 10, "a session that logs in")
        await asyncio.wait_for(ami.wait_connected(), 5)
        assert _pings(sim) == ["off-loop", "after"]
        assert (await asyncio.wait_for(ami.send_prepared(late), 5))["Response"] == "Success"
    assert _pings(sim) == ["off-loop", "after", "late"]


def _pings(sim: Simulator) -> list[str]:
    """The ActionIDs of the Pings the test sent (not the watchdog's), in arrival order."""
    return [
        ping["ActionID"] for ping in actions_received(sim, "Ping") if ping["ActionID"] in {"off-loop", "after", "late"}
    ]


async def test_a_prepared_action_is_refused_at_once_while_disconnected_and_an_unsafe_one_when_built(
    sim: Simulator,
) -> None:
    async with _client(sim, []) as ami:
        with pytest.raises(AmiError, match="CR, LF or NUL"):
            ami.prepare({"Action": "Originate", "Channel": "PJSIP/1\r\nAction: Hangup"})
        await asyncio.wait_for(ami.wait_connected(), 5)
        sim.stall(True)
        ami.drop_connection("test")
        await wait_until(lambda: not ami.connected, 5, "the session down")
        with pytest.raises(AmiNotConnected):
            ami.send_prepared(ami.prepare({"Action": "Ping", "ActionID": "while-down"}))
    assert not [ping for ping in actions_received(sim, "Ping") if ping.get("ActionID") == "while-down"]
