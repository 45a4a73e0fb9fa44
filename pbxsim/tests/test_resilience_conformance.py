"""The simulator against what a real Asterisk did when a dialer resyncs, and when it restarts.

The transcripts are in tests/fixtures/ami/resilience/ (see its README): recorded with the shipped
least-privilege AMI user, whose manager.conf is there too and is the simulator's user here. Each
test runs the recorded script's calls on the simulator and compares what the dialer relies on:
the answers to DeviceStateList and ExtensionStateList, the stage each client leg shows in
CoreShowChannels, and what ``core restart now`` / ``core stop now`` look like from AMI.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable

import pytest

from ami_adapter.asterisk import SHIPPED_DIALPLAN
from pbxsim import Behaviour, ScaledClock, Simulator, World
from pbxsim.tests.amitools import RawAmi, connect_to, originate
from pbxsim.wire import AmiUser, parse_classes
from tests.transcripts import FIXTURES, load

RESYNC = "resilience/resync_listing"
RESTART = "resilience/pbx_restart_now"
STOP = "resilience/pbx_stop_now"
# sim-extensions.conf of the recording: 3XX answer after 1 s and talk 40 s.
WORLD = {"301": Behaviour(answer_after=1, talk=40)}
# Fields of a CoreShowChannel that say where a client leg stands.
SCALE = 10.0  # slow enough that the second a stopping PBX lingers is 100 ms on a busy machine
STAGE_FIELDS = ("ChannelState", "ChannelStateDesc", "Context", "Exten", "Application", "ApplicationData")


def recorded_user() -> AmiUser:
    """The [leadrouter] account of the recordings' manager.conf (the shipped least-privilege one)."""
    section, fields = "", {}
    for line in (FIXTURES / "resilience" / "manager.conf").read_text().splitlines():
        line = line.partition(";")[0].strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "leadrouter" and "=" in line:
            key, _, value = line.partition("=")
            fields[key.strip()] = value.strip()
    return AmiUser(secret=fields["secret"], read=parse_classes(fields["read"]), write=parse_classes(fields["write"]))


def received(name: str, *, after: float = 0.0, before: float = float("inf")) -> list[dict[str, str]]:
    """Messages Asterisk sent in a recording, between two of its times."""
    return [dict(b.headers()) for b in load(name).received if b.t is not None and after <= b.t < before]


def reconnected_at(name: str) -> float:
    """When the recorded session connected the second time (its ``(connected ... t=...)`` line)."""
    text = (FIXTURES / f"{name}.txt").read_text(encoding="utf-8")
    times = [float(t) for t in re.findall(r"^\(connected.* t=([\d.]+)\)$", text, flags=re.MULTILINE)]
    return times[1]


def answer(messages: list[dict[str, str]], action_id: str) -> dict[str, str]:
    return next(m for m in messages if m.get("ActionID") == action_id and "Response" in m)


def answering(action_id: str) -> Callable[[dict[str, str]], bool]:
    return lambda message: message.get("ActionID") == action_id


def without(message: dict[str, str], *keys: str) -> dict[str, str]:
    return {k: v for k, v in message.items() if k not in {"ActionID", "Timestamp", "Privilege", *keys}}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    user = recorded_user()
    async with Simulator(
        clock=ScaledClock(SCALE),
        dialplan=SHIPPED_DIALPLAN,
        world=World(managers=WORLD),
        users={"leadrouter": user},
        timestamp_events=True,
    ) as simulator:
        yield simulator


async def logged_in(sim: Simulator) -> RawAmi:
    ami = await RawAmi.connect(sim.port)
    assert (await ami.login(secret=recorded_user().secret))["Response"] == "Success"
    return ami


