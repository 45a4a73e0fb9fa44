"""AMI protocol edges: login, permissions, event masks and filters, a hung or vanished Asterisk, framing."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from ami_adapter.asterisk import SHIPPED_DIALPLAN
from pbxsim import AmiUser, ScaledClock, Simulator
from pbxsim.tests.amitools import RawAmi, originate, wait_until

EVERYTHING = frozenset(
    "system,call,log,verbose,command,agent,user,config,dtmf,reporting,cdr,dialplan,originate".split(",")
)


async def test_login_ping_and_unknown_action(sim: Simulator) -> None:
    ami = await RawAmi.connect(sim.port)
    denied = await ami.action("Ping")
    assert (denied["Response"], denied["Message"]) == ("Error", "Permission denied")
    accepted = await ami.login()
    assert accepted["Message"] == "Authentication accepted"
    booted = await ami.event("FullyBooted")
    assert (booted["Privilege"], booted["Status"]) == ("system,all", "Fully Booted")
    pong = await ami.action("Ping")
    assert pong["Ping"] == "Pong" and float(pong["Timestamp"]) > 1.7e9
    unknown = await ami.action("NoSuchAction")
    assert unknown["Message"] == (
        "Invalid/unknown command: NoSuchAction. Use Action: ListCommands to show available commands."
    )
    missing = await ami.action("Hangup", ("Channel", "Local/000@nowhere-00000099;1"))
    assert missing["Message"] == "No such channel"
    missing = await ami.action("Redirect", ("Channel", "nope"), ("Context", "leadrouter-hold"), ("Exten", "s"))
    assert missing["Message"] == "Channel does not exist: nope"
    goodbye = await ami.action("Logoff")
    assert (goodbye["Response"], goodbye["Message"]) == ("Goodbye", "Thanks for all the fish.")
    await asyncio.wait_for(ami.closed.wait(), 5)


async def test_wrong_secret_is_refused_and_disconnected(sim: Simulator) -> None:
    ami = await RawAmi.connect(sim.port)
    refused = await ami.login(secret="wrong")
    assert (refused["Response"], refused["Message"]) == ("Error", "Authentication failed")
    await asyncio.wait_for(ami.closed.wait(), 5)


async def test_md5_challenge_login(sim: Simulator) -> None:
    ami = await RawAmi.connect(sim.port)
    challenge = (await ami.action("Challenge", ("AuthType", "MD5")))["Challenge"]
    key = hashlib.md5((challenge + "s3cret").encode()).hexdigest()
    reply = await ami.action("Login", ("AuthType", "MD5"), ("Username", "leadrouter"), ("Key", key))
    assert reply["Message"] == "Authentication accepted"
    await ami.close()


async def test_write_classes_decide_which_actions_run() -> None:
    users = {"viewer": AmiUser("pw", read=EVERYTHING, write=frozenset({"call"}))}
    async with Simulator(clock=ScaledClock(50), dialplan=SHIPPED_DIALPLAN, users=users) as sim:
        ami = await RawAmi.connect(sim.port)
        await ami.login("viewer", "pw")
        for action in ("Originate", "CoreShowChannels", "Filter", "Command"):
            reply = await ami.action(action, ("Channel", "Local/79160000001@sim-clients"))
            assert reply["Message"] == "Permission denied", action
        # "call" is one of Hangup's classes (system,call) and Redirect's, so they are let through.
        assert (await ami.action("Hangup", ("Channel", "x")))["Message"] == "No such channel"
        assert (await ami.action("Status"))["EventList"] == "start"
        assert not sim.live_channels()
        await ami.close()


async def test_read_classes_and_event_masks_decide_which_events_arrive(sim: Simulator, ami: RawAmi) -> None:
    quiet = await RawAmi.connect(sim.port)
    await quiet.login(events="off")
    calls_only = await RawAmi.connect(sim.port)
    await calls_only.login()
    assert (await calls_only.action("Events", ("EventMask", "call,cdr")))["Events"] == "On"

    await ami.action("Originate", *originate("79160000009", "mask-1"))
    await ami.event("Hangup", Uniqueid="mask-1")
    await ami.event("Cdr", UniqueID="mask-1")
    await calls_only.event("Cdr", UniqueID="mask-1")

    assert ami.events("Newexten") and ami.events("VarSet")
    assert not calls_only.events("Newexten") and not calls_only.events("VarSet")
    assert calls_only.events("Newstate") and calls_only.events("OriginateResponse")
    assert quiet.events("FullyBooted") == []
    assert all("Response" in m for m in quiet.messages)
    assert (await quiet.action("Ping"))["Ping"] == "Pong"
    await quiet.close()
    await calls_only.close()


async def test_filter_keeps_only_matching_events(sim: Simulator, ami: RawAmi) -> None:
    filtered = await RawAmi.connect(sim.port)
    await filtered.login()
    # Filters are regular expressions over the whole event text: this one also matches HangupRequest...
    reply = await filtered.action("Filter", ("Operation", "Add"), ("Filter", "Event: Hangup"))
    assert reply["Response"] == "Success"
    # ...which a "!" filter then drops.
    reply = await filtered.action("Filter", ("Operation", "Add"), ("Filter", "!Event: HangupRequest"))
    assert reply["Response"] == "Success"
    await ami.action("Originate", *originate("79160000007", "filter-1"))
    await filtered.event("Hangup", Uniqueid="filter-1;2")
    await ami.event("Hangup", Uniqueid="filter-1;2")
    assert {m["Event"] for m in filtered.messages if "Event" in m} == {"FullyBooted", "Hangup"}
    await filtered.close()


async def test_actions_are_recorded_only_when_asked() -> None:
    # leadrouter simulator and the demo run for hours: they must not keep every byte they read.
    async with Simulator(clock=ScaledClock(50), dialplan=SHIPPED_DIALPLAN) as quiet:
        client = await RawAmi.connect(quiet.port)
        await client.login()
        assert (await client.action("Ping"))["Ping"] == "Pong"
        await client.close()
    assert quiet.received == [] and quiet.raw_received == b""


async def test_a_recording_simulator_keeps_each_action_and_its_bytes(sim: Simulator, ami: RawAmi) -> None:
    await ami.action("Ping")
    assert [dict(action)["Action"] for action in sim.received] == ["Login", "Ping"]
    assert sim.raw_received.startswith(b"Action: Login\r\n")


async def test_stalled_asterisk_records_actions_but_answers_nothing(sim: Simulator, ami: RawAmi) -> None:
    sim.stall(True)
    since = ami.mark()
    ami.send("Originate", *originate("79160000001", "stalled-1"))
    ami.send("Ping")
    await wait_until(lambda: any(("ChannelId", "stalled-1") in a for a in sim.received))
    assert not ami.closed.is_set()

    sim.stall(False)
    # Actions are answered in the order they arrive: once this Ping is answered, whatever the
    # stalled Originate and Ping were going to bring would have come before its Pong.
    pong = await ami.action("Ping")
    assert pong["Ping"] == "Pong"
    assert ami.messages[since:] == [pong]
    assert not sim.live_channels()
    originates = [a for a in sim.received if ("Action", "Originate") in a]
    assert len(originates) == 1


async def test_dropped_sessions_leave_calls_running(sim: Simulator, ami: RawAmi) -> None:
    await ami.action("Originate", *originate("79160000001", "drop-1"))
    await ami.event("OriginateResponse", Uniqueid="drop-1")
    assert sim.logged_in() == 1
    await sim.drop_connections()
    await asyncio.wait_for(ami.closed.wait(), 5)
    assert sim.logged_in() == 0
    assert {c.uniqueid for c in sim.live_channels()} == {"drop-1", "drop-1;2"}

    again = await RawAmi.connect(sim.port)
    assert sim.logged_in() == 0  # connected, not yet logged in
    await again.login()
    assert sim.logged_in() == 1
    listed = await again.action("CoreShowChannels")
    assert (listed["EventList"], listed["Message"]) == ("start", "Channels will follow")
    complete = await again.event("CoreShowChannelsComplete")
    assert complete["ListItems"] == "2"
    shown = {m["Uniqueid"]: m for m in again.events("CoreShowChannel")}
    assert shown["drop-1"]["Application"] == "MusicOnHold"
    assert shown["drop-1"]["ActionID"] == listed["ActionID"]
    await again.close()


@pytest.mark.parametrize("name", ["Иван Петров", "Ольга"])
async def test_utf8_survives_one_byte_writes(sim: Simulator, ami: RawAmi, name: str) -> None:
    sim.write_chunk_size = 1
    await ami.action("Originate", *originate("79160000011", "utf-1", callerid=f"{name} <79160000011>"))
    assert (await ami.event("NewCallerid", Uniqueid="utf-1"))["CallerIDName"] == name
    response = await ami.event("OriginateResponse", Uniqueid="utf-1")
    assert (response["CallerIDName"], response["CallerIDNum"]) == (name, "79160000011")
    assert f"CallerID: {name} <79160000011>".encode() in sim.raw_received


async def test_variables_and_status(sim: Simulator, ami: RawAmi) -> None:
    await ami.action("Originate", *originate("79160000001", "vars-1"))
    await ami.event("OriginateResponse", Uniqueid="vars-1")
    got = await ami.action("Getvar", ("Channel", "vars-1"), ("Variable", "LEADROUTER_RING_TIMEOUT"))
    assert (got["Variable"], got["Value"]) == ("LEADROUTER_RING_TIMEOUT", "20")
    assert (await ami.action("Setvar", ("Channel", "vars-1"), ("Variable", "X"), ("Value", "1")))[
        "Response"
    ] == "Success"
    assert (await ami.action("Getvar", ("Channel", "vars-1"), ("Variable", "X")))["Value"] == "1"
    status = await ami.action("Status", ("Channel", "vars-1"))
    assert status["EventList"] == "start"
    item = await ami.event("Status", Uniqueid="vars-1")
    assert (item["Application"], item["ActionID"]) == ("MusicOnHold", status["ActionID"])
    await ami.event("StatusComplete", ActionID=status["ActionID"], Items="1")
