"""KeyedWindow: at most N events per key within a window (leads per number, requests per address)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from dialer.intake import KeyedWindow, RateLimit

START = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
LIMIT = RateLimit(3, timedelta(seconds=60))


def _reference_wait(limit: RateLimit, stamps: list[datetime], now: datetime, pending: int) -> float:
    """Seconds until one more fits, from every event kept one by one."""
    recent = sorted(stamp for stamp in stamps if now - stamp < limit.window)
    over = len(recent) + pending - limit.count
    if over < 0:
        return 0.0
    oldest = recent[over] if over < len(recent) else now
    return (oldest + limit.window - now).total_seconds()


@pytest.mark.parametrize(
    ("limit", "keys", "steps"),
    [
        pytest.param(LIMIT, "abcde", (0, 0.5, 3, 20, 59.9, 60, 61, 300), id="a-few-per-number"),
        # One address behind a proxy: thousands of events in the window of one key.
        pytest.param(RateLimit(1000, timedelta(seconds=60)), "a", (0, 0.01, 0.02, 0.05, 1, 61), id="a-hot-address"),
    ],
)
def test_the_waits_are_those_of_every_event_kept_one_by_one(limit: RateLimit, keys: str, steps: tuple[float]) -> None:
    rng = random.Random(3)
    window, kept = KeyedWindow(limit), {}
    now = START
    for _ in range(5000):
        now += timedelta(seconds=rng.choice(steps))
        key = rng.choice(keys)
        pending = rng.choice((0, 0, 1, 2))
        assert window.wait(key, now, pending) == _reference_wait(limit, kept.get(key, []), now, pending)
        if rng.random() < 0.7:
            window.add(key, now)
            kept.setdefault(key, []).append(now)


def test_a_flood_of_distinct_keys_is_forgotten_as_it_leaves_the_window() -> None:
    """Keys whose last event left the window go as new ones come, with no pass over all of them."""
    window = KeyedWindow(LIMIT)
    for n in range(10_000):  # 100 distinct numbers a second for 100 s
        window.add(f"+7916{n:07d}", START + timedelta(seconds=n / 100))
    assert len(window._events) == 6_000  # the last 60 s
    assert window.wait("+79160000000", START + timedelta(seconds=100)) == 0.0
    assert window.wait("+79160009999", START + timedelta(seconds=100), pending=2) > 0
