"""Weekly time windows: when a scenario applies and when a manager is on shift.

A window is a set of weekdays and a span of the day, written ``mon-fri 09:00-18:00``. A span that
ends at or before it starts runs past midnight into the next day (``fri 22:00-02:00`` ends on
Saturday at 02:00), as a night shift does. Times are wall-clock times in the company's zone, so a
shift starts at 09:00 on both sides of a daylight-saving change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 24 * 60
_EVERY_DAY = frozenset(range(7))


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


@dataclass(frozen=True, slots=True)
class Window:
    days: frozenset[int]  # weekdays it starts on; 0 = Monday
    start: int  # minutes after midnight, 0..1439
    end: int  # minutes after midnight, 1..1440; at or before start: ends the next day

    @property
    def overnight(self) -> bool:
        return self.end <= self.start

    def contains(self, weekday: int, minute: int) -> bool:
        if not self.overnight:
            return weekday in self.days and self.start <= minute < self.end
        # The part after midnight belongs to the window that started the day before.
        return (weekday in self.days and minute >= self.start) or ((weekday - 1) % 7 in self.days and minute < self.end)

    def __str__(self) -> str:
        hours = "" if (self.start, self.end) == (0, MINUTES_PER_DAY) else f"{_clock(self.start)}-{_clock(self.end)}"
        return " ".join(part for part in (_days_text(self.days), hours) if part) or "every day"


def _days_text(days: frozenset[int]) -> str:
    if days == _EVERY_DAY:
        return ""
    # Start after a day off, so a run across the weekend reads as one: "sat-mon".
    first = next(day for day in range(7) if (day - 1) % 7 not in days)
    runs: list[list[int]] = []
    for offset in range(7):
        day = (first + offset) % 7
        if day not in days:
            continue
        if runs and (runs[-1][-1] + 1) % 7 == day:
            runs[-1].append(day)
        else:
            runs.append([day])
    return ",".join(DAY_NAMES[run[0]] if len(run) == 1 else f"{DAY_NAMES[run[0]]}-{DAY_NAMES[run[-1]]}" for run in runs)


@dataclass(frozen=True, slots=True)
class Schedule:
    """Any of its windows; the times handed in must already be in the company's zone."""

    windows: tuple[Window, ...]

    def contains(self, local: datetime) -> bool:
        weekday, minute = local.weekday(), local.hour * 60 + local.minute
        return any(window.contains(weekday, minute) for window in self.windows)

    def next_change(self, local: datetime) -> datetime:
        """The first moment after ``local`` at which a window starts or ends.

        Not every such moment flips ``contains`` (two windows may touch); asking again then is
        harmless, and cheaper than proving it.
        """
        zone = local.tzinfo
        today = local.date()
        candidates = []
        # A window's edge is at most a week and a day away (one starting yesterday ends today).
        for offset in range(-1, 8):
            day = today + timedelta(days=offset)
            for window in self.windows:
                if day.weekday() not in window.days:
                    continue
                end_day = day + timedelta(days=1) if window.overnight or window.end == MINUTES_PER_DAY else day
                for on, minute in ((day, window.start), (end_day, window.end % MINUTES_PER_DAY)):
                    edge = datetime.combine(on, time(minute // 60, minute % 60), tzinfo=zone)
                    if edge > local:
                        candidates.append(edge)
        return min(candidates)

    def __str__(self) -> str:
        return ", ".join(str(window) for window in self.windows)
