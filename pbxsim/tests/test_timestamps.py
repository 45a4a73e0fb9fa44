"""manager.conf ``timestampevents = yes``: every event carries the PBX's time, as recorded on Asterisk."""

from __future__ import annotations

from ami_adapter.asterisk import SHIPPED_DIALPLAN
from pbxsim import ScaledClock, Simulator, read_manager_conf
from pbxsim.tests.amitools import SCALE, RawAmi, connect_to, originate, wait_until
from tests.transcripts import FIXTURES, load


def test_the_recording_stamps_every_event_right_after_its_privilege() -> None:
    events = [block.headers() for block in load("timestamps").received if block.get("Event")]
    assert events
    assert all([name for name, _ in headers[:3]] == ["Event", "Privilege", "Timestamp"] for headers in events)
    # Replies and the list items of actions are not events: they carry no stamp.
    replies = [
        block.headers() for block in load("timestamps").received if block.get("Response") and not block.get("Event")
    ]
    assert replies and not any(name == "Timestamp" for headers in replies for name, _ in headers)


async def test_the_simulator_stamps_events_when_its_manager_conf_says_so() -> None:
    conf = read_manager_conf((FIXTURES / "manager_timestamps.conf").read_text(encoding="utf-8"))
    assert conf.timestamp_events
    clock = ScaledClock(SCALE)
    async with Simulator(
        clock=clock, dialplan=SHIPPED_DIALPLAN, users=conf.users, timestamp_events=conf.timestamp_events
    ) as sim:
        ami = await RawAmi.connect(sim.port)
        assert (await ami.login())["Response"] == "Success"
        started = clock.now().timestamp()
        ami.send("Originate", *originate("79160000001", "lr-ts1"))
        await wait_until(lambda: bool(ami.events("OriginateResponse")))
        channel = ami.events("OriginateResponse")[0]["Channel"]
        ami.send("Redirect", *connect_to(channel, "101"))
        await wait_until(lambda: bool(ami.events("Hangup", Uniqueid="lr-ts1")))
        ended = clock.now().timestamp()
        await ami.close()
    events = [message for message in ami.messages if "Event" in message and "ActionID" not in message]
    assert all(list(message)[:3] == ["Event", "Privilege", "Timestamp"] for message in events)
    stamps = [float(message["Timestamp"]) for message in events]
    assert stamps == sorted(stamps) and started <= stamps[0] and stamps[-1] <= ended
    # The answer is reported as it happens: Asterisk sends the OriginateResponse 0.5 ms after the
    # client leg's Newstate Up (timestamps.txt), and here nothing comes between them but the DialEnd.
    up = ami.messages.index(ami.events("Newstate", Uniqueid="lr-ts1", ChannelStateDesc="Up")[0])
    assert [m.get("Event") for m in ami.messages[up : up + 3]] == ["Newstate", "DialEnd", "OriginateResponse"]
    # Answer to the client leg's hangup: the recorded manager answers after 1 s and talks 3 s.
    answered = float(ami.events("OriginateResponse")[0]["Timestamp"])
    hung_up = float(ami.events("Hangup", Uniqueid="lr-ts1")[0]["Timestamp"])
    assert hung_up - answered >= 4


def test_without_the_setting_events_are_not_stamped() -> None:
    conf = read_manager_conf((FIXTURES / "manager.conf").read_text(encoding="utf-8"))  # the first captures'
    assert not conf.timestamp_events and "leadrouter" in conf.users
    shipped = read_manager_conf((FIXTURES / "shipped" / "manager.conf").read_text(encoding="utf-8"))
    assert shipped.timestamp_events  # what deploy/asterisk/manager_leadrouter.conf sets
