"""The resync decision after a (re)login: no event loop, only the listing and our calls."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dialer.resync import Adoption, Resume, decide_resync
from router.model import Call, CallState

ASKED_AT = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def call(channel_id: str, state: CallState = CallState.DIALING, started: float = -60) -> Call:
    """A call in ``state``, dialled ``started`` seconds from when the listing was asked for."""
    subject = Call(lead_id=1, attempt=1, scenario="default", channel_id=channel_id, phone="+79161234567",
                   started_at=ASKED_AT + timedelta(seconds=started), id=1)  # fmt: skip
    if state is not CallState.DIALING:
        subject.client_answered(subject.started_at)
    if state in (CallState.CONNECTING, CallState.BRIDGED):
        subject.connect_to("m1", subject.started_at)
    if state is CallState.BRIDGED:
        subject.bridged(subject.started_at)
    return subject


@pytest.mark.parametrize(
    ("state", "resume"),
    [
        (CallState.DIALING, Resume.AWAIT_ANSWER),
        (CallState.HOLDING, Resume.HOLD),
        (CallState.CONNECTING, Resume.KEEP_MANAGER),
        (CallState.BRIDGED, Resume.KEEP_MANAGER),
    ],
)
def test_an_adopted_call_the_pbx_still_has_resumes_by_its_state(state: CallState, resume: Resume) -> None:
    adopted = call("old", state)
    decision = decide_resync(listed={"old"}, asked_at=ASKED_AT, adopted=[adopted], live=[])
    assert decision.adopt == [Adoption(adopted, resume)]
    assert decision.close == []


def test_an_adopted_call_the_pbx_no_longer_has_is_taken_over_only_to_be_closed() -> None:
    adopted = call("old", CallState.BRIDGED)
    decision = decide_resync(listed=set(), asked_at=ASKED_AT, adopted=[adopted], live=[])
    assert decision.adopt == [Adoption(adopted, None)]
    assert decision.close == [adopted]


def test_live_calls_missing_from_the_listing_are_closed_unless_dialled_after_it_was_asked_for() -> None:
    listed, vanished, dialled_since = call("listed"), call("vanished"), call("new", started=0)
    decision = decide_resync(listed={"listed"}, asked_at=ASKED_AT, adopted=[], live=[listed, vanished, dialled_since])
    assert decision.adopt == []
    assert decision.close == [vanished]


def test_an_adopted_call_is_closed_when_missing_whenever_it_started() -> None:
    # A previous run's call the PBX does not list is gone, even if its clock said later.
    adopted = call("old", started=5)
    decision = decide_resync(listed=set(), asked_at=ASKED_AT, adopted=[adopted], live=[])
    assert decision.close == [adopted]


def test_a_call_already_live_is_not_adopted_twice() -> None:
    # Two logins in quick succession both read the unfinished calls; the first adopted them.
    live = call("old", CallState.HOLDING)
    stored = call("old", CallState.HOLDING)
    decision = decide_resync(listed={"old"}, asked_at=ASKED_AT, adopted=[stored], live=[live])
    assert decision.adopt == [] and decision.close == []


def test_this_runs_live_calls_are_closed_before_the_adopted_ones() -> None:
    first, second = call("live-1"), call("live-2")
    adopted = call("old")
    decision = decide_resync(listed=set(), asked_at=ASKED_AT, adopted=[adopted], live=[first, second])
    assert decision.close == [first, second, adopted]
