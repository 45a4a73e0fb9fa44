"""Who may take a waiting client as he waits: his owner first, then the pool, then overflow pools."""

from __future__ import annotations

from datetime import timedelta

from router.board import ManagerBoard
from router.hold_queue import Connection, HoldQueue
from router.model import Call, LegResult
from router.pbx_events import DeviceState
from router.routing import Overflow, OwnerFirst, Pool, Scenario, Strategy
from router.schedule import Schedule, Window
from tests.router.plans import T0, at, lead, manager, plan, scenario

M1, M2, M3 = manager(1), manager(2), manager(3, groups=frozenset({"senior"}))
OWNER_FIRST = scenario(owner_first=OwnerFirst(wait=20))
SENIOR_THEN_ALL = scenario("paid", pool=Pool(groups=frozenset({"senior"})), overflow=(Overflow(pool=Pool(), after=20),))


def on_hold(call_id: int) -> Call:
    call = Call(lead_id=call_id, attempt=1, scenario="s", channel_id=f"lr-{call_id}", phone="+79161234567",
                started_at=T0, id=call_id)  # fmt: skip
    call.client_answered(T0)
    return call


def served(connections: list[Connection]) -> list[tuple[int | None, str]]:
    return [(connection.call.id, connection.manager.id) for connection in connections]


def waiting(board: ManagerBoard, scenario_: Scenario, owner: str | None) -> tuple[HoldQueue, Call]:
    queue, call = HoldQueue(), on_hold(1)
    queue.join(call, scenario_, owner)
    return queue, call


# -- owner first --------------------------------------------------------------------------------


def test_a_free_owner_gets_his_client_though_another_manager_is_free_longer() -> None:
    board = ManagerBoard(plan(M1, M2, scenarios=(OWNER_FIRST,)))
    queue, _ = waiting(board, OWNER_FIRST, "m2")
    assert served(queue.connect(board, at(1))) == [(1, "m2")]
    assert not board.is_free("m2") and board.is_free("m1")


def test_a_busy_owner_is_waited_for_until_owner_wait_then_the_pool_takes_the_client() -> None:
    board = ManagerBoard(plan(M1, M2, scenarios=(OWNER_FIRST,)))
    board.device_changed("102", DeviceState.IN_USE)
    queue, _ = waiting(board, OWNER_FIRST, "m2")
    assert queue.connect(board, at(19.9)) == []  # m1 is free, but the client is kept for m2
    assert served(queue.connect(board, at(20))) == [(1, "m1")]


def test_a_busy_owner_who_frees_up_within_owner_wait_gets_the_client() -> None:
    board = ManagerBoard(plan(M1, M2, scenarios=(OWNER_FIRST,)))
    board.device_changed("102", DeviceState.IN_USE)
    queue, _ = waiting(board, OWNER_FIRST, "m2")
    assert queue.connect(board, at(5)) == []
    board.device_changed("102", DeviceState.FREE)
    assert served(queue.connect(board, at(6))) == [(1, "m2")]


def test_an_owner_off_shift_or_unregistered_hands_the_client_to_the_pool_at_once() -> None:
    night = manager(2, shift=Schedule((Window(frozenset({5}), 0, 60),)))  # Saturday night; T0 is a Tuesday
    board = ManagerBoard(plan(M1, night, scenarios=(OWNER_FIRST,)))
    board.tick(T0)
    queue, _ = waiting(board, OWNER_FIRST, "m2")
    assert served(queue.connect(board, at(1))) == [(1, "m1")]

    board = ManagerBoard(plan(M1, M2, scenarios=(OWNER_FIRST,)))
    board.device_changed("102", DeviceState.UNAVAILABLE)
    queue, _ = waiting(board, OWNER_FIRST, "m2")
    assert served(queue.connect(board, at(1))) == [(1, "m1")]


def test_an_owner_at_capacity_hands_the_client_to_the_pool_at_once() -> None:
    full = manager(2, max_open_leads=1)
    board = ManagerBoard(plan(M1, full, scenarios=(OWNER_FIRST,)))
    owned = lead()
    owned.owner_id = "m2"
    board.lead_assigned(owned, None)  # his one open lead
    queue, _ = waiting(board, OWNER_FIRST, "m2")
    assert served(queue.connect(board, at(1))) == [(1, "m1")]


