"""Calls in the default world with the shipped dialplan, driven the way the daemon drives Asterisk."""

from __future__ import annotations

from pbxsim import Behaviour, ScaledClock, Simulator, World
from pbxsim.tests.amitools import RawAmi, connect_to, originate, wait_until


async def _answered(ami: RawAmi, number: str, channel_id: str, callerid: str | None = None) -> str:
    reply = await ami.action("Originate", *originate(number, channel_id, callerid=callerid))
    assert reply["Message"] == "Originate successfully queued"
    response = await ami.event("OriginateResponse", Uniqueid=channel_id)
    assert (response["Response"], response["Reason"]) == ("Success", "4")
    await ami.event("Newexten", Uniqueid=channel_id, Context="leadrouter-hold", Application="MusicOnHold")
    return response["Channel"]


async def test_answered_client_redirected_to_a_manager_is_bridged(sim: Simulator, ami: RawAmi) -> None:
    channel = await _answered(ami, "79160000001", "lead1-c1", callerid="Lead 1 <79160000001>")
    assert channel == "Local/79160000001@sim-clients-00000000;1"
    hold = next(c for c in sim.live_channels() if c.uniqueid == "lead1-c1")
    assert (hold.context, hold.application, hold.state) == ("leadrouter-hold", "MusicOnHold", "Up")

    assert (await ami.action("Redirect", *connect_to(channel, "101")))["Message"] == "Redirect successful"
    recording = await ami.event("VarSet", Uniqueid="lead1-c1", Variable="MIXMONITOR_FILENAME")
    assert recording["Value"] == "/var/spool/asterisk/monitor/leadrouter/lead1-c1.wav"
    dial = await ami.event("Newexten", Uniqueid="lead1-c1", Application="Dial")
    assert dial["AppData"] == "Local/101@sim-managers,20"
    answered = await ami.event("DialEnd", Uniqueid="lead1-c1", DialStatus="ANSWER")
    manager = answered["DestChannel"]
    assert manager.startswith("Local/101@sim-managers-") and manager.endswith(";1")
    assert answered["DestLinkedid"] == "lead1-c1"
    entered = await ami.event("BridgeEnter", Uniqueid="lead1-c1")
    assert entered["BridgeNumChannels"] == "2"
    bridged = {c.name: c.bridge_id for c in sim.live_channels()}
    assert bridged[channel] == bridged[manager] == entered["BridgeUniqueid"]

    # The manager talks 3 s, hangs up, and without Dial's g option that ends the client leg too.
    hangup = await ami.event("Hangup", Uniqueid="lead1-c1")
    assert (hangup["Cause"], hangup["Context"], hangup["Exten"]) == ("16", "leadrouter-connect", "101")
    cdr = await ami.event("Cdr", UniqueID="lead1-c1")
    assert (cdr["Disposition"], cdr["DestinationChannel"], cdr["LastApplication"]) == ("ANSWERED", manager, "Dial")
    assert cdr["CallerID"] == '"Lead 1" <79160000001>'
    await wait_until(lambda: not sim.live_channels())
    await ami.event("BridgeDestroy", BridgeUniqueid=entered["BridgeUniqueid"])


async def test_unanswered_manager_sends_client_back_to_hold_for_the_next_one(sim: Simulator, ami: RawAmi) -> None:
    channel = await _answered(ami, "79160000002", "lead2-c1")
    since = ami.mark()
    await ami.action("Redirect", *connect_to(channel, "201"))
    ringing = await ami.event("DialState", Uniqueid="lead2-c1", DialStatus="RINGING")
    no_answer = await ami.event("DialEnd", Uniqueid="lead2-c1", DialStatus="NOANSWER")
    assert no_answer["DestChannel"] == ringing["DestChannel"]
    await ami.event("MixMonitorStop", Uniqueid="lead2-c1")
    back = await ami.event("Newexten", since=since, Uniqueid="lead2-c1", Application="MusicOnHold")
    assert back["Context"] == "leadrouter-hold"
    await ami.event("Hangup", Channel=ringing["DestChannel"])
    assert {c.uniqueid for c in sim.live_channels()} == {"lead2-c1", "lead2-c1;2"}

    # The client leg can be addressed by its Uniqueid as well as by its name.
    since = ami.mark()
    assert (await ami.action("Redirect", *connect_to("lead2-c1", "102")))["Response"] == "Success"
    await ami.event("DialEnd", since=since, Uniqueid="lead2-c1", DialStatus="ANSWER")
    await ami.event("BridgeEnter", since=since, Uniqueid="lead2-c1")
    await ami.event("Hangup", Uniqueid="lead2-c1")
    await wait_until(lambda: len(ami.events("Cdr", UniqueID="lead2-c1")) == 2)
    cdrs = ami.events("Cdr", UniqueID="lead2-c1")
    assert [c["Disposition"] for c in cdrs] == ["NO ANSWER", "ANSWERED"]
    assert cdrs[0]["DestinationChannel"] == ringing["DestChannel"]


