"""How a scenario picks one of the free managers of its pool: one selector per scenario.

The board (router.board) tells each selector which of its pool's managers are free (``enter`` /
``leave``); a selector keeps them indexed in its strategy's order, so a pick looks at the head of
an index instead of walking every free manager: with 10,000 managers a pick stays within tens of
microseconds (bench/routing_select.py). Keys that change while a manager is free (a reported
outcome, a new day) move him in the index (``reorder``).

Ties are broken by who has been free longest: ``idle_seq`` grows each time a manager becomes free.
"""

from __future__ import annotations

import bisect
import math
import random
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Set
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from router.routing import ClosingRate, Manager, Strategy

# closing_rate: how sure the Thompson scan must be before it stops drawing (see _ClosingRate.pick).
SKIP_CHANCE = 1e-4
MAX_DRAWS = 16
MAX_HISTORY = 500  # decided leads kept per manager and scenario; the config caps `history` at this


class Facts(Protocol):
    """What selectors read about a manager from the board."""

    def idle_seq(self, manager_id: str) -> int: ...

    def calls_today(self, manager_id: str) -> int: ...

    def talk_today(self, manager_id: str) -> float: ...


@dataclass
class ScenarioMemory:
    """What a scenario remembers across reloads and restarts: whose turn was when, and recent offers.

    Both are rebuilt at start from the stored manager legs (a leg is an offer), so a restart
    keeps the round-robin order and the fairness window.
    """

    window: int = 0  # offers kept; 0 unless the scenario runs closing_rate
    last_turn: dict[str, float] = field(default_factory=dict)  # manager -> POSIX time of his last offer
    recent: deque[str] = field(default_factory=deque)
    offers: Counter[str] = field(default_factory=Counter)  # per manager, within `recent`

    def offered(self, manager_id: str, at: datetime) -> list[str]:
        """Record an offer; returns the managers whose count in the window just dropped."""
        self.last_turn[manager_id] = at.timestamp()
        self.recent.append(manager_id)
        self.offers[manager_id] += 1
        return self.trim()

    def restore(self, last_turns: Mapping[str, datetime], offered: Iterable[str]) -> None:
        self.last_turn.update((manager_id, at.timestamp()) for manager_id, at in last_turns.items())
        for manager_id in offered:
            self.recent.append(manager_id)
            self.offers[manager_id] += 1
        self.trim()

    def trim(self) -> list[str]:
        dropped = []
        while len(self.recent) > self.window:
            manager_id = self.recent.popleft()
            self.offers[manager_id] -= 1
            if not self.offers[manager_id]:
                del self.offers[manager_id]
            dropped.append(manager_id)
        return dropped


class Selector:
    """The free managers of one scenario's pool, in the order its strategy offers them."""

    def __init__(self, memory: ScenarioMemory) -> None:
        self.memory = memory

    def fill(self, manager_ids: Iterable[str]) -> None:
        """Start from these free managers, longest free first (at build and after a reload)."""
        for _ in self.filling(manager_ids, batch=1 << 30):
            pass

    def filling(self, manager_ids: Iterable[str], batch: int) -> Iterator[None]:
        """``fill`` in steps of about ``batch`` managers (the board's rebuild yields between them)."""
        for count, manager_id in enumerate(manager_ids, start=1):
            self.enter(manager_id)
            if count % batch == 0:
                yield

    def enter(self, manager_id: str) -> None:
        raise NotImplementedError

    def leave(self, manager_id: str) -> None:
        raise NotImplementedError

    def reorder(self, manager_id: str) -> None:
        """His key changed; nothing happens if he is not free."""

    def pick(self, exclude: Set[str]) -> str | None:
        raise NotImplementedError

    def given(self, manager_id: str, at: datetime) -> list[str]:
        """A client was given to him (he is reserved, so out of the index by now); returns the
        managers whose offers in the window dropped (their keys changed)."""
        dropped = self.memory.offered(manager_id, at)
        for other in dropped:
            self.reorder(other)
        return dropped


class _Ranked(Selector):
    """Free managers sorted by a key; the pick is the first one the call has not tried."""

    def __init__(self, memory: ScenarioMemory, key: Callable[[str], tuple[float, ...]]) -> None:
        super().__init__(memory)
        self._key = key
        self._entries: list[tuple[tuple[float, ...], str]] = []  # (key, manager id), ascending
        self._keys: dict[str, tuple[float, ...]] = {}

    def filling(self, manager_ids: Iterable[str], batch: int) -> Iterator[None]:
        keys = {}
        for count, manager_id in enumerate(manager_ids, start=1):
            keys[manager_id] = self._key(manager_id)
            if count % batch == 0:
                yield
        self._keys = keys
        self._entries = sorted((key, manager_id) for manager_id, key in keys.items())

    def enter(self, manager_id: str) -> None:
        key = self._keys[manager_id] = self._key(manager_id)
        bisect.insort(self._entries, (key, manager_id))

    def leave(self, manager_id: str) -> None:
        key = self._keys.pop(manager_id, None)
        if key is not None:
            del self._entries[bisect.bisect_left(self._entries, (key, manager_id))]

    def reorder(self, manager_id: str) -> None:
        if manager_id in self._keys:
            self.leave(manager_id)
            self.enter(manager_id)

    def pick(self, exclude: Set[str]) -> str | None:
        return next(self.ranked(exclude), None)

    def ranked(self, exclude: Set[str]) -> Iterator[str]:
        """Free managers not excluded, best first."""
        return (manager_id for _, manager_id in self._entries if manager_id not in exclude)


