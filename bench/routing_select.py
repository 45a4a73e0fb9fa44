"""Manager selection: the median time of one pick at 100, 1,000 and 10,000 managers, per strategy.

Beside each figure, in the same run, a naive peer: what the board's pick() did before scenarios
had indexes, extended to every strategy: walk every free manager, keep those in the pool that
the call has not tried, and choose by the strategy's rule (the first one, the smallest key, a
random choice, a Beta draw for each).

The board: a quarter of the managers in group `senior` (every fourth), which is the scenario's
pool; 40% of all phones in use; every pick excludes the two managers the call already tried.
Each round picks, gives the client to the pick, and releases the manager given one 30 rounds
earlier, so the free set churns like a live board. closing_rate: each manager has a record of
0..60 decided leads, his win rate spread from 5% to 45%, and the fairness floor at 50% of a
full window in which everyone has his fair share, so each pick takes the Thompson draw.
Only the pick is timed.

Bar (DESIGN.md): median <= 50 us at 10,000 managers.

Run: .venv/bin/python -m bench.routing_select
"""

from __future__ import annotations

import random
import statistics
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from router.board import History, ManagerBoard
from router.model import Outcome, OutcomeReport
from router.pbx_events import DeviceState
from router.routing import ClosingRate, Manager, Pool, RoutingPlan, Scenario, Strategy

SIZES = (100, 1_000, 10_000)
ROUNDS = 2_000
NAIVE_ROUNDS = 200  # the naive closing_rate at 10,000 managers takes milliseconds a pick
IN_FLIGHT = 30  # clients given and not yet released
T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
BAR_US = 50.0


def _managers(count: int, rng: random.Random) -> list[Manager]:
    return [
        Manager(
            f"m{number}",
            f"Manager {number}",
            str(10_000 + number),
            groups=frozenset({"senior"} if number % 4 == 0 else {"junior"}),
            weight=rng.randint(1, 100),
        )
        for number in range(count)
    ]


SENIORS = Pool(groups=frozenset({"senior"}))
EVERYONE = Pool()
FEW = Pool(managers=frozenset({"m0", "m4", "m8", "m12"}))  # a scenario naming a handful of managers


def _scenario(strategy: Strategy, pool: Pool = SENIORS) -> Scenario:
    return Scenario(
        name="s",
        hold_limit=45,
        ring_timeout=20,
        max_attempts=3,
        retry_delays=(300,),
        pool=pool,
        strategy=strategy,
        closing_rate=ClosingRate(fairness_floor=0.5),
    )


