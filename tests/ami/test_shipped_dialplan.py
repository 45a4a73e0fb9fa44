"""What the daemon's AMI user reads from a real Asterisk running the shipped dialplan.

tests/fixtures/ami/shipped/ was recorded with deploy/asterisk/manager_leadrouter.conf's user
(its read/write classes and eventfilter) sending the actions the daemon sends, beside an
observer that saw everything. These tests read the unmarked (daemon) sessions through our own
framing and translator.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from ami_adapter.translate import WANTED_EVENTS
from router.pbx_events import (
    Billed,
    Bridged,
    CallProgress,
    DialEnded,
    DialOutcome,
    HungUp,
    OriginateOutcome,
    OriginateResult,
    PbxEvent,
    RecordingStarted,
)
from tests.ami.test_translate import _translate
from tests.transcripts import FIXTURES, load

SHIPPED = sorted(f"shipped/{p.stem}" for p in (FIXTURES / "shipped").glob("*.txt"))
ANSWERED = OriginateOutcome.ANSWERED


def test_there_are_shipped_transcripts() -> None:
    assert len(SHIPPED) >= 4


@pytest.mark.parametrize("name", SHIPPED)
def test_the_least_privilege_user_may_run_every_action_the_daemon_sends(name: str) -> None:
    transcript = load(name)
    # DBDel is recorded only to show that this user may not run it (see the next test).
    sent = {b.get("ActionID"): b.get("Action") for b in transcript.session("") if b.sent and b.get("Action") != "DBDel"}
    # An OriginateResponse event carries the action's ActionID and its own Response (Failure when
    # the phone was not answered): the action's reply is the block that is no event.
    replies = {
        b.get("ActionID"): (b.get("Response"), b.get("Message"))
        for b in transcript.received
        if b.get("Response") and not b.get("Event")
    }
    assert set(sent.values()) >= {"Login", "Originate"}
    for action_id, action in sent.items():
        response, message = replies.get(action_id, (None, None))
        # A DBGet for a key the PBX does not have is answered, not refused.
        allowed = response == "Success" or (action == "DBGet" and message == "Database entry not found")
        assert allowed, (action_id, action, response, message)


def test_the_least_privilege_user_may_read_but_not_delete_the_call_end_notes() -> None:
    """DBDel needs write=system, which the daemon's user must not have: the dialplan expires the
    notes itself (``leadrouter-call-end``), the daemon only reads them with DBGet (reporting)."""
    transcript = load("shipped/call_end_record")
    sent = {b.get("ActionID"): b.get("Action") for b in transcript.session("") if b.sent}
    replies = {
        b.get("ActionID"): (b.get("Response"), b.get("Message")) for b in transcript.received if not b.get("Event")
    }
    dbget = [replies[action_id] for action_id, action in sent.items() if action == "DBGet"]
    assert dbget == [("Success", "Result will follow")] * 2 + [("Error", "Database entry not found")]
    (dbdel,) = [replies[action_id] for action_id, action in sent.items() if action == "DBDel"]
    assert dbdel == ("Error", "Permission denied")


@pytest.mark.parametrize("name", SHIPPED)
def test_the_eventfilter_lets_through_every_event_the_daemon_reads(name: str) -> None:
    """Each event the translator wants reached the daemon's user as often as the observer saw it."""
    transcript = load(name)

    def wanted(session: str) -> Counter[str]:
        events = (b.get("Event") for b in transcript.session(session) if not b.sent)
        return Counter(e for e in events if e in WANTED_EVENTS)

    assert wanted("observer")["Hangup"] >= 2  # the observer did see the call
    assert wanted("") == wanted("observer")
    # ...and the dialplan chatter stayed off the daemon's wire.
    assert not [b for b in transcript.received if b.get("Event") in ("VarSet", "Newexten", "MusicOnHoldStart")]


# The client leg of each recording (the ChannelId its flow_*.json originated with).
CONNECTED = "lr-5d0c6a1e9b2f43a8c701"
APOLOGISED = "lr-8e41b7c09d2a5f3e6b18"
FIRST_MANAGER_NO_ANSWER = "lr-2a9f0c5e7b3d41e8a6c2"
HUNG_UP_ON_HOLD = "lr-c47e2b9a0f5d3816e2a4"
HUNG_UP_WHILE_MANAGER_RINGS = "lr-0f6d3a8c2e9b7415d3b6"
MANAGER_BUSY = "lr-7b2e9d4f1a6c0835e9f8"
HOLD_MAX_REACHED = "lr-e3a1c8f5b0d27946a1c0"
HUNG_UP_BY_ACTION = "lr-91d4f0b6e3a8c2751f4e"


