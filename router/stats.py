"""Supervisors' figures: how long each manager talked in a period, how many calls, the average."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from router.routing import Manager


@dataclass(frozen=True, slots=True)
class ManagerStats:
    manager_id: str
    calls: int  # calls in which the manager talked to the client
    talk_seconds: float
    average_talk_seconds: float
    name: str = ""


@dataclass(frozen=True, slots=True)
class DayStats:
    """One calendar day in a supervisor's time zone: its UTC interval and every manager's figures."""

    day: date
    zone: tzinfo
    start: datetime
    end: datetime
    managers: list[ManagerStats]


def day_bounds(day: date, tz: tzinfo) -> tuple[datetime, datetime]:
    """The UTC interval of one calendar day in the supervisor's time zone."""
    start = datetime.combine(day, time(), tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=tz)
    return start.astimezone(UTC), end.astimezone(UTC)


def with_every_manager(managers: Iterable[Manager], rows: Iterable[ManagerStats]) -> list[ManagerStats]:
    """Rows for every configured manager (idle ones with zeros), then any others who talked."""
    by_id = {row.manager_id: row for row in rows}
    table = []
    for manager in managers:
        row = by_id.pop(manager.id, None)
        table.append(
            ManagerStats(manager.id, row.calls, row.talk_seconds, row.average_talk_seconds, manager.name)
            if row
            else ManagerStats(manager.id, 0, 0.0, 0.0, manager.name)
        )
    return table + sorted(by_id.values(), key=lambda row: row.manager_id)


def hms(seconds: float) -> str:
    """``3725.4`` -> ``1:02:05``, as supervisors read durations."""
    whole = round(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"
