"""The circuit breaker on the PBX, on a time the test hands in."""

from __future__ import annotations

from router.breaker import BreakerChange, BreakerSettings, BreakerState, PbxBreaker

SETTINGS = BreakerSettings(failures=3, window=10, pause=15, max_pause=40, boot_wait=30)
OPEN, PROBING, CLOSED = BreakerState.OPEN, BreakerState.PROBING, BreakerState.CLOSED


def up(at: float = 0) -> PbxBreaker:
    """A breaker whose PBX is logged in, booted and read at ``at``."""
    breaker = PbxBreaker(SETTINGS)
    breaker.link_up(at)
    breaker.booted(at)
    breaker.synced(at)
    assert breaker.state is CLOSED
    return breaker


def test_nothing_is_dialled_before_a_login_that_is_booted_and_read() -> None:
    breaker = PbxBreaker(SETTINGS)
    assert (breaker.state, breaker.allowed()) == (OPEN, 0)
    assert breaker.link_up(1) is None
    assert breaker.synced(2) is None
    assert breaker.reason == "waiting for FullyBooted"
    assert breaker.booted(3) == BreakerChange(CLOSED, "PBX up")
    assert breaker.allowed() is None


def test_fully_booted_reported_before_the_login_still_counts() -> None:
    # Asterisk sends FullyBooted right behind the login response: it can overtake the login's news.
    breaker = PbxBreaker(SETTINGS)
    breaker.booted(0)
    breaker.link_up(0)
    assert breaker.synced(0) == BreakerChange(CLOSED, "PBX up")


def test_the_link_going_down_stops_dials_until_the_next_session_is_booted_and_read() -> None:
    breaker = up()
    assert breaker.link_down(5) == BreakerChange(OPEN, "AMI link down")
    breaker.link_up(7)
    assert breaker.state is OPEN and breaker.reason == "waiting for FullyBooted"  # the old boot does not count
    breaker.booted(7)
    assert breaker.state is OPEN and breaker.reason == "reading the PBX's live calls"
    assert breaker.synced(8) is not None and breaker.state is CLOSED


def test_failures_within_the_window_open_it_and_older_ones_do_not_count() -> None:
    breaker = up()
    breaker.failed(1)
    breaker.failed(2)
    assert breaker.failed(12) is None  # the first two fell out of the window
    assert breaker.failed(13) is None
    assert breaker.state is CLOSED
    assert breaker.failed(14) == BreakerChange(OPEN, "3 PBX failures within 10s")
    assert breaker.allowed() == 0


def test_after_the_pause_one_probe_and_the_client_answering_for_it_closes_it() -> None:
    breaker = tripped(at=10)
    assert breaker.next_change_in(20) == 5
    assert breaker.tick(24) is None
    assert breaker.tick(25) is not None and breaker.state is PROBING
    assert breaker.allowed() == 1
    breaker.dialling(1)
    assert breaker.allowed() == 0  # one probe at a time
    assert breaker.next_change_in(30) is None  # only the probe's fate changes it now
    assert breaker.succeeded(31) == BreakerChange(CLOSED, "PBX up")
    # The slate is clean: it takes the full count again to open.
    breaker.failed(32)
    breaker.failed(33)
    assert breaker.state is CLOSED


def test_a_failed_probe_opens_it_again_for_twice_the_pause_up_to_the_cap() -> None:
    breaker = tripped(at=0)
    pauses = []
    moment = 0.0
    for _ in range(3):
        wait = breaker.next_change_in(moment)
        assert wait is not None
        pauses.append(wait)
        moment += wait
        breaker.tick(moment)
        breaker.dialling(1)
        assert breaker.failed(moment) == BreakerChange(OPEN, "3 PBX failures within 10s")
    assert pauses == [15, 30, 40]


def test_a_call_dialled_before_the_trip_succeeding_during_the_pause_proves_nothing() -> None:
    breaker = tripped(at=0)
    assert breaker.succeeded(5) is None and breaker.state is OPEN


def test_a_pbx_shutting_down_stops_dials_before_its_link_drops() -> None:
    breaker = up()
    assert breaker.shutting_down(1) == BreakerChange(OPEN, "PBX shutting down")
    assert breaker.link_down(2) is None
    breaker.link_up(3)
    assert breaker.reason == "waiting for FullyBooted"


def test_a_fresh_booted_session_closes_it_without_a_probe() -> None:
    # A PBX restart: failures first (Originates refused while it stops), then the link drops.
    breaker = tripped(at=0)
    breaker.link_down(1)
    breaker.link_up(3)
    breaker.booted(3)
    assert breaker.synced(3) == BreakerChange(CLOSED, "PBX up")


def test_without_fully_booted_it_dials_after_the_boot_wait_and_says_why() -> None:
    breaker = PbxBreaker(SETTINGS)
    breaker.link_up(0)
    breaker.synced(1)
    assert breaker.next_change_in(1) == 29
    assert breaker.tick(29) is None
    change = breaker.tick(30)
    assert change is not None and change.state is CLOSED and "read system events" in change.reason


def tripped(*, at: float) -> PbxBreaker:
    breaker = up(at)
    for _ in range(SETTINGS.failures):
        breaker.failed(at)
    assert breaker.state is OPEN
    return breaker
