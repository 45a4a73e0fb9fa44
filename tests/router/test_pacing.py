"""Pacing: how many clients are dialled for the free managers, from what the last minutes measured."""

from __future__ import annotations

import math
import random

from router.pacing import Floor, Pacing, PacingMeter, PacingMode, PacingReading, clients_to_dial
from router.stats import HourFigures, abandons

PREDICTIVE = Pacing(mode=PacingMode.PREDICTIVE, abandon_cap=0.03, window=600, max_ratio=4, min_sample=20)


def reading(attempts: int = 100, answered: int = 30, abandoned: int = 0, mean_talk: float = 60) -> PacingReading:
    return PacingReading(attempts, answered, abandoned, talks=answered, talk_seconds=answered * mean_talk)


def floor(free: int = 5, holding: int = 0, ringing: int = 0, talking: int = 0, hold_limit: float = 20) -> Floor:
    return Floor(free=free, holding=holding, ringing=ringing, talking=talking, hold_limit=hold_limit)


def test_progressive_dials_one_client_per_free_manager_not_spoken_for() -> None:
    assert clients_to_dial(Pacing(), reading(), floor(free=5, holding=1, ringing=2)) == 2


def test_predictive_dials_progressively_until_the_window_has_enough_attempts() -> None:
    assert clients_to_dial(PREDICTIVE, reading(attempts=19, answered=5), floor(free=5)) == 5


def test_predictive_dials_ahead_when_few_answer_but_not_when_most_do() -> None:
    low = clients_to_dial(PREDICTIVE, reading(answered=30), floor(free=5))
    high = clients_to_dial(PREDICTIVE, reading(answered=95), floor(free=5))
    assert 5 < low <= 20 and high == 5


def test_the_expected_abandon_share_of_what_it_dials_stays_within_half_the_cap() -> None:
    # Exactly: E[max(0, X - 5)] / E[X] for X ~ Binomial(n, 0.3) at the n chosen, and at n + 1.
    def share(ringing: int) -> float:
        p = 0.3
        over = sum((k - 5) * math.comb(ringing, k) * p**k * (1 - p) ** (ringing - k) for k in range(6, ringing + 1))
        return over / (ringing * p)

    chosen = clients_to_dial(PREDICTIVE, reading(answered=30), floor(free=5))
    assert share(chosen) <= 0.015 < share(chosen + 1)


def test_managers_about_to_finish_a_talk_count_and_clients_ringing_already_are_subtracted() -> None:
    idle = clients_to_dial(PREDICTIVE, reading(), floor(free=2))
    with_talkers = clients_to_dial(PREDICTIVE, reading(), floor(free=2, talking=6))
    assert with_talkers > idle
    assert clients_to_dial(PREDICTIVE, reading(), floor(free=2, talking=6, ringing=3)) == with_talkers - 3


def test_a_measured_abandon_rate_over_the_cap_dials_more_cautiously() -> None:
    calm = clients_to_dial(PREDICTIVE, reading(answered=30, abandoned=0), floor(free=8))
    burnt = clients_to_dial(PREDICTIVE, reading(answered=30, abandoned=3), floor(free=8))  # 10 %
    assert 8 <= burnt < calm


def test_never_more_than_max_ratio_per_manager_nor_fewer_than_progressive() -> None:
    nobody_answers = reading(attempts=100, answered=1)
    assert clients_to_dial(PREDICTIVE, nobody_answers, floor(free=3)) <= 12
    assert clients_to_dial(PREDICTIVE, reading(), floor(free=0, holding=2)) == -2  # none: clients wait


def test_the_meter_forgets_attempts_older_than_the_window() -> None:
    meter = PacingMeter(PREDICTIVE)
    rng = random.Random(1)
    for second in range(0, 1200, 10):
        answered = rng.random() < 0.3
        meter.ended(second, answered=answered, abandoned=False, talk=60.0 if answered else None)
    now = meter.reading(1200)
    assert now.attempts == 60  # the last 600 s
    assert now.mean_talk == 60.0 and now.abandon_rate == 0.0
    meter.ended(1201, answered=True, abandoned=True, talk=None)
    assert meter.reading(1201).abandoned == 1
    assert meter.reading(1900).attempts == 0


def test_the_stats_abandon_rate_is_the_share_of_answered_clients_who_never_talked_to_a_manager() -> None:
    hours = [HourFigures(9, calls=40, answered=12, bridged=11, talk_seconds=600), HourFigures(10, 30, 8, 8, 400)]
    found = abandons(hours)
    assert (found.answered, found.without_manager, found.rate_pct) == (20, 1, 5.0)
    assert abandons([]).rate_pct == 0.0


def test_the_meter_reads_what_every_attempt_kept_one_by_one_would_give() -> None:
    """Counted per whole second as attempts end: the same readings as keeping each attempt and
    counting those whose second ended within the window, read at any moment."""
    rng = random.Random(7)
    meter, kept = PacingMeter(PREDICTIVE), []
    at = 0.0
    for _ in range(3000):
        at += rng.choice((0.0, 0.01, 0.4, 1.0, 3.7, 45.0))
        answered = rng.random() < 0.4
        talk = rng.choice((None, 12.5, 300.0)) if answered else None
        abandoned = rng.random() < 0.2
        meter.ended(at, answered=answered, abandoned=abandoned, talk=talk)
        kept.append((at, answered, abandoned and answered, talk))
        if rng.random() < 0.1:
            at = now = at + rng.choice((0.0, 0.5, 200.0, 599.0, 900.0))  # the clock is monotonic
            window = [k for k in kept if math.floor(k[0]) + 1 > now - PREDICTIVE.window]
            talks = [k[3] for k in window if k[3] is not None]
            got = meter.reading(now)
            assert (got.attempts, got.answered, got.abandoned, got.talks) == (
                len(window),
                sum(k[1] for k in window),
                sum(k[2] for k in window),
                len(talks),
            )
            assert math.isclose(got.talk_seconds, sum(talks), abs_tol=1e-6)


def test_the_meter_holds_a_bucket_per_second_of_the_window_however_many_attempts_end_unread() -> None:
    """Progressive pacing never reads the meter: attempts that left the window go as others end."""
    meter = PacingMeter(PREDICTIVE)
    for n in range(200 * 3000):  # 200 attempts a second for 3,000 s, never read
        meter.ended(n / 200, answered=True, abandoned=False, talk=30.0)
    assert len(meter._seconds) <= PREDICTIVE.window + 1
    assert meter.reading(3000).attempts == 200 * PREDICTIVE.window