class _Bench:
    """One board at one size under one strategy, and the naive peer over the same state."""

    def __init__(self, count: int, strategy: Strategy, pool: Pool = SENIORS) -> None:
        self.rng = random.Random(count)
        self.managers = _managers(count, self.rng)
        self.scenario = _scenario(strategy, pool)
        self.board = ManagerBoard(RoutingPlan(tuple(self.managers), (self.scenario,)), rng=random.Random(1))
        self.by_id = {manager.id: manager for manager in self.managers}
        self.calls = {manager.id: self.rng.randint(0, 40) for manager in self.managers}
        self.talk = {manager.id: self.rng.uniform(0, 20_000) for manager in self.managers}
        self.turns = {manager.id: -float(number) for number, manager in enumerate(self.managers)}
        self.records: dict[str, tuple[int, int]] = {}
        lead_id = 0
        for manager in self.managers:
            rate, decided = self.rng.uniform(0.05, 0.45), self.rng.randint(0, 60)
            won = sum(self.rng.random() < rate for _ in range(decided))
            self.records[manager.id] = (won, decided - won)
            for index in range(decided):
                lead_id += 1
                outcome = Outcome.WON if index < won else Outcome.LOST
                self.board.outcome(OutcomeReport(lead_id, outcome, None, "", "bench", manager.id, "s", T0))
        if strategy is Strategy.CLOSING_RATE:
            # A full window with everyone at his fair share: every pick takes the Thompson draw,
            # the dearer path (below the floor, a pick is the head of an index).
            admitted = [manager.id for manager in self.managers if self.scenario.pool.admits(manager)]
            self.board.restore(History(offers={"s": admitted * 20}), T0)
        # Four in ten phones in use; the rest are free (no shifts, no capacity limits here).
        self.free: list[str] = []
        for manager in self.managers:
            if self.rng.random() < 0.4:
                self.board.device_changed(manager.extension, DeviceState.IN_USE)
            else:
                self.free.append(manager.id)
        self.given: deque[str] = deque()
        self.call_id = 0

    def exclude(self) -> set[str]:
        return set(self.rng.sample(self.free, 2)) if len(self.free) > 2 else set()

    def after_pick(self, manager_id: str | None, now: datetime) -> None:
        if manager_id is None:
            return
        self.call_id += 1
        self.board.give(self.scenario, manager_id, self.call_id, now)
        self.free.remove(manager_id)
        self.turns[manager_id] = now.timestamp()
        self.given.append(manager_id)
        if len(self.given) > IN_FLIGHT:
            released = self.given.popleft()
            self.board.release(released, self.call_id - IN_FLIGHT)
            self.free.append(released)

    def naive(self, exclude: set[str]) -> str | None:
        """Walk every free manager, as the old pick() did, and choose by the strategy's rule."""
        pool, strategy = self.scenario.pool, self.scenario.strategy
        if strategy is Strategy.LONGEST_IDLE:  # exactly the old pick(): the first that fits
            return next((mid for mid in self.free if mid not in exclude and pool.admits(self.by_id[mid])), None)
        candidates = [mid for mid in self.free if mid not in exclude and pool.admits(self.by_id[mid])]
        if not candidates:
            return None
        keys: dict[Strategy, Callable[[str], float]] = {
            Strategy.ROUND_ROBIN: self.turns.__getitem__,
            Strategy.FEWEST_CALLS: self.calls.__getitem__,
            Strategy.LEAST_TALK_TIME: self.talk.__getitem__,
        }
        if strategy in keys:
            return min(candidates, key=keys[strategy])
        if strategy is Strategy.RANDOM:
            return self.rng.choice(candidates)
        if strategy is Strategy.WEIGHTED:
            return self.rng.choices(candidates, [self.by_id[mid].weight for mid in candidates])[0]
        draws = {mid: self.rng.betavariate(1 + self.records[mid][0], 1 + self.records[mid][1]) for mid in candidates}
        return max(draws, key=draws.__getitem__)


def _median_us(bench: _Bench, rounds: int, indexed: bool) -> float:
    times = []
    for round_number in range(rounds):
        now = T0 + timedelta(seconds=round_number)
        exclude = bench.exclude()
        started = time.perf_counter_ns()
        if indexed:
            picked = bench.board.pick(bench.scenario, exclude, now)
            manager_id = None if picked is None else picked.id
        else:
            manager_id = bench.naive(exclude)
        times.append(time.perf_counter_ns() - started)
        bench.after_pick(manager_id, now)
    return statistics.median(times) / 1000


def worst_us(size: int = SIZES[-1], rounds: int = ROUNDS) -> float:
    """``python -m bench``'s figure: the slowest median pick at ``size`` managers over every strategy
    and three pools (everyone, a quarter of them by group, four named managers)."""
    return max(
        _median_us(_Bench(size, strategy, pool), rounds, indexed=True)
        for strategy in Strategy
        for pool in (EVERYONE, SENIORS, FEW)
    )


def main() -> None:
    print(__doc__.split("\n\n")[0])
    print(f"\nmedian us per pick; naive peer in brackets; bar {BAR_US:g} us at 10,000")
    print(f"{'strategy':<16}" + "".join(f"{size:>22,}" for size in SIZES))
    worst = 0.0
    for strategy in Strategy:
        cells = []
        for size in SIZES:
            indexed = _median_us(_Bench(size, strategy), ROUNDS, indexed=True)
            naive = _median_us(_Bench(size, strategy), NAIVE_ROUNDS, indexed=False)
            cells.append(f"{indexed:8.1f} [{naive:9.1f}]")
            if size == SIZES[-1]:
                worst = max(worst, indexed)
        print(f"{strategy.value:<16}" + "".join(f"{cell:>22}" for cell in cells))
    print(f"\nslowest strategy at {SIZES[-1]:,}: {worst:.1f} us ({'within' if worst <= BAR_US else 'OVER'} the bar)")


if __name__ == "__main__":
    main()