class _RoundRobin(_Ranked):
    """Turns: the manager whose last client in this scenario is oldest goes next; never offered first."""

    def __init__(self, memory: ScenarioMemory, facts: Facts) -> None:
        super().__init__(
            memory, lambda manager_id: (memory.last_turn.get(manager_id, -math.inf), facts.idle_seq(manager_id))
        )

    def given(self, manager_id: str, at: datetime) -> list[str]:
        dropped = super().given(manager_id, at)
        self.reorder(manager_id)
        return dropped


class _Uniform(Selector):
    """``random``: every free manager equally likely; O(1) sets by swap-remove."""

    def __init__(self, memory: ScenarioMemory, rng: random.Random) -> None:
        super().__init__(memory)
        self._rng = rng
        self._members: list[str] = []
        self._position: dict[str, int] = {}

    def enter(self, manager_id: str) -> None:
        if manager_id not in self._position:
            self._position[manager_id] = len(self._members)
            self._members.append(manager_id)

    def leave(self, manager_id: str) -> None:
        index = self._position.pop(manager_id, None)
        if index is None:
            return
        last = self._members.pop()
        if last != manager_id:
            self._members[index] = last
            self._position[last] = index

    def pick(self, exclude: Set[str]) -> str | None:
        # Rejection keeps the pick uniform over the managers not excluded; a call excludes only
        # the few tried on it, so a handful of tries nearly always does.
        for _ in range(8):
            if not self._members:
                return None
            manager_id = self._members[self._rng.randrange(len(self._members))]
            if manager_id not in exclude:
                return manager_id
        allowed = [manager_id for manager_id in self._members if manager_id not in exclude]
        return self._rng.choice(allowed) if allowed else None


class _Weighted(Selector):
    """``weighted``: random in proportion to weight, over a Fenwick tree of the pool (O(log n) a pick)."""

    def __init__(self, memory: ScenarioMemory, pool: list[Manager], rng: random.Random) -> None:
        super().__init__(memory)
        self._rng = rng
        self._slot = {manager.id: index for index, manager in enumerate(pool)}
        self._ids = [manager.id for manager in pool]
        self._weight = [manager.weight for manager in pool]
        self._tree = [0] * (len(pool) + 1)
        self._in: set[str] = set()
        self._total = 0
        self._top = 1 << max(len(pool).bit_length() - 1, 0)

    def _add(self, index: int, delta: int) -> None:
        self._total += delta
        index += 1
        while index < len(self._tree):
            self._tree[index] += delta
            index += index & -index

    def filling(self, manager_ids: Iterable[str], batch: int) -> Iterator[None]:
        self.fill(manager_ids)  # one pass over the pool: a few milliseconds at 10,000 managers
        yield

    def fill(self, manager_ids: Iterable[str]) -> None:
        """Build the tree in one pass rather than by one update per manager."""
        self._in = {manager_id for manager_id in manager_ids if manager_id in self._slot}
        self._tree = [0] * len(self._tree)
        for index, manager_id in enumerate(self._ids, start=1):
            if manager_id in self._in:
                self._tree[index] += self._weight[index - 1]
            parent = index + (index & -index)
            if parent < len(self._tree):
                self._tree[parent] += self._tree[index]
        self._total = sum(self._weight[self._slot[manager_id]] for manager_id in self._in)

    def enter(self, manager_id: str) -> None:
        if manager_id in self._slot and manager_id not in self._in:
            self._in.add(manager_id)
            index = self._slot[manager_id]
            self._add(index, self._weight[index])

    def leave(self, manager_id: str) -> None:
        if manager_id in self._in:
            self._in.discard(manager_id)
            index = self._slot[manager_id]
            self._add(index, -self._weight[index])

    def _find(self, target: int) -> int:
        """The slot whose cumulative weight range holds ``target`` (0 <= target < total)."""
        position, step = 0, self._top
        while step:
            following = position + step
            if following < len(self._tree) and self._tree[following] <= target:
                position = following
                target -= self._tree[following]
            step >>= 1
        return position

    def pick(self, exclude: Set[str]) -> str | None:
        # The few managers the call already tried leave the tree for the draw, then come back.
        tried = [manager_id for manager_id in exclude if manager_id in self._in]
        for manager_id in tried:
            self.leave(manager_id)
        try:
            if self._total == 0:
                return None
            return self._ids[self._find(self._rng.randrange(self._total))]
        finally:
            for manager_id in tried:
                self.enter(manager_id)


