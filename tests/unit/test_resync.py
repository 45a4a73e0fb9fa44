"""The resync decision after a (re)login: no event loop, only the listing and our calls."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from dialer.resync import LISTING_GRACE, CatchUp, Missed, ResyncDecision, decide_resync, missed
from router.model import Call, CallState
from router.pbx_events import LegStage, LiveLeg

ASKED_AT = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
MANAGERS = {"101": "m1", "102": "m2"}
ANSWER, NO_ANSWER, SENT, BRIDGE, APOLOGY = (
    Missed.ANSWER,
    Missed.MANAGER_NO_ANSWER,
    Missed.SENT_TO_MANAGER,
    Missed.BRIDGE,
    Missed.APOLOGY,
)


def call(channel_id: str = "lr-1", state: CallState = CallState.DIALING, started: float = -60) -> Call:
    """A call in ``state`` (with manager m1 from CONNECTING on), dialled ``started`` s from the listing."""
    subject = Call(lead_id=1, attempt=1, scenario="default", channel_id=channel_id, phone="+79161234567",
                   started_at=ASKED_AT + timedelta(seconds=started), id=1)  # fmt: skip
    if state is not CallState.DIALING:
        subject.client_answered(subject.started_at)
    if state in (CallState.CONNECTING, CallState.BRIDGED):
        subject.connect_to("m1", subject.started_at)
    if state is CallState.BRIDGED:
        subject.bridged(subject.started_at)
    return subject


def leg(channel_id: str, stage: LegStage, extension: str | None = None) -> dict[str, LiveLeg]:
    return {channel_id: LiveLeg(channel_id, stage, extension)}


def decide(legs: dict[str, LiveLeg], *, adopted: Sequence[Call] = (), live: Sequence[Call] = ()) -> ResyncDecision:
    return decide_resync(legs=legs, asked_at=ASKED_AT, adopted=adopted, live=live, managers=MANAGERS)


DIALING, HOLDING, CONNECTING, BRIDGED = CallState.DIALING, CallState.HOLDING, CallState.CONNECTING, CallState.BRIDGED
RINGING, SCREENING, ON_HOLD, AT_MANAGER, IN_BRIDGE, SORRY = LegStage


@pytest.mark.parametrize(
    ("state", "stage", "manager", "steps"),
    [
        # What we know agrees with the PBX: nothing was missed.
        (DIALING, RINGING, None, ()),
        (HOLDING, ON_HOLD, None, ()),
        (HOLDING, SCREENING, None, ()),
        (CONNECTING, AT_MANAGER, "m1", ()),
        (BRIDGED, IN_BRIDGE, "m1", ()),
        # The client answered while nobody listened (the double-dial defect): now on hold.
        (DIALING, ON_HOLD, None, (ANSWER,)),
        (DIALING, SCREENING, None, (ANSWER,)),  # ...and AMD() listens to who did
        # ...and our Redirect went out but its record did not (a crash between the two).
        (DIALING, AT_MANAGER, "m2", (ANSWER, SENT)),
        (HOLDING, IN_BRIDGE, "m2", (SENT, BRIDGE)),
        # The manager we rang did not answer; the dialplan put the client back on hold.
        (CONNECTING, ON_HOLD, None, (NO_ANSWER,)),
        # The manager we rang answered.
        (CONNECTING, IN_BRIDGE, "m1", (BRIDGE,)),
        # Someone else has the client now: ours gave up first.
        (CONNECTING, IN_BRIDGE, "m2", (NO_ANSWER, SENT, BRIDGE)),
        (HOLDING, SORRY, None, (APOLOGY,)),
        (DIALING, SORRY, None, (ANSWER, APOLOGY)),
        # A stage behind ours is never a step back.
        (HOLDING, RINGING, None, ()),
        (BRIDGED, ON_HOLD, None, ()),
    ],
)
def test_the_steps_missed_take_a_call_to_the_stage_the_pbx_shows(
    state: CallState, stage: LegStage, manager: str | None, steps: tuple[Missed, ...]
) -> None:
    assert missed(call(state=state), stage, manager) == steps


def test_an_apology_already_heard_of_is_not_missed() -> None:
    subject = call(state=HOLDING)
    subject.hold_expired = True
    assert missed(subject, SORRY, None) == ()


def test_every_listed_call_is_caught_up_with_the_manager_of_its_extension() -> None:
    live, stored = call("live", DIALING), call("old", HOLDING)
    legs = {**leg("live", ON_HOLD), **leg("old", IN_BRIDGE, "102")}
    decision = decide(legs, adopted=[stored], live=[live])
    assert decision.adopt == [stored]
    assert decision.catch_up == [
        CatchUp(live, (ANSWER,), legs["live"], None),
        CatchUp(stored, (SENT, BRIDGE), legs["old"], "m2"),
    ]
    assert decision.close == []


def test_a_phone_that_is_no_managers_gives_no_manager() -> None:
    stored = call("old", HOLDING)
    decision = decide(leg("old", AT_MANAGER, "999"), adopted=[stored])
    assert decision.catch_up[0].manager_id is None


def test_an_adopted_call_the_pbx_no_longer_has_is_taken_over_only_to_be_closed() -> None:
    adopted = call("old", BRIDGED)
    decision = decide({}, adopted=[adopted])
    assert decision.adopt == [adopted]
    assert decision.catch_up == []
    assert decision.close == [adopted]


def test_an_answered_call_missing_from_the_listing_is_gone_whenever_it_started() -> None:
    # Its leg existed long before the listing; a previous run's clock may even say later.
    adopted = call("old", HOLDING, started=5)
    assert decide({}, adopted=[adopted]).close == [adopted]


def test_a_call_dialled_just_before_the_listing_may_be_missing_from_it() -> None:
    # The PBX answers "queued" before its originate thread creates the leg.
    grace = LISTING_GRACE.total_seconds()
    just_dialled, dialled_since, long_ago = call("new", started=-grace / 2), call("since", started=1), call("old")
    decision = decide({}, live=[just_dialled, dialled_since, long_ago], adopted=[call("adopted", started=-1)])
    assert decision.close == [long_ago]


def test_a_call_heard_of_since_the_listing_was_asked_for_is_left_as_it_is() -> None:
    # The listing shows the manager still ringing, but the DialEnd that came after it said no:
    # the client is back on hold (or already ringing the next manager), the listing is older.
    back_on_hold = call("lr-1", HOLDING)
    decision = decide_resync(
        legs=leg("lr-1", AT_MANAGER, "101"),
        asked_at=ASKED_AT,
        adopted=[],
        live=[back_on_hold, call("lr-2", started=-60)],
        managers=MANAGERS,
        heard_since={"lr-1", "lr-2"},
    )
    assert decision.catch_up == [] and decision.close == []


def test_a_call_already_live_is_not_adopted_twice() -> None:
    # Two logins in quick succession both read the unfinished calls; the first adopted them.
    live = call("old", HOLDING)
    stored = call("old", HOLDING)
    decision = decide(leg("old", ON_HOLD), adopted=[stored], live=[live])
    assert decision.adopt == [] and decision.close == []
    assert decision.catch_up == [CatchUp(live, (), LiveLeg("old", ON_HOLD), None)]


def test_this_runs_live_calls_are_closed_before_the_adopted_ones() -> None:
    first, second = call("live-1"), call("live-2")
    adopted = call("old")
    decision = decide({}, adopted=[adopted], live=[first, second])
    assert decision.close == [first, second, adopted]
