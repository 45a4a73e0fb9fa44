"""Weekly windows: which moments they hold, when they next start or end, how they read back."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from router.schedule import MINUTES_PER_DAY, Schedule, Window

MOSCOW = ZoneInfo("Europe/Moscow")
BERLIN = ZoneInfo("Europe/Berlin")
WEEKDAYS = frozenset(range(5))
OFFICE = Window(WEEKDAYS, 9 * 60, 18 * 60)
FRIDAY_NIGHT = Window(frozenset({4}), 22 * 60, 2 * 60)
SATURDAY = Window(frozenset({5}), 0, MINUTES_PER_DAY)


def moscow(day: int, hour: int, minute: int = 0) -> datetime:
    """A time in November 2026; the 23rd is a Monday."""
    return datetime(2026, 11, day, hour, minute, tzinfo=MOSCOW)


def test_a_day_window_holds_from_its_start_until_just_before_its_end() -> None:
    office = Schedule((OFFICE,))
    assert not office.contains(moscow(23, 8, 59))
    assert office.contains(moscow(23, 9, 0))
    assert office.contains(moscow(23, 17, 59))
    assert not office.contains(moscow(23, 18, 0))
    assert not office.contains(moscow(28, 12))  # Saturday


def test_a_window_ending_before_it_starts_runs_into_the_next_day() -> None:
    night = Schedule((FRIDAY_NIGHT,))
    assert not night.contains(moscow(27, 21, 59))
    assert night.contains(moscow(27, 23, 30))  # Friday night
    assert night.contains(moscow(28, 1, 59))  # Saturday morning, same shift
    assert not night.contains(moscow(28, 2, 0))
    assert not night.contains(moscow(28, 23, 0))  # Saturday night is not a Friday shift
    assert not night.contains(moscow(23, 1, 0))  # nor is Monday morning


def test_any_window_of_a_schedule_holds() -> None:
    week = Schedule((OFFICE, SATURDAY))
    assert week.contains(moscow(28, 0, 0)) and week.contains(moscow(28, 23, 59))
    assert week.contains(moscow(24, 10)) and not week.contains(moscow(29, 10))


def test_the_next_change_is_the_nearest_start_or_end() -> None:
    office = Schedule((OFFICE,))
    assert office.next_change(moscow(23, 8, 0)) == moscow(23, 9)
    assert office.next_change(moscow(23, 9, 0)) == moscow(23, 18)  # strictly after
    assert office.next_change(moscow(27, 18, 0)) == moscow(30, 9)  # Friday evening: Monday
    night = Schedule((FRIDAY_NIGHT,))
    assert night.next_change(moscow(27, 23)) == moscow(28, 2)
    assert night.next_change(moscow(28, 2)) == datetime(2026, 12, 4, 22, tzinfo=MOSCOW)
    assert Schedule((SATURDAY,)).next_change(moscow(28, 12)) == moscow(29, 0)


def test_hours_are_wall_clock_hours_across_a_daylight_saving_change() -> None:
    # Berlin moves its clocks back on 25 October 2026: the shift still starts at 09:00 there.
    office = Schedule((OFFICE,))
    friday_evening = datetime(2026, 10, 23, 18, 0, tzinfo=BERLIN)
    monday = office.next_change(friday_evening)
    assert (monday.day, monday.hour, monday.utcoffset()) == (26, 9, datetime(2026, 10, 26, tzinfo=BERLIN).utcoffset())
    assert office.contains(datetime(2026, 10, 26, 9, 0, tzinfo=BERLIN))


def test_windows_read_back_as_written() -> None:
    assert str(OFFICE) == "mon-fri 09:00-18:00"
    assert str(FRIDAY_NIGHT) == "fri 22:00-02:00"
    assert str(SATURDAY) == "sat"
    assert str(Window(frozenset(range(7)), 8 * 60, 20 * 60)) == "08:00-20:00"
    assert str(Window(frozenset({0, 2, 4, 5, 6}), 0, 12 * 60)) == "wed,fri-mon 00:00-12:00"
    assert str(Schedule((OFFICE, SATURDAY))) == "mon-fri 09:00-18:00, sat"
