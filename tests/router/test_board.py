"""ManagerBoard: who is free from phone states and our reservations, and in which order."""

from __future__ import annotations

from router.board import ManagerBoard
from router.pbx_events import DeviceState
from router.routing import Manager, Scenario

M1, M2, M3 = (Manager(f"m{number}", f"Manager {number}", str(100 + number)) for number in (1, 2, 3))


def scenario(*managers: str) -> Scenario:
    return Scenario(
        name="s",
        sources=frozenset(),
        managers=frozenset(managers),
        hold_limit=30,
        ring_timeout=15,
        max_attempts=3,
        retry_delays=(60,),
    )


ANYONE = scenario()


def order(board: ManagerBoard) -> list[str]:
    """The free managers in the order the board offers them."""
    picked: list[str] = []
    while (manager := board.pick(ANYONE, exclude=set(picked))) is not None:
        picked.append(manager.id)
    return picked


def test_a_phone_whose_state_is_not_known_yet_counts_as_free() -> None:
    board = ManagerBoard([M1, M2])
    assert len(board) == 2 and board.free_count == 2 and order(board) == ["m1", "m2"]


def test_a_phone_in_use_is_not_offered_until_it_is_free_again() -> None:
    board = ManagerBoard([M1, M2])
    assert board.device_changed("101", DeviceState.IN_USE) is None
    assert not board.is_free("m1") and board.free_count == 1
    assert board.device_changed("101", DeviceState.RINGING) is None
    assert board.device_changed("101", DeviceState.FREE) == "m1"  # just became free
    assert board.device_changed("101", DeviceState.FREE) is None  # already was
    assert board.is_free("m1")


def test_phones_that_are_no_managers_are_ignored() -> None:
    board = ManagerBoard([M1])
    assert board.device_changed("999", DeviceState.IN_USE) is None
    assert board.free_count == 1


def test_a_reserved_manager_is_busy_whatever_the_phone_says() -> None:
    board = ManagerBoard([M1, M2])
    board.reserve("m1", call_id=10)
    assert board.device_changed("101", DeviceState.FREE) is None
    assert not board.is_free("m1") and order(board) == ["m2"]


def test_only_the_call_holding_a_manager_releases_them() -> None:
    board = ManagerBoard([M1])
    board.reserve("m1", call_id=10)
    assert board.release("m1", call_id=11) is False
    assert board.release("nobody", call_id=10) is False
    assert not board.is_free("m1")
    assert board.release("m1", call_id=10) is True
    assert board.is_free("m1")


def test_a_manager_released_while_the_phone_is_busy_waits_for_the_phone() -> None:
    board = ManagerBoard([M1])
    board.reserve("m1", call_id=10)
    board.device_changed("101", DeviceState.IN_USE)  # the bridged call
    assert board.release("m1", call_id=10) is False
    assert board.device_changed("101", DeviceState.FREE) == "m1"


def test_whoever_has_been_free_longest_is_picked_and_a_finished_manager_goes_last() -> None:
    board = ManagerBoard([M1, M2, M3])
    board.reserve("m1", call_id=10)
    board.release("m1", call_id=10)
    assert order(board) == ["m2", "m3", "m1"]
    board.device_changed("102", DeviceState.IN_USE)  # a personal call
    board.device_changed("102", DeviceState.FREE)
    assert order(board) == ["m3", "m1", "m2"]


def test_pick_skips_managers_the_scenario_does_not_allow_or_the_call_tried() -> None:
    board = ManagerBoard([M1, M2, M3])
    picked = board.pick(scenario("m2", "m3"), exclude={"m2"})
    assert picked == M3
    assert board.pick(scenario("m2"), exclude={"m2"}) is None
    assert board.free_count == 3  # picking alone reserves nobody


def test_a_reload_keeps_what_the_board_knew_of_managers_who_stay() -> None:
    m4, m5 = Manager("m4", "Manager 4", "104"), Manager("m5", "Manager 5", "105")
    board = ManagerBoard([M1, M2, M3, m4])
    board.reserve("m1", call_id=10)
    board.device_changed("102", DeviceState.IN_USE)
    board.reserve("m3", call_id=11)
    board.release("m3", call_id=11)
    assert order(board) == ["m4", "m3"]
    board.replace([M3, M2, M1, m4, m5])
    assert len(board) == 5
    assert order(board) == ["m4", "m3", "m5"]  # the free keep their turn, not the file's order; newcomers last
    assert board.release("m1", call_id=10) is True  # the reservation survived
    assert board.device_changed("102", DeviceState.FREE) == "m2"  # so did the phone state
    assert order(board) == ["m4", "m3", "m5", "m1", "m2"]


def test_a_reload_drops_managers_no_longer_listed() -> None:
    board = ManagerBoard([M1, M2])
    board.reserve("m2", call_id=10)
    board.replace([M1])
    assert len(board) == 1 and order(board) == ["m1"]
    assert board.manager("m2") is None
    assert board.release("m2", call_id=10) is False  # its call ends after the reload
    assert board.device_changed("102", DeviceState.FREE) is None


def test_a_listing_after_a_gap_frees_phones_whose_idle_state_was_missed() -> None:
    board = ManagerBoard([M1, M2, M3])
    for manager in (M1, M2, M3):
        board.device_changed(manager.extension, DeviceState.IN_USE)
    board.reserve("m3", call_id=9)
    # The PBX lists 102 in use; 101 and 103 are left out (idle, or a device it does not cache).
    freed = board.devices_listed({"102": DeviceState.IN_USE})
    assert freed == ["m1"]  # m3's phone is idle, but our call still holds m3
    assert order(board) == ["m1"]
    assert board.release("m3", call_id=9) is True


def test_a_listing_leaves_phones_that_changed_since_it_was_asked_for() -> None:
    board = ManagerBoard([M1, M2])
    board.device_changed("101", DeviceState.IN_USE)  # reported after the listing was asked for
    assert board.devices_listed({}, keep={"101"}) == []
    assert order(board) == ["m2"]
