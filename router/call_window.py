"""When a client may be called: the company's hours and holidays, and the client's own local time.

Two clocks must agree. The company's: working hours (weekdays and spans, ``router.schedule``) in
its time zone, and holiday dates on which nobody is called. The client's: the phone number says
which time zones it may be in (``phonenumbers``); a number that spans several (a country with
one code across many zones) is called only when every one of them is inside the client hours,
the strictest reading, so nobody is woken at 08:00 in the zone we did not guess.

A lead that may not be called now is due at the next allowed minute; when many wait for the same
opening, ``BacklogOrder`` says who is dialled first.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as phone_zones

from router.schedule import Schedule, Window

DEFAULT_CLIENT_HOURS = Schedule((Window(frozenset(range(7)), 9 * 60, 21 * 60),))
# How far ahead an opening is looked for; a window that never opens in a year is a config error.
_HORIZON = timedelta(days=366)


class ClientZone(enum.StrEnum):
    """Where the client hours are read."""

    NUMBER = "number"  # in every zone the phone number may ring in (the strictest)
    COMPANY = "company"  # in the company's zone: for clients known to be local whatever their number says


class BacklogOrder(enum.StrEnum):
    """Who is dialled first among the leads that waited for the same opening."""

    NEWEST_FIRST = "newest_first"  # a fresh lead answers more often
    OLDEST_FIRST = "oldest_first"  # first come, first called


@functools.cache
def client_zones(phone: str) -> tuple[tzinfo, ...]:
    """The time zones a number (E.164) may ring in; () when phonenumbers does not know."""
    try:
        names = phone_zones.time_zones_for_number(phonenumbers.parse(phone, None))
    except phonenumbers.NumberParseException:
        return ()
    zones: list[tzinfo] = []
    for name in names:
        try:
            zones.append(ZoneInfo(name))
        except (ZoneInfoNotFoundError, ValueError):
            continue  # "Etc/Unknown", or a name this system's tz database lacks
    return tuple(zones)


def _minute_up(moment: datetime) -> datetime:
    """The start of the minute ``moment`` is in, or the next one if it is not on it."""
    floor = moment.replace(second=0, microsecond=0)
    return floor if floor == moment else floor + timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class CallWindow:
    zone: tzinfo  # the company's: hours and holidays are read in it
    hours: Schedule | None = None  # company working hours; None: any time
    holidays: frozenset[date] = frozenset()  # company dates on which nobody is called
    client_hours: Schedule = DEFAULT_CLIENT_HOURS  # in the client's own zone(s)
    backlog: BacklogOrder = BacklogOrder.NEWEST_FIRST
    client_zone: ClientZone = ClientZone.NUMBER

    def describe(self) -> str:
        hours = "any time" if self.hours is None else str(self.hours)
        days_off = f", not on {len(self.holidays)} holiday(s)" if self.holidays else ""
        where = "every zone of the number" if self.client_zone is ClientZone.NUMBER else f"{self.zone}"
        return (
            f"{hours} in {self.zone}{days_off}; clients {self.client_hours} in {where}; "
            f"backlog {self.backlog.value.replace('_', ' ')}"
        )

    def allows(self, moment: datetime, zones: Sequence[tzinfo]) -> bool:
        local = moment.astimezone(self.zone)
        if local.date() in self.holidays:
            return False
        if self.hours is not None and not self.hours.contains(local):
            return False
        return all(self.client_hours.contains(moment.astimezone(zone)) for zone in self._zones(zones))

    def next_allowed(self, moment: datetime, zones: Sequence[tzinfo]) -> datetime | None:
        """``moment`` if calling is allowed then, else the first whole minute after it that is; None
        if none is within a year (every day a holiday, say)."""
        if self.allows(moment, zones):
            return moment
        candidate = _minute_up(moment)
        limit = moment + _HORIZON
        while candidate <= limit:
            if self.allows(candidate, zones):
                return candidate
            candidate = self._next_edge(candidate, zones)
        return None

    def _zones(self, zones: Sequence[tzinfo]) -> Sequence[tzinfo]:
        # A number phonenumbers cannot place is taken to be in the company's zone.
        return zones if zones and self.client_zone is ClientZone.NUMBER else (self.zone,)

    def _next_edge(self, moment: datetime, zones: Sequence[tzinfo]) -> datetime:
        """The first moment after ``moment`` at which any of the clocks involved may change its
        answer: an edge of the company's hours, of the client hours in one of his zones, or a
        midnight in the company's zone (a holiday begins or ends). Compared in UTC: aware times of
        one zone compare by wall clock, which a daylight-saving change makes ambiguous."""
        local = moment.astimezone(self.zone)
        next_day = datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=self.zone)
        edges = [next_day.astimezone(UTC)]
        if self.hours is not None:
            edges.append(self.hours.next_change(local).astimezone(UTC))
        involved = (self.zone, *self._zones(zones))
        for zone in involved[1:]:
            edges.append(self.client_hours.next_change(moment.astimezone(zone)).astimezone(UTC))
        later = [edge for edge in edges if edge > moment]
        nearest = min(later) if later else moment + timedelta(minutes=1)
        if any(moment.astimezone(zone).utcoffset() != nearest.astimezone(zone).utcoffset() for zone in involved):
            # A clock jumps before that edge: the wall time it jumps to may already be inside a
            # window (an edge in the skipped hour maps past it). Clocks change on the hour or half
            # hour in UTC, so look again at the next half hour.
            start = moment.astimezone(UTC)
            half_hour = start.replace(minute=30 if start.minute < 30 else 0, second=0, microsecond=0)
            if half_hour <= start:
                half_hour += timedelta(hours=1)
            nearest = min(nearest, half_hour)
        return _minute_up(nearest)
