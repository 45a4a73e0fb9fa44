"""ManagerBoard: who is free from phone states, reservations, shifts and capacity, and in which order."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

from router.board import MISSED, History, ManagerBoard, ManagerState
from router.matching import Match
from router.model import Call, Disposition, Lead, Outcome, OutcomeReport
from router.pbx_events import DeviceState
from router.routing import Strategy
from router.schedule import Schedule, Window
from tests.router.plans import ANYONE, T0, at, manager, offered, plan, scenario, talked

M1, M2, M3 = manager(1), manager(2), manager(3)
MOSCOW = ZoneInfo("Europe/Moscow")  # UTC+3: T0 (09:00 UTC) is 12:00 there


def test_a_phone_whose_state_is_not_known_yet_counts_as_free() -> None:
    board = ManagerBoard(plan(M1, M2))
    assert len(board) == 2 and board.free_count == 2 and offered(board) == ["m1", "m2"]


def test_a_phone_in_use_is_not_offered_until_it_is_free_again() -> None:
    board = ManagerBoard(plan(M1, M2))
    assert board.device_changed("101", DeviceState.IN_USE) is None
    assert "m1" not in offered(board) and board.free_count == 1
    assert board.device_changed("101", DeviceState.RINGING) is None
    assert board.device_changed("101", DeviceState.FREE) == "m1"  # just became free
    assert board.device_changed("101", DeviceState.FREE) is None  # already was
    assert "m1" in offered(board)


def test_phones_that_are_no_managers_are_ignored() -> None:
    board = ManagerBoard(plan(M1))
    assert board.device_changed("999", DeviceState.IN_USE) is None
    assert board.free_count == 1


def test_a_reserved_manager_is_busy_whatever_the_phone_says() -> None:
    board = ManagerBoard(plan(M1, M2))
    board.reserve("m1", call_id=10)
    assert board.device_changed("101", DeviceState.FREE) is None
    assert offered(board) == ["m2"]


def test_only_the_call_holding_a_manager_releases_them() -> None:
    board = ManagerBoard(plan(M1))
    board.reserve("m1", call_id=10)
    assert board.release("m1", call_id=11) is False
    assert board.release("nobody", call_id=10) is False
    assert "m1" not in offered(board)
    assert board.release("m1", call_id=10) is True
    assert "m1" in offered(board)


def test_a_manager_released_while_the_phone_is_busy_waits_for_the_phone() -> None:
    board = ManagerBoard(plan(M1))
    board.reserve("m1", call_id=10)
    board.device_changed("101", DeviceState.IN_USE)  # the bridged call
    assert board.release("m1", call_id=10) is False
    assert board.device_changed("101", DeviceState.FREE) == "m1"


def test_whoever_has_been_free_longest_is_picked_and_a_finished_manager_goes_last() -> None:
    board = ManagerBoard(plan(M1, M2, M3))
    board.reserve("m1", call_id=10)
    board.release("m1", call_id=10)
    assert offered(board) == ["m2", "m3", "m1"]
    board.device_changed("102", DeviceState.IN_USE)  # a personal call
    board.device_changed("102", DeviceState.FREE)
    assert offered(board) == ["m3", "m1", "m2"]


def test_pick_skips_managers_outside_the_pool_or_tried_on_the_call() -> None:
    only_m2_m3, only_m2 = scenario("a", "m2", "m3"), scenario("b", "m2")
    board = ManagerBoard(plan(M1, M2, M3, scenarios=(only_m2_m3, only_m2, ANYONE)))
    assert board.pick(only_m2_m3, {"m2"}, T0) == M3
    assert board.pick(only_m2, {"m2"}, T0) is None
    assert board.free_count == 3  # picking alone reserves nobody


def test_give_reserves_the_manager_for_the_call() -> None:
    board = ManagerBoard(plan(M1, M2))
    board.give(ANYONE, "m1", call_id=10, now=T0)
    assert offered(board) == ["m2"]
    assert board.release("m1", call_id=10) is True


def test_a_reload_keeps_what_the_board_knew_of_managers_who_stay() -> None:
    m4, m5 = manager(4), manager(5)
    board = ManagerBoard(plan(M1, M2, M3, m4))
    board.reserve("m1", call_id=10)
    board.device_changed("102", DeviceState.IN_USE)
    board.reserve("m3", call_id=11)
    board.release("m3", call_id=11)
    assert offered(board) == ["m4", "m3"]
    board.replace(plan(M3, M2, M1, m4, m5))
    assert len(board) == 5
    assert offered(board) == ["m4", "m3", "m5"]  # the free keep their turn, not the file's order; newcomers last
    assert board.release("m1", call_id=10) is True  # the reservation survived
    assert board.device_changed("102", DeviceState.FREE) == "m2"  # so did the phone state
    assert offered(board) == ["m4", "m3", "m5", "m1", "m2"]


def test_a_reload_drops_managers_no_longer_listed() -> None:
    board = ManagerBoard(plan(M1, M2))
    board.reserve("m2", call_id=10)
    board.replace(plan(M1))
    assert len(board) == 1 and offered(board) == ["m1"]
    assert board.release("m2", call_id=10) is False  # its call ends after the reload
    assert board.device_changed("102", DeviceState.FREE) is None


def test_a_call_from_before_a_reload_keeps_its_scenario_pool() -> None:
    old = scenario("s", "m2")
    board = ManagerBoard(plan(M1, M2, scenarios=(old,)))
    board.replace(plan(M1, M2, scenarios=(scenario("s", "m1"),)))
    assert board.pick(old, set(), T0) == M2  # the call on hold started under the old pool
    assert board.pick(scenario("s", "m1"), set(), T0) == M1
    board.give(old, "m2", call_id=10, now=T0)  # and can be given its manager
    assert "m2" not in offered(board)


def test_a_reload_keeps_a_scenarios_memory_by_name() -> None:
    turns = scenario("s", strategy=Strategy.ROUND_ROBIN)
    board = ManagerBoard(plan(M1, M2, scenarios=(turns,)))
    board.give(turns, "m1", call_id=10, now=T0)
    board.release("m1", call_id=10)
    # Same name, new rules: m1 had the last turn, so m2 still goes first.
    reloaded = scenario("s", strategy=Strategy.ROUND_ROBIN, hold_limit=60)
    board.replace(plan(M1, M2, scenarios=(reloaded,)))
    assert offered(board, reloaded) == ["m2", "m1"]


def test_a_rebuild_in_steps_leaves_the_old_plan_working_until_its_last_step() -> None:
    m4 = manager(4)
    board = ManagerBoard(plan(M1, M2, M3))
    steps = board.rebuild(plan(M1, M2, m4), batch=1)
    next(steps)
    next(steps)
    assert offered(board) == ["m1", "m2", "m3"] and board.manager("m4") is None
    for _ in steps:
        pass
    assert offered(board) == ["m1", "m2", "m4"] and board.manager("m3") is None


def test_what_happens_during_a_rebuild_in_steps_holds_under_the_new_plan() -> None:
    m4, m5 = manager(4), manager(5)
    after = plan(M1, M2, M3, m4, m5)

    def board_before() -> ManagerBoard:
        board = ManagerBoard(plan(M1, M2, M3, m4))
        board.reserve("m2", call_id=10)
        board.device_changed("104", DeviceState.IN_USE)
        return board

    def meanwhile(board: ManagerBoard) -> None:
        board.reserve("m1", call_id=11)  # busy now
        board.release("m2", call_id=10)  # free now
        board.device_changed("104", DeviceState.FREE)  # free after m2
        board.device_changed("103", DeviceState.RINGING)  # a personal call: busy

    steps = sum(1 for _ in board_before().rebuild(after, batch=1))
    assert steps > 10
    for at_step in range(steps + 1):  # at each step, and once it is over
        board = board_before()
        for step, _ in enumerate(board.rebuild(after, batch=1)):
            if step == at_step:
                meanwhile(board)
        if at_step == steps:
            meanwhile(board)
        # m5 is new: he joins the free behind those free before him, whichever step they became free at.
        assert offered(board) in (["m2", "m4", "m5"], ["m5", "m2", "m4"]), at_step
        assert board.free_count == 3
        assert board.release("m1", call_id=11) is True
        assert board.device_changed("103", DeviceState.FREE) == "m3"
        assert offered(board)[-2:] == ["m1", "m3"]


def test_turns_taken_during_a_rebuild_in_steps_count_under_the_new_plan() -> None:
    turns = scenario("s", strategy=Strategy.ROUND_ROBIN)
    before = plan(M1, M2, M3, scenarios=(turns,))
    reloaded = scenario("s", strategy=Strategy.ROUND_ROBIN, hold_limit=60)
    after = plan(M1, M2, M3, scenarios=(reloaded,))
    steps = sum(1 for _ in ManagerBoard(before).rebuild(after, batch=1))
    for at_step in range(steps):
        board = ManagerBoard(before)
        for step, _ in enumerate(board.rebuild(after, batch=1)):
            if step == at_step:  # m1 takes a client and is free again: his turn is over
                board.give(turns, "m1", call_id=10, now=T0)
                board.release("m1", call_id=10)
        assert offered(board, reloaded) == ["m2", "m3", "m1"], at_step


# -- shifts ----------------------------------------------------------------------------------------


def shift(text_days: frozenset[int], start_hour: int, end_hour: int) -> Schedule:
    return Schedule((Window(text_days, start_hour * 60, end_hour * 60),))


WEEKDAYS = frozenset(range(5))


def test_a_manager_off_shift_is_not_free_and_comes_on_when_his_shift_starts() -> None:
    morning = manager(1, shift=shift(WEEKDAYS, 9, 13))  # Moscow hours
    board = ManagerBoard(plan(morning, M2, timezone=MOSCOW))
    # 12:00 in Moscow: on shift.
    assert board.tick(T0) == 3600.0  # his shift ends at 13:00 Moscow
    assert offered(board) == ["m1", "m2"]
    board.tick(at(3600))
    assert offered(board, now=at(3600)) == ["m2"] and board.free_count == 1
    assert board.tick(at(3600 + 60)) == 11 * 3600 - 60  # the next change: midnight in Moscow
    assert board.tick(at(12 * 3600)) == 9 * 3600  # then Wednesday 09:00 in Moscow
    assert offered(board, now=at(12 * 3600)) == ["m2"]
    assert offered(board, now=at(21 * 3600)) == ["m2", "m1"]


def test_a_manager_who_goes_off_shift_during_a_call_is_not_free_after_it() -> None:
    morning = manager(1, shift=shift(WEEKDAYS, 9, 13))
    board = ManagerBoard(plan(morning, timezone=MOSCOW))
    board.tick(T0)
    board.reserve("m1", call_id=10)
    board.tick(at(3600))
    assert board.release("m1", call_id=10) is False and board.free_count == 0


def test_tick_says_when_the_next_day_starts_without_shifts() -> None:
    board = ManagerBoard(plan(M1, timezone=MOSCOW))
    assert board.tick(T0) == 12 * 3600  # midnight in Moscow


def test_a_reloaded_shift_is_looked_at_on_the_next_tick() -> None:
    board = ManagerBoard(plan(M1, timezone=MOSCOW))
    board.tick(T0)
    board.replace(plan(manager(1, shift=shift(WEEKDAYS, 14, 18)), timezone=MOSCOW))
    board.tick(T0)
    assert offered(board) == []


def test_the_shifts_of_managers_a_rebuild_in_steps_adds_are_looked_at_after_it() -> None:
    board = ManagerBoard(plan(M1, timezone=MOSCOW))
    board.tick(T0)
    afternoon = manager(2, shift=shift(WEEKDAYS, 14, 18))  # 12:00 in Moscow: not yet
    for _ in board.rebuild(plan(M1, afternoon, timezone=MOSCOW), batch=1):
        board.tick(T0)  # the old plan's ticks go on meanwhile
    board.tick(T0)
    assert offered(board) == ["m1"]
    board.tick(at(2 * 3600))
    assert offered(board, now=at(2 * 3600)) == ["m1", "m2"]


# -- capacity --------------------------------------------------------------------------------------


def owned(owner: str | None, outcome: Outcome | None = None) -> Lead:
    lead = Lead(phone="+79161234567", name="", source="", external_id=None, payload={}, created_at=T0, id=7)
    lead.owner_id, lead.outcome = owner, outcome
    return lead


def report(outcome: Outcome, previous: Outcome | None, owner: str = "m1", lead_id: int = 7) -> OutcomeReport:
    return OutcomeReport(lead_id, outcome, previous, "", "crm", owner, "s", T0)


def test_a_manager_at_max_open_leads_is_skipped_until_one_is_decided() -> None:
    board = ManagerBoard(plan(manager(1, max_open_leads=2), M2))
    board.lead_assigned(owned("m1"), previous_owner_id=None)
    assert "m1" in offered(board)
    board.lead_assigned(owned("m1"), previous_owner_id=None)
    assert offered(board) == ["m2"]
    board.outcome(report(Outcome.WORKED, None))  # worked is not decided
    assert "m1" not in offered(board)
    board.outcome(report(Outcome.WON, Outcome.WORKED))
    assert "m1" in offered(board)
    board.outcome(report(Outcome.WORKED, Outcome.WON))  # the CRM took it back: open again
    assert "m1" not in offered(board)


def test_a_lead_passed_to_another_owner_moves_between_their_counts() -> None:
    board = ManagerBoard(plan(manager(1, max_open_leads=1), manager(2, max_open_leads=1)))
    board.lead_assigned(owned("m1"), previous_owner_id=None)
    board.lead_assigned(owned("m2"), previous_owner_id="m1")
    assert offered(board) == ["m1"]
    board.lead_assigned(owned("m2"), previous_owner_id="m2")  # his own lead again: no change
    board.lead_assigned(owned("m1", Outcome.LOST), previous_owner_id="m2")  # a decided lead counts for nobody
    assert offered(board) == ["m1"]


def test_restore_brings_back_open_leads_and_today() -> None:
    board = ManagerBoard(plan(manager(1, max_open_leads=3), M2, scenarios=(scenario(strategy=Strategy.FEWEST_CALLS),)))
    board.restore(History(open_leads={"m1": 3}, today={"m2": (4, 600.0)}), T0)
    assert "m1" not in offered(board)
    assert (board.calls_today("m2"), board.talk_today("m2")) == (4, 600.0)


# -- today's figures -------------------------------------------------------------------------------


def test_talked_calls_count_for_today_and_a_new_day_starts_from_zero() -> None:
    board = ManagerBoard(plan(M1, M2, timezone=MOSCOW))
    board.tick(T0)
    board.call_ended(talked("m1", 90), T0)
    board.call_ended(talked("m1", 30), T0)
    unanswered = Call(lead_id=1, attempt=1, scenario="s", channel_id="lr-9", phone="+79161234567", started_at=T0)
    board.call_ended(unanswered, T0)
    assert (board.calls_today("m1"), board.talk_today("m1")) == (2, 120.0)
    assert board.calls_today("m2") == 0
    board.tick(at(12 * 3600))  # midnight in Moscow
    assert (board.calls_today("m1"), board.talk_today("m1")) == (0, 0.0)


def test_the_catch_all_match_is_the_default() -> None:
    assert ANYONE.match == Match() and ANYONE.match.takes_everything


def test_a_listing_after_a_gap_frees_phones_whose_idle_state_was_missed() -> None:
    board = ManagerBoard(plan(M1, M2, M3))
    for someone in (M1, M2, M3):
        board.device_changed(someone.extension, DeviceState.IN_USE)
    board.reserve("m3", call_id=9)
    # The PBX lists 102 in use; 101 and 103 are left out (idle, or a device it does not cache).
    freed = board.devices_listed({"102": DeviceState.IN_USE})
    assert freed == ["m1"]  # m3's phone is idle, but our call still holds m3
    assert offered(board) == ["m1"]
    assert board.release("m3", call_id=9) is True


def test_a_listing_leaves_phones_that_changed_since_it_was_asked_for() -> None:
    board = ManagerBoard(plan(M1, M2))
    board.device_changed("101", DeviceState.IN_USE)  # reported after the listing was asked for
    assert board.devices_listed({}, keep={"101"}) == []
    assert offered(board) == ["m2"]


# -- manager states: pause, wrap-up, missed offers, the PBX's device state ----------------------


def states(board: ManagerBoard) -> list[tuple[str, str, str | None]]:
    return [(change.manager_id, change.state.value, change.reason) for change in board.take_changes()]


def test_a_paused_manager_is_never_offered_until_resumed_and_each_change_is_reported() -> None:
    board = ManagerBoard(plan(M1, M2))
    assert board.pause("m1", "lunch") is ManagerState.PAUSED
    assert offered(board) == ["m2"] and board.free_count == 1
    assert board.available("m1") is False  # owner first does not wait for him
    assert states(board) == [("m1", "paused", "lunch")]
    assert board.resume("m1") is True
    assert "m1" in offered(board)
    assert states(board) == [("m1", "available", None)]


def test_pausing_someone_unknown_is_a_key_error() -> None:
    board = ManagerBoard(plan(M1))
    with pytest.raises(KeyError):
        board.pause("nobody", "lunch")


def test_a_call_shows_over_a_pause_and_the_pause_stands_after_it() -> None:
    board = ManagerBoard(plan(M1))
    board.reserve("m1", call_id=10)
    board.answered("m1", call_id=10)
    board.pause("m1", "break")
    assert board.state("m1") == (ManagerState.ON_CALL, None)
    board.release("m1", call_id=10)
    assert board.state("m1") == (ManagerState.PAUSED, "break")
    changes = board.take_changes()
    assert [(c.state.value, c.paused) for c in changes] == [
        ("ringing", None),
        ("on_call", None),
        ("on_call", "break"),  # the pause is reported (and stored) even while a call shows over it
        ("paused", "break"),
    ]


def test_wrap_up_keeps_him_out_for_the_scenarios_seconds_after_a_talked_call() -> None:
    board = ManagerBoard(plan(M1, M2))
    call = talked("m1", 60.0, call_id=10)
    board.reserve("m1", call_id=10)
    board.answered("m1", call_id=10)
    board.call_ended(call, at(60), wrap_up=30)
    assert board.release("m1", call_id=10) is False  # not free: wrapping up
    assert board.state("m1") == (ManagerState.WRAP_UP, None)
    assert offered(board, now=at(60)) == ["m2"]
    assert board.tick(at(60)) == pytest.approx(30.0)  # the dispatch loop wakes when it ends
    board.tick(at(89.9))
    assert board.state("m1") == (ManagerState.WRAP_UP, None)
    board.tick(at(90))
    assert board.state("m1") == (ManagerState.AVAILABLE, None)
    assert offered(board, now=at(90)) == ["m2", "m1"]


def test_no_wrap_up_after_a_call_he_never_talked_in() -> None:
    board = ManagerBoard(plan(M1))
    call = Call(lead_id=1, attempt=1, scenario="s", channel_id="lr-1", phone="+79161234567", started_at=T0, id=10)
    board.reserve("m1", call_id=10)
    call.end(Disposition.NO_ANSWER, at(5))
    board.call_ended(call, at(5), wrap_up=30)
    assert board.release("m1", call_id=10) is True


def test_n_offers_in_a_row_not_answered_pause_him_with_reason_missed() -> None:
    board = ManagerBoard(plan(M1, M2))
    assert board.missed_offer("m1", 3) is False
    assert board.missed_offer("m1", 3) is False
    board.reserve("m1", call_id=10)
    board.answered("m1", call_id=10)  # an answered offer starts the count over
    board.release("m1", call_id=10)
    assert board.missed_offer("m1", 3) is False
    assert board.missed_offer("m1", 3) is False
    assert board.missed_offer("m1", 3) is True
    assert board.state("m1") == (ManagerState.PAUSED, MISSED)
    assert offered(board) == ["m2"]
    board.resume("m1")
    assert board.missed_offer("m1", 3) is False  # resuming starts the count over too


def test_no_auto_pause_without_a_limit() -> None:
    board = ManagerBoard(plan(M1))
    assert not any(board.missed_offer("m1", None) for _ in range(10))
    assert board.state("m1") == (ManagerState.AVAILABLE, None)


def test_the_pbx_device_state_makes_him_offline_or_on_a_personal_call() -> None:
    board = ManagerBoard(plan(M1, M2))
    board.device_changed("101", DeviceState.UNAVAILABLE)
    board.device_changed("102", DeviceState.IN_USE)
    assert board.state("m1") == (ManagerState.OFFLINE, "unregistered")
    assert board.state("m2") == (ManagerState.ON_CALL, None)
    assert offered(board) == []
    assert board.available("m1") is False and board.available("m2") is True
    board.devices_listed({"101": DeviceState.FREE})  # after a reconnect: 102 not listed is idle
    assert offered(board) == ["m1", "m2"]
    assert states(board)[-2:] == [("m1", "available", None), ("m2", "available", None)]


def test_off_shift_is_offline() -> None:
    night = Schedule((Window(days=frozenset(range(7)), start=22 * 60, end=23 * 60),))
    board = ManagerBoard(plan(manager(1, shift=night)))
    board.tick(T0)
    assert board.state("m1") == (ManagerState.OFFLINE, "off_shift")


def test_a_pause_outlives_a_restart() -> None:
    board = ManagerBoard(plan(M1, M2))
    board.restore(History(paused={"m1": "training"}), T0)
    assert board.state("m1") == (ManagerState.PAUSED, "training")
    assert offered(board) == ["m2"]