async def test_busy_manager_also_sends_client_back_to_hold(world: World, sim: Simulator, ami: RawAmi) -> None:
    world.managers["105"] = Behaviour(busy=True)
    channel = await _answered(ami, "79160000003", "lead3-c1")
    since = ami.mark()
    await ami.action("Redirect", *connect_to(channel, "105"))
    await ami.event("DialEnd", since=since, Uniqueid="lead3-c1", DialStatus="BUSY")
    await ami.event("Newexten", since=since, Uniqueid="lead3-c1", Context="leadrouter-hold", Application="MusicOnHold")
    assert (await ami.action("Hangup", ("Channel", channel)))["Message"] == "Channel Hungup"
    await wait_until(lambda: not sim.live_channels())


async def test_client_hanging_up_on_hold(sim: Simulator, ami: RawAmi) -> None:
    channel = await _answered(ami, "79160000009", "lead4-c1")  # ...9 hangs up 2 s after answering
    await ami.event("HangupRequest", Uniqueid="lead4-c1", Cause="16")
    await ami.event("MusicOnHoldStop", Uniqueid="lead4-c1")
    hangup = await ami.event("Hangup", Channel=channel)
    assert (hangup["Cause"], hangup["Context"]) == ("16", "leadrouter-hold")
    await wait_until(lambda: not sim.live_channels())


async def test_client_hanging_up_while_the_manager_rings_cancels_the_manager(
    world: World, sim: Simulator, ami: RawAmi
) -> None:
    world.clients["79160000004"] = Behaviour(answer_after=1.0, talk=3.0)
    channel = await _answered(ami, "79160000004", "lead5-c1")
    await ami.action("Redirect", *connect_to(channel, "202"))
    cancelled = await ami.event("DialEnd", Uniqueid="lead5-c1", DialStatus="CANCEL")
    await ami.event("Hangup", Channel=cancelled["DestChannel"])
    await ami.event("Hangup", Uniqueid="lead5-c1")
    await wait_until(lambda: not sim.live_channels())


async def test_busy_client(sim: Simulator, ami: RawAmi) -> None:
    await ami.action("Originate", *originate("79160000007", "lead6-c1"))
    response = await ami.event("OriginateResponse", Uniqueid="lead6-c1")
    assert (response["Response"], response["Reason"]) == ("Failure", "5")
    assert response["Channel"] == "Local/79160000007@sim-clients"  # the requested string, not a channel
    assert (await ami.event("Hangup", Uniqueid="lead6-c1;2"))["Cause"] == "17"
    assert ami.events("DialEnd", DestUniqueid="lead6-c1")[0]["DialStatus"] == "BUSY"
    await wait_until(lambda: not sim.live_channels())
    assert not ami.events("Cdr")


async def test_unavailable_client(world: World, sim: Simulator, ami: RawAmi) -> None:
    world.clients["79160000005"] = Behaviour(unavailable=True)
    await ami.action("Originate", *originate("79160000005", "lead7-c1"))
    response = await ami.event("OriginateResponse", Uniqueid="lead7-c1")
    assert (response["Response"], response["Reason"]) == ("Failure", "8")
    assert (await ami.event("Hangup", Uniqueid="lead7-c1;2"))["Cause"] == "34"
    await wait_until(lambda: not sim.live_channels())