class _ClosingRate(Selector):
    """``closing_rate``: Thompson sampling over each manager's won/lost record, above a fairness floor.

    Each free manager's closing rate is drawn from Beta(prior_won + won, prior_lost + lost) over his
    last ``history`` decided leads in this scenario, and the highest draw gets the client: good
    closers get most clients, and a manager with little record gets a wide draw, so he is tried.

    Draws are made from the highest upper bound down and stop when the best draw beats the next
    bound (each manager skipped would have won with a chance under SKIP_CHANCE: the bound is
    Beta's sub-Gaussian tail, variance proxy 1/(4(a+b+1)), Marchal & Arbel 2017), or after
    MAX_DRAWS draws: then it is Thompson sampling among the MAX_DRAWS most promising. Pools with
    up to MAX_DRAWS free managers always get the exact draw.

    Before any draw, the floor: a free manager with fewer than ``fairness_floor`` of a fair share
    (window / pool size) of the scenario's recent offers gets the client, fewest offers first.
    """

    def __init__(
        self,
        memory: ScenarioMemory,
        options: ClosingRate,
        pool_size: int,
        records: dict[str, OrderedDict[int, bool]],
        facts: Facts,
        rng: random.Random,
    ) -> None:
        super().__init__(memory)
        self._options = options
        self._pool_size = max(pool_size, 1)
        self._rng = rng
        # The key below reads the posteriors, not this selector: no reference cycle, so a selector a
        # reload replaces is freed at once (the daemon hides what outlives a reload from the collector).
        posteriors = self._posteriors = _Posteriors(options, records)
        self._promise = _Ranked(memory, lambda manager_id: (-posteriors.of(manager_id)[2], facts.idle_seq(manager_id)))
        self._starved = _Ranked(memory, lambda manager_id: (memory.offers[manager_id], facts.idle_seq(manager_id)))

    def filling(self, manager_ids: Iterable[str], batch: int) -> Iterator[None]:
        ids = list(manager_ids)
        yield from self._promise.filling(ids, batch)
        yield from self._starved.filling(ids, batch)

    def enter(self, manager_id: str) -> None:
        self._promise.enter(manager_id)
        self._starved.enter(manager_id)

    def leave(self, manager_id: str) -> None:
        self._promise.leave(manager_id)
        self._starved.leave(manager_id)

    def reorder(self, manager_id: str) -> None:
        self._posteriors.cached.pop(manager_id, None)
        self._promise.reorder(manager_id)
        self._starved.reorder(manager_id)

    def pick(self, exclude: Set[str]) -> str | None:
        floor = self._options.fairness_floor * len(self.memory.recent) / self._pool_size
        most_starved = self._starved.pick(exclude)
        if most_starved is None:
            return None
        if self.memory.offers[most_starved] < floor:
            return most_starved
        best, best_draw, draws = None, -1.0, 0
        for manager_id in self._promise.ranked(exclude):
            alpha, beta, bound = self._posteriors.of(manager_id)
            if bound <= best_draw or draws == MAX_DRAWS:
                break
            draw = self._rng.betavariate(alpha, beta)
            draws += 1
            if draw > best_draw:
                best, best_draw = manager_id, draw
        return best


class _Posteriors:
    """Each manager's Beta(won, lost) posterior in one scenario, worked out once until his record changes."""

    def __init__(self, options: ClosingRate, records: dict[str, OrderedDict[int, bool]]) -> None:
        self._options = options
        self._records = records
        self.cached: dict[str, tuple[float, float, float]] = {}  # manager -> (alpha, beta, upper bound)

    def of(self, manager_id: str) -> tuple[float, float, float]:
        posterior = self.cached.get(manager_id)
        if posterior is None:
            record = self._records.get(manager_id)
            outcomes = list(record.values())[-self._options.history :] if record else []
            won = sum(outcomes)
            alpha, beta = self._options.prior_won + won, self._options.prior_lost + len(outcomes) - won
            spread = math.sqrt(math.log(1 / SKIP_CHANCE) / (2 * (alpha + beta + 1)))
            bound = min(1.0, alpha / (alpha + beta) + spread)
            posterior = self.cached[manager_id] = (alpha, beta, bound)
        return posterior


def selector(
    strategy: Strategy,
    *,
    memory: ScenarioMemory,
    pool: list[Manager],
    options: ClosingRate,
    records: dict[str, OrderedDict[int, bool]],
    facts: Facts,
    rng: random.Random,
) -> Selector:
    """The selector of one scenario's strategy over its pool."""
    match strategy:
        case Strategy.LONGEST_IDLE:
            return _Ranked(memory, lambda manager_id: (facts.idle_seq(manager_id),))
        case Strategy.ROUND_ROBIN:
            return _RoundRobin(memory, facts)
        case Strategy.FEWEST_CALLS:
            return _Ranked(memory, lambda manager_id: (facts.calls_today(manager_id), facts.idle_seq(manager_id)))
        case Strategy.LEAST_TALK_TIME:
            return _Ranked(memory, lambda manager_id: (facts.talk_today(manager_id), facts.idle_seq(manager_id)))
        case Strategy.RANDOM:
            return _Uniform(memory, rng)
        case Strategy.WEIGHTED:
            return _Weighted(memory, pool, rng)
        case Strategy.CLOSING_RATE:
            return _ClosingRate(memory, options, len(pool), records, facts, rng)
