"""Every strategy's choice among the free managers of a pool, through the board that feeds it.

Randomised strategies get a seeded RNG; shares are checked over many picks with margins far
wider than the seed's noise and far narrower than a wrong rule's error.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from router.board import History, ManagerBoard
from router.model import Outcome, OutcomeReport
from router.pbx_events import DeviceState
from router.routing import ClosingRate, Manager, Scenario, Strategy
from router.strategies import MAX_DRAWS
from tests.router.plans import T0, at, manager, plan, scenario, talked

M1, M2, M3 = manager(1), manager(2), manager(3)


class CountingRandom(random.Random):
    """A seeded RNG that counts its Beta draws."""

    draws = 0

    def betavariate(self, alpha: float, beta: float) -> float:
        self.draws += 1
        return super().betavariate(alpha, beta)


def board_for(chosen: Scenario, *managers: Manager, seed: int = 1) -> ManagerBoard:
    return ManagerBoard(plan(*managers, scenarios=(chosen,)), rng=CountingRandom(seed))


def serve(board: ManagerBoard, chosen: Scenario, clients: int) -> Counter[str]:
    """Give ``clients`` clients one after another; each call ends before the next (everyone stays free)."""
    given: Counter[str] = Counter()
    for call_id in range(1, clients + 1):
        picked = board.pick(chosen, set(), at(call_id))
        assert picked is not None
        board.give(chosen, picked.id, call_id, at(call_id))
        board.release(picked.id, call_id)
        given[picked.id] += 1
    return given


def toggle(board: ManagerBoard, extension: str) -> None:
    """A personal call: the manager becomes the one free the shortest time."""
    board.device_changed(extension, DeviceState.IN_USE)
    board.device_changed(extension, DeviceState.FREE)


# -- longest_idle and round_robin ------------------------------------------------------------------


def test_longest_idle_gives_the_client_to_whoever_is_free_longest() -> None:
    chosen = scenario(strategy=Strategy.LONGEST_IDLE)
    board = board_for(chosen, M1, M2, M3)
    toggle(board, "101")
    assert board.pick(chosen, set(), T0) == M2
    assert board.pick(chosen, {"m2"}, T0) == M3


def test_round_robin_takes_turns_whoever_is_free_longest() -> None:
    chosen = scenario(strategy=Strategy.ROUND_ROBIN)
    board = board_for(chosen, M1, M2, M3)
    assert serve(board, chosen, 3) == {"m1": 1, "m2": 1, "m3": 1}
    toggle(board, "101")  # m1 is free the shortest, but his turn is the oldest
    assert board.pick(chosen, set(), at(10)) == M1


def test_round_robin_gives_a_busy_manager_the_next_client_once_he_is_free() -> None:
    chosen = scenario(strategy=Strategy.ROUND_ROBIN)
    board = board_for(chosen, M1, M2, M3)
    board.device_changed("101", DeviceState.IN_USE)
    assert serve(board, chosen, 4) == {"m2": 2, "m3": 2}
    board.device_changed("101", DeviceState.FREE)
    assert board.pick(chosen, set(), at(10)) == M1  # never had a turn: first


def test_round_robin_turns_survive_a_restart() -> None:
    chosen = scenario(strategy=Strategy.ROUND_ROBIN)
    before = board_for(chosen, M1, M2, M3)
    serve(before, chosen, 2)  # m1 then m2
    restarted = board_for(chosen, M1, M2, M3)
    restarted.restore(History(turns={"s": {"m1": at(1), "m2": at(2)}}), at(3))
    assert [restarted.pick(chosen, set(picked), at(3)) for picked in ((), ("m3",), ("m3", "m1"))] == [M3, M1, M2]


# -- today's figures -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "expected"), [(Strategy.FEWEST_CALLS, [M3, M2, M1]), (Strategy.LEAST_TALK_TIME, [M3, M1, M2])]
)
def test_todays_figures_order_the_pool(strategy: Strategy, expected: list[Manager]) -> None:
    chosen = scenario(strategy=strategy)
    board = board_for(chosen, M1, M2, M3)
    # m1: two calls, 60 s; m2: one call, 600 s; m3: none, and free the shortest.
    for call_id, (manager_id, seconds) in enumerate((("m1", 30), ("m1", 30), ("m2", 600)), start=1):
        board.call_ended(talked(manager_id, seconds, call_id), T0)
    toggle(board, "103")
    assert [board.pick(chosen, {found.id for found in expected[:index]}, T0) for index in range(3)] == expected
    board.call_ended(talked("m3", 900, 4), T0)  # a long call of his moves him back
    assert board.pick(chosen, set(), T0) == expected[1]


def test_equal_figures_go_to_whoever_is_free_longest() -> None:
    chosen = scenario(strategy=Strategy.FEWEST_CALLS)
    board = board_for(chosen, M1, M2, M3)
    toggle(board, "101")
    assert board.pick(chosen, set(), T0) == M2


def test_todays_figures_come_back_after_a_restart_and_start_over_at_midnight() -> None:
    chosen = scenario(strategy=Strategy.FEWEST_CALLS)
    board = board_for(chosen, M1, M2)
    board.restore(History(today={"m1": (5, 900.0), "m2": (7, 100.0)}), T0)
    toggle(board, "101")
    assert board.pick(chosen, set(), T0) == M1
    board.tick(at(15 * 3600))  # midnight UTC: everyone at zero, longest free first
    assert board.pick(chosen, set(), at(15 * 3600)) == M2


# -- random and weighted ---------------------------------------------------------------------------


def picks(board: ManagerBoard, chosen: Scenario, count: int, exclude: set[str] | None = None) -> Counter[str]:
    return Counter(found.id for _ in range(count) if (found := board.pick(chosen, exclude or set(), T0)))


def test_random_is_even_over_the_free_managers_the_call_has_not_tried() -> None:
    chosen = scenario(strategy=Strategy.RANDOM)
    board = board_for(chosen, M1, M2, M3, manager(4))
    board.device_changed("104", DeviceState.IN_USE)
    counts = picks(board, chosen, 6000, exclude={"m3"})
    assert set(counts) == {"m1", "m2"}
    assert abs(counts["m1"] - 3000) < 200
    assert board.pick(chosen, {"m1", "m2", "m3"}, T0) is None


def test_weighted_shares_follow_the_weights_of_the_free() -> None:
    chosen = scenario(strategy=Strategy.WEIGHTED)
    light, middle, heavy = manager(1, weight=10), manager(2, weight=20), manager(3, weight=30)
    board = board_for(chosen, light, middle, heavy, manager(4, weight=100))
    board.device_changed("104", DeviceState.IN_USE)  # the heaviest is busy: not in the draw
    counts = picks(board, chosen, 6000)
    assert set(counts) == {"m1", "m2", "m3"}
    for manager_id, share in (("m1", 1 / 6), ("m2", 2 / 6), ("m3", 3 / 6)):
        assert abs(counts[manager_id] / 6000 - share) < 0.025
    tried = picks(board, chosen, 3000, exclude={"m3"})
    assert set(tried) == {"m1", "m2"} and abs(tried["m2"] / 3000 - 2 / 3) < 0.03
    assert board.pick(chosen, {"m1", "m2", "m3"}, T0) is None


# -- closing_rate ----------------------------------------------------------------------------------


def closing(floor: float = 0.0, window: int | None = None, history: int = 50) -> Scenario:
    options = ClosingRate(fairness_floor=floor, fairness_window=window, history=history)
    return scenario(strategy=Strategy.CLOSING_RATE, closing_rate=options)


def record(board: ManagerBoard, manager_id: str, won: int, lost: int, scenario_name: str = "s") -> None:
    """Decided leads with the wins spread evenly, so any recent stretch has the same rate."""
    total = won + lost
    for number in range(total):
        outcome = Outcome.WON if (number + 1) * won // total > number * won // total else Outcome.LOST
        lead_id = hash((manager_id, scenario_name, number))
        board.outcome(OutcomeReport(lead_id, outcome, None, "", "crm", manager_id, scenario_name, T0))


def test_closing_rate_sends_clearly_more_clients_to_the_better_closer() -> None:
    chosen = closing()
    board = board_for(chosen, M1, M2)
    record(board, "m1", won=5, lost=45)  # 10 %
    record(board, "m2", won=20, lost=30)  # 40 %
    assert serve(board, chosen, 500)["m2"] > 480


def test_closing_rate_tries_a_newcomer_instead_of_starving_him() -> None:
    chosen = closing()
    board = board_for(chosen, M1, M2)
    record(board, "m1", won=10, lost=40)  # a known 20 % closer; m2 has no record
    newcomer = serve(board, chosen, 400)["m2"]
    assert 60 < newcomer < 340


def test_the_fairness_floor_holds_for_the_weaker_closer() -> None:
    chosen = closing(floor=0.5, window=200)
    board = board_for(chosen, M1, M2)
    record(board, "m1", won=5, lost=45)
    record(board, "m2", won=20, lost=30)
    given = serve(board, chosen, 1000)
    # Half of a fair share of two is a quarter of the clients.
    assert 0.24 <= given["m1"] / 1000 <= 0.30


def test_the_fairness_window_survives_a_restart() -> None:
    chosen = closing(floor=0.5, window=100)
    board = board_for(chosen, M1, M2)
    record(board, "m1", won=5, lost=45)
    record(board, "m2", won=20, lost=30)
    # The stored legs say m2 had the last 100 offers: m1 is far below the floor.
    board.restore(History(offers={"s": ["m2"] * 100}), T0)
    record(board, "m1", won=5, lost=45)
    record(board, "m2", won=20, lost=30)
    assert serve(board, chosen, 20) == {"m1": 20}


def test_only_the_last_decided_leads_of_history_count_and_a_correction_replaces_a_report() -> None:
    chosen = closing(history=10)
    board = board_for(chosen, M1, M2)
    record(board, "m1", won=40, lost=0)
    record(board, "m2", won=10, lost=0)
    for number in range(10):  # m1's last ten are losses
        board.outcome(OutcomeReport(1000 + number, Outcome.LOST, None, "", "crm", "m1", "s", T0))
    assert serve(board, chosen, 50)["m2"] > 45
    for number in range(10):  # the CRM corrects them: won after all
        board.outcome(OutcomeReport(1000 + number, Outcome.WON, Outcome.LOST, "", "crm", "m1", "s", T0))
    record(board, "m2", won=0, lost=10)
    assert serve(board, chosen, 50)["m1"] > 45


def test_outcomes_in_another_scenario_do_not_count() -> None:
    chosen = closing()
    board = board_for(chosen, M1, M2)
    record(board, "m1", won=50, lost=0, scenario_name="other")
    record(board, "m1", won=5, lost=45)
    record(board, "m2", won=25, lost=25)
    assert serve(board, chosen, 200)["m2"] > 190


def test_a_clear_leader_is_found_with_one_draw() -> None:
    chosen = closing()
    rng = CountingRandom(3)
    board = ManagerBoard(plan(M1, M2, scenarios=(chosen,)), rng=rng)
    record(board, "m1", won=450, lost=50)
    record(board, "m2", won=50, lost=450)
    assert board.pick(chosen, set(), T0) == M1
    assert rng.draws == 1  # m2's bound is far below any draw of m1's


def test_a_big_undecided_pool_draws_at_most_max_draws() -> None:
    chosen = closing()
    rng = CountingRandom(3)
    crowd = [manager(number) for number in range(1, 201)]
    board = ManagerBoard(plan(*crowd, scenarios=(chosen,)), rng=rng)
    picked = board.pick(chosen, set(), T0)
    assert rng.draws == MAX_DRAWS
    assert picked is not None and int(picked.id[1:]) <= MAX_DRAWS  # among the longest free


def test_closing_rate_skips_the_tried_and_the_busy() -> None:
    chosen = closing(floor=0.5)
    board = board_for(chosen, M1, M2, M3)
    board.device_changed("103", DeviceState.IN_USE)
    assert {board.pick(chosen, {"m1"}, T0) for _ in range(20)} == {M2}
    assert board.pick(chosen, {"m1", "m2"}, T0) is None