async def test_device_and_extension_state_lists_answer_the_least_privileged_user_as_recorded(
    sim: Simulator,
) -> None:
    recording = received(RESYNC)
    ami = await logged_in(sim)
    await ami.action("Originate", *originate("79160000010", "lr-onhold"))
    await ami.event("OriginateResponse", Uniqueid="lr-onhold")  # a Local device in use now
    mark = ami.mark()
    reply = await ami.action("DeviceStateList")
    assert without(reply) == without(answer(recording, "dsl-mixed"))
    complete = await ami.event("DeviceStateListComplete", since=mark)
    recorded_complete = next(m for m in recording if m.get("Event") == "DeviceStateListComplete")
    assert without(complete).keys() == without(recorded_complete).keys()
    # Asterisk lists only cached device states, and never those of Local devices.
    recorded_items = [m for m in recording if m.get("Event") == "DeviceStateChange" and "ActionID" in m]
    assert recorded_items and not [m for m in recorded_items if m["Device"].startswith("Local/")]
    items = [m for m in ami.messages[mark:] if m.get("Event") == "DeviceStateChange" and "ActionID" in m]
    assert complete["ListItems"] == str(len(items)) == "0"
    reply = await ami.action("ExtensionStateList")
    assert without(reply) == without(answer(recording, "esl-mixed"))
    await ami.close()


async def test_each_client_legs_stage_shows_in_core_show_channels_as_recorded(sim: Simulator) -> None:
    """The recording's four legs: ringing, on hold, at a manager whose phone rings, bridged."""
    recording = received(RESYNC)
    ami = await logged_in(sim)
    for number, channel_id in (("79160000018", "lr-ringing"), ("79160000010", "lr-onhold")):
        await ami.action("Originate", *originate(number, channel_id))
    for number, channel_id in (("79160000011", "lr-atmanager"), ("79160000012", "lr-bridged")):
        await ami.action("Originate", *originate(number, channel_id))
        await ami.event("OriginateResponse", Uniqueid=channel_id, Response="Success")
    names = {m["Uniqueid"]: m["Channel"] for m in ami.events("Newchannel")}
    await ami.action("Redirect", *connect_to(names["lr-atmanager"], "201"))
    await ami.action("Redirect", *connect_to(names["lr-bridged"], "301"))
    await ami.event("BridgeEnter", Uniqueid="lr-bridged")
    mark = ami.mark()
    await ami.action("CoreShowChannels")
    await ami.event("CoreShowChannelsComplete", since=mark)
    listed = {m["Uniqueid"]: m for m in ami.messages[mark:] if m.get("Event") == "CoreShowChannel"}
    recorded = {m["Uniqueid"]: m for m in recording if m.get("ActionID") == "csc-mixed" and "Uniqueid" in m}
    for channel_id in ("lr-ringing", "lr-onhold", "lr-atmanager", "lr-bridged"):
        want, got = recorded[channel_id], listed[channel_id]
        assert [got[k] for k in STAGE_FIELDS] == [want[k] for k in STAGE_FIELDS], channel_id
        assert bool(got["BridgeId"]) == bool(want["BridgeId"]), channel_id
    await ami.close()


async def test_a_restart_fails_ringing_calls_refuses_originates_says_shutdown_and_boots_afresh(
    sim: Simulator,
) -> None:
    recorded_first = received(RESTART, before=reconnected_at(RESTART))
    recorded_second = received(RESTART, after=reconnected_at(RESTART))
    ami = await logged_in(sim)
    await ami.action("Originate", *originate("79160000010", "lr-onhold"))
    await ami.event("OriginateResponse", Uniqueid="lr-onhold", Response="Success")
    # The burst: the first Originates ring when the restart comes (these clients never answer), the
    # rest are sent during it.
    for number in range(1, 10):
        await ami.action("Originate", *originate(f"791600200{number}8", f"lr-burst-{number}"))
    restarting = asyncio.create_task(sim.restart())
    await asyncio.sleep(0)  # the restart starts: from here on the PBX is shutting down
    assert sim.shutting_down
    # Sent back to back, as a dialer fires its queue: all within the second a stopping PBX lingers.
    sent = [ami.send("Originate", *originate("79160020100", f"lr-burst-{n}")) for n in range(10, 31)]
    refusals = [await ami.wait(answering(action_id)) for action_id in sent]
    shutdown = await ami.event("Shutdown")
    await asyncio.wait_for(ami.closed.wait(), 5)

    def outcomes(messages: list[dict[str, str]]) -> set[tuple[str, str]]:
        """How the Originates that did not succeed ended."""
        failures = {
            (m["Response"], m["Reason"])
            for m in messages
            if m.get("Event") == "OriginateResponse" and m["Response"] != "Success"
        }
        refused = {(m["Response"], m["Message"]) for m in messages if m.get("Response") == "Error"}
        return failures | refused

    assert (
        outcomes(ami.messages)
        == outcomes(recorded_first)
        == {
            ("Failure", "0"),
            ("Error", "Asterisk is shutting down"),
        }
    )
    assert {refusal["Message"] for refusal in refusals} == {"Asterisk is shutting down"}
    recorded_shutdown = next(m for m in recorded_first if m.get("Event") == "Shutdown")
    assert (
        without(shutdown)
        == without(recorded_shutdown)
        == {"Event": "Shutdown", "Shutdown": "Cleanly", "Restart": "True"}
    )

    def hold_hangup(messages: list[dict[str, str]]) -> str:
        return next(m["Cause"] for m in messages if m.get("Event") == "Hangup" and m["Uniqueid"] == "lr-onhold")

    assert hold_hangup(ami.messages) == hold_hangup(recorded_first) == "0"

    await restarting
    again = await RawAmi.connect(sim.port)
    mark = again.mark()
    await again.login(secret=recorded_user().secret)
    booted = await again.event("FullyBooted", since=mark)
    recorded_booted = next(m for m in recorded_second if m.get("Event") == "FullyBooted")
    assert without(booted, "LastReload") == without(recorded_booted, "LastReload")  # Uptime: 0
    await again.action("CoreShowChannels")
    complete = await again.event("CoreShowChannelsComplete")
    assert complete["ListItems"] == answer_list_items(recorded_second, "csc-restarted") == "0"
    await again.action("Originate", *originate("79160000019", "lr-after-restart"))
    await again.event("OriginateResponse", Uniqueid="lr-after-restart", Response="Success")
    # Nothing of the calls before the restart is ever replayed.
    for messages in (again.messages, recorded_second):
        assert not [m for m in messages if m.get("Uniqueid", "").startswith(("lr-onhold", "lr-burst"))]
    await again.close()


