"""The call-end notes (the shipped dialplan's ``leadrouter-call-end`` hangup handler, read with
DBGet) on the simulator against ``shipped/call_end_record.txt`` from a real Asterisk.

``test_conformance`` compares the events, the replies and the handler's dialplan steps; here
the note's content, which it leaves out (the times in it differ from run to run): the same cause
and Dial status for each call, and an end time just before that client leg's ``Hangup``.
"""

from __future__ import annotations

from datetime import UTC, timedelta

from pbxsim import Behaviour, ScaledClock, Simulator, World
from pbxsim.tests.amitools import RawAmi, originate
from pbxsim.tests.test_conformance import REPLAY_START, Message, parse_transcript, pbx_for, replay

FLOW = "shipped/call_end_record"


def notes(messages: list[Message]) -> dict[str, tuple[float, str, str]]:
    """Each note read, by the key (the leg's Uniqueid): its end (epoch seconds), cause and DIALSTATUS."""
    found = {}
    for m in messages:
        if m.event == "DBGetResponse" and m.session == "":
            end, cause, status = m.fields["Val"].split(",")
            found[m.fields["Key"]] = (float(end), cause, status)
    return found


def hangups(messages: list[Message]) -> dict[str, float]:
    return {
        m.fields["Uniqueid"]: float(m.fields["Timestamp"])
        for m in messages
        if m.event == "Hangup" and m.session == "" and "Timestamp" in m.fields
    }


def replies(messages: list[Message]) -> list[tuple[str, str]]:
    return [
        (m.fields["Response"], m.fields.get("Message", ""))
        for m in messages
        if m.session == "" and "Response" in m.fields and m.fields.get("ActionID", "").startswith("action/capture")
        and m.event is None
    ]  # fmt: skip


async def test_the_notes_say_what_asterisk_noted() -> None:
    recorded = parse_transcript(FLOW)
    replayed = await replay(FLOW)
    want, got = notes(recorded), notes(replayed)
    assert want.keys() == got.keys() == {"lr-3f1e8d2c7b6a59400e11", "lr-3f1e8d2c7b6a59400e12"}
    assert {key: note[1:] for key, note in got.items()} == {key: note[1:] for key, note in want.items()}
    assert want["lr-3f1e8d2c7b6a59400e11"][1:] == ("16", "ANSWER")  # talked, then the manager hung up
    assert want["lr-3f1e8d2c7b6a59400e12"][1:] == ("16", "")  # hung up on hold
    for messages, found in ((recorded, want), (replayed, got)):
        ended = hangups(messages)
        for key, (end, _, _) in found.items():
            # The handler runs as the leg hangs up, just before its Hangup event (a few ms on Asterisk).
            assert 0 <= ended[key] - end < 0.1, (key, end, ended[key])
    assert replies(replayed) == replies(recorded)


async def test_the_notes_survive_a_pbx_restart_as_astdb_does() -> None:
    """AstDB is a file on the PBX: a note written before ``core restart now`` is read after it."""
    dialplan, conf = pbx_for(FLOW)
    assert conf is not None
    clock = ScaledClock(50, start=REPLAY_START)
    world = World(clients={"79160000009": Behaviour(answer_after=1, talk=2)})
    async with Simulator(clock=clock, dialplan=dialplan, world=world, users=conf.users) as sim:
        ami = await RawAmi.connect(sim.port)
        await ami.login()
        assert (await ami.action("Originate", *originate("79160000009", "lr-x1")))["Response"] == "Success"
        await ami.event("Hangup", Uniqueid="lr-x1")
        await ami.close()
        await sim.restart()
        ami = await RawAmi.connect(sim.port)
        await ami.login()
        family = ("Family", f"leadrouter-call-end/{clock.now():%Y%m%d}")
        reply = await ami.action("DBGet", family, ("Key", "lr-x1"))
        assert reply["Response"] == "Success"
        note = await ami.event("DBGetResponse")
        assert note["Val"].endswith(",16,")
        missing = await ami.action("DBGet", family, ("Key", "lr-x2"))
        assert (missing["Response"], missing["Message"]) == ("Error", "Database entry not found")
        await ami.close()


async def test_the_first_hangup_of_a_day_drops_every_day_before_the_two_last_not_only_the_third() -> None:
    """Days the PBX had no hangup (it was off, or the office closed) are dropped as well: a sweep
    that dropped only the day three back would leave them for good."""
    dialplan, conf = pbx_for(FLOW)
    assert conf is not None
    clock = ScaledClock(50, start=REPLAY_START)
    world = World(clients={"79160000009": Behaviour(answer_after=1, talk=2)})
    async with Simulator(clock=clock, dialplan=dialplan, world=world, users=conf.users) as sim:
        today = clock.now().astimezone(UTC)
        days = [f"{today - timedelta(days=back):%Y%m%d}" for back in (40, 9, 4, 3, 2, 1)]
        for day in days:
            sim.astdb[f"/leadrouter-call-end/{day}/lr-old"] = "1795600000.000,16,ANSWER"
        ami = await RawAmi.connect(sim.port)
        await ami.login()
        assert (await ami.action("Originate", *originate("79160000009", "lr-x1")))["Response"] == "Success"
        await ami.event("Hangup", Uniqueid="lr-x1")
        await ami.close()
        kept = sorted({key.split("/")[2] for key in sim.astdb})
        assert kept == [*days[-2:], f"{today:%Y%m%d}"]  # the two days before today, and today's
        assert f"/leadrouter-call-end/{today:%Y%m%d}/swept" in sim.astdb