@pytest.mark.parametrize(
    ("name", "channel", "expected"),
    [
        (
            "connect",
            CONNECTED,
            [
                OriginateResult(CONNECTED, ANSWERED),
                RecordingStarted(CONNECTED),
                DialEnded(CONNECTED, DialOutcome.ANSWER),
                Bridged(CONNECTED),
                # Asterisk writes the client leg's CDR before its Hangup event; billing counts
                # from the client's answer: 2 s on hold + 4.5 s with manager 101.
                Billed(CONNECTED, 6),
                HungUp(CONNECTED, 16),
            ],
        ),
        ("apology", APOLOGISED, [OriginateResult(APOLOGISED, ANSWERED), Billed(APOLOGISED, 3), HungUp(APOLOGISED, 16)]),
        (
            "manager_noanswer",
            FIRST_MANAGER_NO_ANSWER,
            [
                OriginateResult(FIRST_MANAGER_NO_ANSWER, ANSWERED),
                RecordingStarted(FIRST_MANAGER_NO_ANSWER),
                DialEnded(FIRST_MANAGER_NO_ANSWER, DialOutcome.NO_ANSWER),
                # Back on hold, then sent to 101: recording starts again, into the same file.
                RecordingStarted(FIRST_MANAGER_NO_ANSWER),
                DialEnded(FIRST_MANAGER_NO_ANSWER, DialOutcome.ANSWER),
                Bridged(FIRST_MANAGER_NO_ANSWER),
                # One CDR per Dial: the unanswered one, then the one that ended the call.
                Billed(FIRST_MANAGER_NO_ANSWER, 5),
                HungUp(FIRST_MANAGER_NO_ANSWER, 16),
                Billed(FIRST_MANAGER_NO_ANSWER, 6),
            ],
        ),
        (
            "hangup_on_hold",
            HUNG_UP_ON_HOLD,
            [OriginateResult(HUNG_UP_ON_HOLD, ANSWERED), HungUp(HUNG_UP_ON_HOLD, 16), Billed(HUNG_UP_ON_HOLD, 2)],
        ),
        (
            "hangup_while_manager_rings",
            HUNG_UP_WHILE_MANAGER_RINGS,
            [
                OriginateResult(HUNG_UP_WHILE_MANAGER_RINGS, ANSWERED),
                RecordingStarted(HUNG_UP_WHILE_MANAGER_RINGS),
                DialEnded(HUNG_UP_WHILE_MANAGER_RINGS, DialOutcome.CANCEL),
                HungUp(HUNG_UP_WHILE_MANAGER_RINGS, 16),
                Billed(HUNG_UP_WHILE_MANAGER_RINGS, 2),
            ],
        ),
        (
            "manager_busy",
            MANAGER_BUSY,
            [
                OriginateResult(MANAGER_BUSY, ANSWERED),
                RecordingStarted(MANAGER_BUSY),
                DialEnded(MANAGER_BUSY, DialOutcome.BUSY),
                HungUp(MANAGER_BUSY, 16),
                Billed(MANAGER_BUSY, 2),
                Billed(MANAGER_BUSY, 3),
            ],
        ),
        (
            "hold_max",
            HOLD_MAX_REACHED,
            [OriginateResult(HOLD_MAX_REACHED, ANSWERED), HungUp(HOLD_MAX_REACHED, 16), Billed(HOLD_MAX_REACHED, 2)],
        ),
        # The Hangup action without a Cause: the leg ends with cause 0.
        (
            "hangup_action",
            HUNG_UP_BY_ACTION,
            [OriginateResult(HUNG_UP_BY_ACTION, ANSWERED), Billed(HUNG_UP_BY_ACTION, 2), HungUp(HUNG_UP_BY_ACTION, 0)],
        ),
    ],
)
def test_a_client_legs_story_on_the_shipped_dialplan(name: str, channel: str, expected: list[PbxEvent]) -> None:
    _, events = _translate(f"shipped/{name}", "lr")
    story = [e for e in events if getattr(e, "channel_id", None) == channel]
    # Recorded with the shipped manager.conf (timestampevents = yes): each step has the PBX's time.
    progress = [e for e in story if isinstance(e, CallProgress)]
    assert progress and all(e.at is not None for e in progress)
    # Asterisk's CDR engine and its channel events race: a leg's Cdr may come before or after
    # its Hangup (seen both ways in recordings), so billing is compared apart from the steps.
    steps = [replace(e, at=None) for e in progress]
    assert steps == [e for e in expected if isinstance(e, CallProgress)]
    billed = [e for e in story if isinstance(e, Billed)]
    assert billed == [e for e in expected if isinstance(e, Billed)]
    assert not [e for e in events if ";" in getattr(e, "channel_id", "")]