async def test_client_never_answering_times_out(sim: Simulator, ami: RawAmi) -> None:
    await ami.action("Originate", *originate("79160000008", "lead8-c1", timeout_ms=5000))
    await ami.event("DialState", DestUniqueid="lead8-c1", DialStatus="RINGING")
    response = await ami.event("OriginateResponse", Uniqueid="lead8-c1")
    assert (response["Response"], response["Reason"]) == ("Failure", "3")
    assert (await ami.event("Hangup", Uniqueid="lead8-c1"))["Cause"] == "19"
    assert not ami.events("DialEnd", DestUniqueid="lead8-c1")
    await wait_until(lambda: not sim.live_channels())


async def test_hangup_action_with_cause(sim: Simulator, ami: RawAmi) -> None:
    channel = await _answered(ami, "79160000006", "lead9-c1")
    reply = await ami.action("Hangup", ("Channel", channel), ("Cause", "21"))
    assert reply["Message"] == "Channel Hungup"
    assert (await ami.event("SoftHangupRequest", Uniqueid="lead9-c1"))["Cause"] == "16"
    assert (await ami.event("Hangup", Uniqueid="lead9-c1"))["Cause-txt"] == "Call Rejected"
    assert (await ami.event("HangupRequest", Uniqueid="lead9-c1;2"))["Cause"] == "21"
    await wait_until(lambda: not sim.live_channels())


async def test_hangup_of_a_ringing_client_fails_the_originate(sim: Simulator, ami: RawAmi) -> None:
    await ami.action("Originate", *originate("79160000008", "lead10-c1"))
    await ami.event("DialState", DestUniqueid="lead10-c1", DialStatus="RINGING")
    assert (await ami.action("Hangup", ("Channel", "lead10-c1")))["Response"] == "Success"
    response = await ami.event("OriginateResponse", Uniqueid="lead10-c1")
    assert (response["Response"], response["Reason"]) == ("Failure", "1")
    await wait_until(lambda: not sim.live_channels())


async def test_manager_first_originate_with_a_dialplan_of_the_callers_own() -> None:
    dialplan = """
[sim-clients]
exten => _X.,1,SimClient()
[sim-managers]
exten => _X.,1,SimManager()
[dial-client]
exten => _X.,1,Set(CDR(userfield)=lead)
 same => n,Dial(Local/${EXTEN}@sim-clients,30)
 same => n,Hangup()
"""
    async with Simulator(clock=ScaledClock(50), dialplan=dialplan) as sim:
        ami = await RawAmi.connect(sim.port)
        await ami.login()
        await ami.action(
            "Originate",
            ("Channel", "Local/101@sim-managers"),
            ("Context", "dial-client"),
            ("Exten", "79160000002"),
            ("Priority", "1"),
            ("Async", "yes"),
            ("CallerID", "Lead 43 <79160000002>"),
            ("ChannelId", "m1"),
        )
        await ami.event("OriginateResponse", Uniqueid="m1", Response="Success")
        answered = await ami.event("DialEnd", Uniqueid="m1", DialStatus="ANSWER")
        assert answered["DestCallerIDNum"] == "79160000002" and answered["DestLinkedid"] == "m1"
        await ami.event("BridgeEnter", Uniqueid="m1")
        cdr = await ami.event("Cdr", UniqueID="m1")
        assert (cdr["UserField"], cdr["Disposition"]) == ("lead", "ANSWERED")
        await wait_until(lambda: not sim.live_channels())
        await ami.close()


async def test_channel_history_keeps_every_leg_and_the_ones_a_shutdown_cut_off(sim: Simulator, ami: RawAmi) -> None:
    busy = await ami.action("Originate", *originate("79160000007", "hist-busy"), ("Variable", "LEADROUTER_LEAD=7"))
    assert busy["Response"] == "Success"
    await ami.event("Hangup", Uniqueid="hist-busy")
    await _answered(ami, "79160000001", "hist-held")

    records = {record.uniqueid: record for record in sim.channel_history()}
    gone = records["hist-busy"]
    assert gone.variables["LEADROUTER_LEAD"] == "7"
    assert (gone.answered, gone.shut_down) == (None, False)
    assert gone.ended is not None and gone.ended >= gone.created
    assert records["hist-busy;2"].cause == 17  # the client's half says why
    held = records["hist-held"]
    assert held.answered is not None and held.ended is None

    await sim.close()
    assert held.ended is not None and held.shut_down
    assert [r.name for r in sim.channel_history()][:2] == [gone.name, gone.name.replace(";1", ";2")]
