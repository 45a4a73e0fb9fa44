"""HoldQueue: which waiting client gets which free manager, and in what order."""

from __future__ import annotations

from datetime import timedelta

from router.board import ManagerBoard
from router.hold_queue import Connection, HoldQueue
from router.model import Call, CallState, LegResult
from router.pbx_events import DeviceState
from router.routing import Strategy
from tests.router.plans import ANYONE, T0, manager, offered, plan, scenario

M1, M2 = manager(1), manager(2)
ONLY_M2 = scenario("only-m2", "m2")


def on_hold(call_id: int) -> Call:
    call = Call(lead_id=call_id, attempt=1, scenario="s", channel_id=f"lr-{call_id}", phone="+79161234567",
                started_at=T0, id=call_id)  # fmt: skip
    call.client_answered(T0 + timedelta(seconds=call_id))
    return call


def served(connections: list[Connection]) -> list[tuple[int | None, str]]:
    return [(connection.call.id, connection.manager.id) for connection in connections]


def test_the_client_waiting_longest_gets_the_free_manager() -> None:
    board, queue = ManagerBoard(plan(M1)), HoldQueue()
    first, second = on_hold(1), on_hold(2)
    queue.join(first, ANYONE)
    queue.join(second, ANYONE)
    assert served(queue.connect(board, T0)) == [(1, "m1")]
    assert len(queue) == 1
    assert first.state is CallState.CONNECTING and first.manager_id == "m1"
    assert second.state is CallState.HOLDING


def test_the_manager_given_is_reserved_for_that_call() -> None:
    board, queue = ManagerBoard(plan(M1, M2, scenarios=(ONLY_M2, ANYONE))), HoldQueue()
    queue.join(on_hold(1), ANYONE)
    queue.join(on_hold(2), ANYONE)
    assert served(queue.connect(board, T0)) == [(1, "m1"), (2, "m2")]
    assert board.free_count == 0 and len(queue) == 0
    assert board.release("m1", call_id=1) is True


def test_nobody_free_leaves_everyone_waiting_in_order() -> None:
    board, queue = ManagerBoard(plan(M1)), HoldQueue()
    board.device_changed("101", DeviceState.IN_USE)
    queue.join(on_hold(1), ANYONE)
    queue.join(on_hold(2), ANYONE)
    assert queue.connect(board, T0) == []
    board.device_changed("101", DeviceState.FREE)
    assert served(queue.connect(board, T0)) == [(1, "m1")]


def test_a_client_put_back_after_a_manager_failed_is_served_before_those_who_came_later() -> None:
    board, queue = ManagerBoard(plan(M1, M2, scenarios=(ONLY_M2, ANYONE))), HoldQueue()
    first = on_hold(1)
    queue.join(first, ANYONE)
    queue.connect(board, T0)  # m1 rings for the first client
    board.device_changed("102", DeviceState.IN_USE)
    queue.join(on_hold(2), ANYONE)
    assert first.manager_failed(LegResult.NO_ANSWER, T0) == "m1"
    board.release("m1", call_id=1)
    queue.put_back(first, ANYONE)
    board.device_changed("102", DeviceState.FREE)
    # m1 was tried on the first client, so m2 goes to them and m1 to the second one.
    assert served(queue.connect(board, T0)) == [(1, "m2"), (2, "m1")]


def test_a_manager_already_tried_on_a_call_is_not_offered_it_again() -> None:
    board, queue = ManagerBoard(plan(M1)), HoldQueue()
    call = on_hold(1)
    queue.join(call, ANYONE)
    queue.connect(board, T0)
    call.manager_failed(LegResult.BUSY, T0)
    board.release("m1", call_id=1)
    queue.put_back(call, ANYONE)
    assert queue.connect(board, T0) == [] and len(queue) == 1
    assert offered(board) == ["m1"]  # nobody was reserved


def test_a_client_no_free_manager_fits_keeps_their_place_and_lets_the_next_one_through() -> None:
    board, queue = ManagerBoard(plan(M1, M2, scenarios=(ONLY_M2, ANYONE))), HoldQueue()
    board.device_changed("102", DeviceState.IN_USE)
    queue.join(on_hold(1), ONLY_M2)  # only m2 may take this client
    queue.join(on_hold(2), ANYONE)
    assert served(queue.connect(board, T0)) == [(2, "m1")]
    board.device_changed("102", DeviceState.FREE)
    assert served(queue.connect(board, T0)) == [(1, "m2")]


def test_a_client_who_leaves_is_not_served() -> None:
    board, queue = ManagerBoard(plan(M1)), HoldQueue()
    queue.join(on_hold(1), ANYONE)
    queue.join(on_hold(2), ANYONE)
    queue.leave("lr-1")
    queue.leave("lr-1")  # leaving twice (given up, then hung up) is harmless
    assert served(queue.connect(board, T0)) == [(2, "m1")]


def test_the_scenarios_strategy_picks_and_the_turn_is_recorded() -> None:
    turns = scenario(strategy=Strategy.ROUND_ROBIN)
    board, queue = ManagerBoard(plan(M1, M2, scenarios=(turns,))), HoldQueue()
    queue.join(on_hold(1), turns)
    assert served(queue.connect(board, T0)) == [(1, "m1")]
    board.release("m1", call_id=1)
    board.device_changed("102", DeviceState.IN_USE)  # a personal call: m1 is now free longest...
    board.device_changed("102", DeviceState.FREE)
    queue.join(on_hold(2), turns)
    # ...but round robin goes by turns, and m1 had the last one.
    assert served(queue.connect(board, T0 + timedelta(seconds=5))) == [(2, "m2")]