def answer_list_items(messages: list[dict[str, str]], action_id: str) -> str:
    return next(m["ListItems"] for m in messages if m.get("ActionID") == action_id and "ListItems" in m)


async def test_a_stop_says_shutdown_without_restart_and_the_port_stays_closed(sim: Simulator) -> None:
    recorded = received(STOP)
    ami = await logged_in(sim)
    await sim.shut_down(restart=False)
    shutdown = await ami.event("Shutdown")
    recorded_shutdown = next(m for m in recorded if m.get("Event") == "Shutdown")
    assert (
        without(shutdown)
        == without(recorded_shutdown)
        == {"Event": "Shutdown", "Shutdown": "Cleanly", "Restart": "False"}
    )
    await asyncio.wait_for(ami.closed.wait(), 5)
    with pytest.raises(ConnectionRefusedError):
        await RawAmi.connect(sim.port)


async def test_a_custom_device_state_is_announced_and_listed_as_recorded(sim: Simulator) -> None:
    """Cached devices (Custom: here, PJSIP endpoints on a real PBX) are what DeviceStateList lists:
    the daemon reads an unregistered or busy manager's phone from them at every login."""
    recording = received(RESYNC)
    ami = await logged_in(sim)
    sent = [dict(block.headers()) for block in load(RESYNC).blocks if block.sent]
    recorded_sets = [(m["Variable"], m["Value"]) for m in sent if m.get("Action") == "Setvar"]
    assert ("DEVICE_STATE(Custom:103)", "UNAVAILABLE") in recorded_sets
    for variable, value in recorded_sets:
        mark = ami.mark()
        reply = await ami.action("Setvar", ("Variable", variable), ("Value", value))
        assert without(reply) == without(answer(recording, "devstate-101"))
        device = variable.removeprefix("DEVICE_STATE(").removesuffix(")")
        change = await ami.event("DeviceStateChange", since=mark, Device=device)
        recorded = next(m for m in recording if m.get("Event") == "DeviceStateChange" and m.get("Device") == device)
        assert without(change) == without(recorded)
    mark = ami.mark()
    await ami.action("DeviceStateList")
    complete = await ami.event("DeviceStateListComplete", since=mark)
    items = {m["Device"]: m["State"] for m in ami.messages[mark:] if m.get("Event") == "DeviceStateChange"}
    recorded_items = {
        m["Device"]: m["State"]
        for m in recording
        if m.get("Event") == "DeviceStateChange"
        and m.get("ActionID") == "dsl-boot"
        and m["Device"].startswith("Custom:")
    }
    assert items == recorded_items and complete["ListItems"] == str(len(items))
    await ami.close()