def test_an_owner_who_does_not_answer_hands_the_client_to_the_pool() -> None:
    board = ManagerBoard(plan(M1, M2, scenarios=(OWNER_FIRST,)))
    queue, call = waiting(board, OWNER_FIRST, "m2")
    assert served(queue.connect(board, at(1))) == [(1, "m2")]
    assert call.manager_failed(LegResult.NO_ANSWER, at(5)) == "m2"
    board.release("m2", call_id=1)
    queue.put_back(call, OWNER_FIRST, "m2")
    assert served(queue.connect(board, at(5))) == [(1, "m1")]  # within owner_wait, but he was tried


def test_without_owner_first_the_owner_is_one_of_the_pool() -> None:
    plain = scenario()
    board = ManagerBoard(plan(M1, M2, scenarios=(plain,)))
    queue, _ = waiting(board, plain, "m2")
    assert served(queue.connect(board, at(1))) == [(1, "m1")]  # free longest


def test_the_owner_taking_his_client_is_not_a_turn_of_the_strategy() -> None:
    turns = scenario(strategy=Strategy.ROUND_ROBIN, owner_first=OwnerFirst(wait=20))
    board, queue = ManagerBoard(plan(M1, M2, scenarios=(turns,))), HoldQueue()
    for call_id, owner, expected in ((1, None, "m1"), (2, "m2", "m2"), (3, None, "m2")):
        queue.join(on_hold(call_id), turns, owner)
        # m1 had the last turn; m2's own client (call 2) was not one, so call 3 is m2's turn.
        assert served(queue.connect(board, at(call_id))) == [(call_id, expected)]
        board.release(expected, call_id=call_id)


# -- overflow -------------------------------------------------------------------------------------


def test_overflow_opens_a_further_pool_only_after_its_delay() -> None:
    board = ManagerBoard(plan(M1, M3, scenarios=(SENIOR_THEN_ALL,)))
    board.device_changed("103", DeviceState.IN_USE)  # the only senior is busy
    queue, _ = waiting(board, SENIOR_THEN_ALL, None)
    assert queue.connect(board, at(19.9)) == []
    assert served(queue.connect(board, at(20))) == [(1, "m1")]


def test_a_free_manager_of_the_first_pool_goes_before_the_overflow_pool() -> None:
    board = ManagerBoard(plan(M1, M3, scenarios=(SENIOR_THEN_ALL,)))
    queue, _ = waiting(board, SENIOR_THEN_ALL, None)
    assert served(queue.connect(board, at(30))) == [(1, "m3")]  # m1 is free longer, but m3 is senior


def test_levels_open_and_the_moments_who_may_take_changes() -> None:
    steps = scenario(overflow=(Overflow(Pool(), after=10), Overflow(Pool(), after=25)), owner_first=OwnerFirst(wait=5))
    assert [steps.levels_open(waited) for waited in (0, 9.9, 10, 24, 25, 40)] == [1, 1, 2, 2, 3, 3]
    assert [steps.next_change(waited) for waited in (0, 5, 10, 25)] == [5, 10, 25, None]


def test_the_strategy_picks_within_an_overflow_pool_and_keeps_its_own_turns() -> None:
    turns = scenario(
        "turns",
        pool=Pool(groups=frozenset({"senior"})),
        overflow=(Overflow(Pool(), after=10),),
        strategy=Strategy.ROUND_ROBIN,
    )
    board = ManagerBoard(plan(M1, M2, M3, scenarios=(turns,)))
    board.device_changed("103", DeviceState.IN_USE)
    queue = HoldQueue()
    first, second = on_hold(1), on_hold(2)
    queue.join(first, turns)
    assert served(queue.connect(board, at(10))) == [(1, "m1")]
    board.release("m1", call_id=1)
    queue.join(second, turns)
    assert served(queue.connect(board, at(11) + timedelta(seconds=1))) == [(2, "m2")]
