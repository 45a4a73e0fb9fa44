"""Supervisors' figures: per manager, per lead source and scenario, speed-to-lead, fairness, hours.

Pure: storage hands in rows, these rules turn them into what supervisors read."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from router.board import ManagerState
from router.routing import Manager

# The days a period may cover: each one's next day and UTC bounds exist in every zone
# (date.max + 1 day overflows).
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(9999, 12, 30)


@dataclass(frozen=True, slots=True)
class ManagerStats:
    manager_id: str
    calls: int  # calls in which the manager talked to the client
    talk_seconds: float
    average_talk_seconds: float
    name: str = ""


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


# -- supervisors' report over any period (issue 9) -------------------------------------------


@dataclass(frozen=True, slots=True)
class Period:
    """Whole calendar days ``first``..``last`` (inclusive) in the company's zone, and their UTC interval."""

    first: date
    last: date
    zone: tzinfo
    start: datetime
    end: datetime

    @classmethod
    def of_days(cls, first: date, last: date, zone: tzinfo) -> Period:
        if last < first:
            raise ValueError(f"the period ends ({last}) before it starts ({first})")
        # Each bound on its own: a period crossing a DST change is 23 or 25 hours longer or shorter.
        return cls(first, last, zone, day_bounds(first, zone)[0], day_bounds(last, zone)[1])

    @classmethod
    def named(cls, name: str, today: date, zone: tzinfo) -> Period:
        """``today``, ``week`` (Monday to Sunday) or ``month``: the calendar one holding ``today``."""
        if name == "today":
            return cls.of_days(today, today, zone)
        if name == "week":
            monday = today - timedelta(days=today.weekday())
            return cls.of_days(monday, monday + timedelta(days=6), zone)
        if name == "month":
            first = today.replace(day=1)
            next_month = (first + timedelta(days=32)).replace(day=1)
            return cls.of_days(first, next_month - timedelta(days=1), zone)
        raise ValueError(f"unknown period {name!r}: today, week or month")


PERIODS = ("today", "week", "month")


@dataclass(frozen=True, slots=True)
class ManagerTalk:
    """What the calls table says of one manager in a period (storage fills it)."""

    manager_id: str
    calls: int  # calls bridged to him in the period
    talk_seconds: float  # talk within the period: a call across its bound counts only its part inside
    whole_talk_seconds: float  # the whole length of the calls counted, for the average
    longest_talk_seconds: float
    first_call: datetime | None
    last_call: datetime | None


@dataclass(frozen=True, slots=True)
class ManagerOffers:
    manager_id: str
    offers: int  # his phone was rung with a client on hold
    answered: int
    missed: int  # no answer, busy or unavailable; a client who hung up first is nobody's miss


@dataclass(frozen=True, slots=True)
class ManagerLeads:
    manager_id: str
    owned: int  # leads created in the period that he owns now
    won: int
    lost: int


@dataclass(frozen=True, slots=True)
class ManagerFigures:
    manager_id: str
    name: str
    weight: int | None  # None: not in routing.yaml (any more)
    offers: int = 0
    answered: int = 0
    missed: int = 0
    calls: int = 0
    talk_seconds: float = 0.0
    average_talk_seconds: float = 0.0
    longest_talk_seconds: float = 0.0
    first_call: datetime | None = None
    last_call: datetime | None = None
    leads_owned: int = 0
    won: int = 0
    lost: int = 0


def manager_figures(
    managers: Iterable[Manager],
    talk: Iterable[ManagerTalk],
    offers: Iterable[ManagerOffers],
    owned: Iterable[ManagerLeads],
) -> list[ManagerFigures]:
    """Every configured manager in routing.yaml's order (idle ones with zeros), then others who appear."""
    talk_by = {row.manager_id: row for row in talk}
    offers_by = {row.manager_id: row for row in offers}
    owned_by = {row.manager_id: row for row in owned}
    configured = {m.id: m for m in managers}
    others = sorted((set(talk_by) | set(offers_by) | set(owned_by)) - set(configured))
    table = []
    for manager_id in [*configured, *others]:
        manager = configured.get(manager_id)
        t, o, w = talk_by.get(manager_id), offers_by.get(manager_id), owned_by.get(manager_id)
        table.append(
            ManagerFigures(
                manager_id=manager_id,
                name=manager.name if manager else "",
                weight=manager.weight if manager else None,
                offers=o.offers if o else 0,
                answered=o.answered if o else 0,
                missed=o.missed if o else 0,
                calls=t.calls if t else 0,
                talk_seconds=round(t.talk_seconds, 3) if t else 0.0,
                average_talk_seconds=round(t.whole_talk_seconds / t.calls, 3) if t and t.calls else 0.0,
                longest_talk_seconds=round(t.longest_talk_seconds, 3) if t else 0.0,
                first_call=t.first_call if t else None,
                last_call=t.last_call if t else None,
                leads_owned=w.owned if w else 0,
                won=w.won if w else 0,
                lost=w.lost if w else 0,
            )
        )
    return table


@dataclass(frozen=True, slots=True)
class LeadJourney:
    """One lead created in the period and the first time each step happened (storage fills it)."""

    lead_id: int
    source: str
    scenario: str | None  # of its first call; None while it was never dialled
    # Seconds from the lead's creation to the first time each step happened, None while it has not:
    to_dial: float | None
    to_answer: float | None  # the client picked up
    to_bridge: float | None  # a manager was on the line with him
    won: bool
    status: str


@dataclass(frozen=True, slots=True)
class GroupFigures:
    key: str  # the source or the scenario
    leads: int
    reached: int  # the client answered at least once
    assigned: int  # a manager talked to him
    won: int

    @property
    def reached_pct(self) -> float:
        return _pct(self.reached, self.leads)

    @property
    def assigned_pct(self) -> float:
        return _pct(self.assigned, self.leads)

    @property
    def won_pct(self) -> float:
        return _pct(self.won, self.leads)


NOT_DIALLED = "(not dialled)"  # the scenario of a lead no call was made for yet


def _pct(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 1) if whole else 0.0


def group_figures(journeys: Iterable[LeadJourney], key: Callable[[LeadJourney], str]) -> list[GroupFigures]:
    counts: dict[str, list[int]] = {}
    for j in journeys:
        row = counts.setdefault(key(j), [0, 0, 0, 0])
        row[0] += 1
        row[1] += j.to_answer is not None
        row[2] += j.to_bridge is not None
        row[3] += j.won
    return [GroupFigures(k, *row) for k, row in sorted(counts.items())]


@dataclass(frozen=True, slots=True)
class Spread:
    """Seconds from a lead's creation to one step: how many leads got there, p50, p90, the slowest."""

    leads: int
    p50: float | None
    p90: float | None
    max: float | None


def spread(seconds: Iterable[float]) -> Spread:
    """Nearest-rank percentiles: each one is a lead's real figure, never an interpolation between two."""
    ordered = sorted(seconds)
    if not ordered:
        return Spread(0, None, None, None)

    def rank(p: float) -> float:
        return round(ordered[max(math.ceil(p * len(ordered)) - 1, 0)], 3)

    return Spread(len(ordered), rank(0.5), rank(0.9), round(ordered[-1], 3))


@dataclass(frozen=True, slots=True)
class SpeedToLead:
    first_dial: Spread
    client_answered: Spread
    manager_bridged: Spread


def speed_to_lead(journeys: Sequence[LeadJourney]) -> SpeedToLead:
    return SpeedToLead(
        spread(j.to_dial for j in journeys if j.to_dial is not None),
        spread(j.to_answer for j in journeys if j.to_answer is not None),
        spread(j.to_bridge for j in journeys if j.to_bridge is not None),
    )


@dataclass(frozen=True, slots=True)
class NeverReached:
    leads: int
    by_status: dict[str, int]  # failed (given up), scheduled (will be tried again), new...
    lead_ids: list[int]  # the oldest first, at most NEVER_REACHED_LISTED


NEVER_REACHED_LISTED = 100


def never_reached(journeys: Iterable[LeadJourney]) -> NeverReached:
    missed = sorted((j for j in journeys if j.to_answer is None), key=lambda j: j.lead_id)  # ids grow with time
    by_status: dict[str, int] = {}
    for j in missed:
        by_status[j.status] = by_status.get(j.status, 0) + 1
    return NeverReached(
        len(missed), dict(sorted(by_status.items())), [j.lead_id for j in missed][:NEVER_REACHED_LISTED]
    )


@dataclass(frozen=True, slots=True)
class Fairness:
    """How evenly leads went to managers who should get the same number: those of one weight."""

    weight: int
    managers: int
    leads: int
    max_share: float  # percent of the group's leads the best served manager owns
    min_share: float
    ratio: float | None  # max / min; None when someone got none while another got some


def fairness(figures: Iterable[ManagerFigures]) -> list[Fairness]:
    groups: dict[int, list[int]] = {}
    for row in figures:
        if row.weight is not None:
            groups.setdefault(row.weight, []).append(row.leads_owned)
    result = []
    for weight, owned in sorted(groups.items()):
        total = sum(owned)
        if len(owned) < 2 or total == 0:
            continue  # nothing to compare
        most, least = max(owned), min(owned)
        result.append(
            Fairness(
                weight,
                len(owned),
                total,
                _pct(most, total),
                _pct(least, total),
                round(most / least, 2) if least else None,
            )
        )
    return result


@dataclass(frozen=True, slots=True)
class HourFigures:
    hour: int  # 0..23 in the company's zone
    calls: int  # dial attempts started in that hour
    answered: int
    bridged: int
    talk_seconds: float  # of the calls started in that hour


def hours_of_day(quarters: Iterable[tuple[datetime, int, int, int, float]], zone: tzinfo) -> list[HourFigures]:
    """Counts per UTC quarter hour (start, calls, answered, bridged, talk) folded onto the company's 24 hours.

    Each quarter is placed by its own offset, so a period across a DST change is right on both sides.
    """
    hours = [[0, 0, 0, 0.0] for _ in range(24)]
    for at, count, answered, bridged, talk in quarters:
        row = hours[at.astimezone(zone).hour]
        row[0] += count
        row[1] += answered
        row[2] += bridged
        row[3] += talk
    return [HourFigures(h, int(r[0]), int(r[1]), int(r[2]), round(r[3], 3)) for h, r in enumerate(hours)]


@dataclass(frozen=True, slots=True)
class Abandons:
    """Answered clients who never talked to a manager: given up after the hold limit, or hanging
    up while they waited. Predictive pacing keeps their share under its cap (router.pacing)."""

    answered: int
    without_manager: int

    @property
    def rate_pct(self) -> float:
        return _pct(self.without_manager, self.answered)


def abandons(hours: Iterable[HourFigures]) -> Abandons:
    answered = bridged = 0
    for hour in hours:
        answered += hour.answered
        bridged += hour.bridged
    return Abandons(answered, answered - bridged)


@dataclass(frozen=True, slots=True)
class StatsReport:
    period: Period
    managers: list[ManagerFigures]
    sources: list[GroupFigures]
    scenarios: list[GroupFigures]
    speed_to_lead: SpeedToLead
    never_reached: NeverReached
    fairness: list[Fairness]
    hours: list[HourFigures]
    abandons: Abandons


def build_report(
    period: Period,
    managers: list[ManagerFigures],
    journeys: Sequence[LeadJourney],
    hours: list[HourFigures],
) -> StatsReport:
    return StatsReport(
        period=period,
        managers=managers,
        sources=group_figures(journeys, lambda j: j.source),
        scenarios=group_figures(journeys, lambda j: j.scenario or NOT_DIALLED),
        speed_to_lead=speed_to_lead(journeys),
        never_reached=never_reached(journeys),
        fairness=fairness(managers),
        hours=hours,
        abandons=abandons(hours),
    )


@dataclass(frozen=True, slots=True)
class StateSeconds:
    """How long one manager was in one state within a period (storage sums his state changes)."""

    manager_id: str
    state: str  # a ManagerState value
    seconds: float


# -- the tables supervisors download: one definition of the columns for API, CSV and CLI ----------

BY = ("manager", "source", "scenario", "hour")  # the report's tables; the managers' states are read apart


def state_rows(managers: Iterable[Manager], spans: Iterable[StateSeconds]) -> list[dict[str, object]]:
    """Per manager, seconds in each state: every configured manager (one never seen with zeros),
    then others the changes name; ``known_seconds`` is all the time his state was known."""
    seconds: dict[str, dict[str, float]] = {}
    for span in spans:
        mine = seconds.setdefault(span.manager_id, {})
        mine[span.state] = mine.get(span.state, 0.0) + span.seconds
    names = {m.id: m.name for m in managers}
    rows: list[dict[str, object]] = []
    for manager_id in [*names, *sorted(seconds.keys() - names.keys())]:
        mine = seconds.get(manager_id, {})
        rows.append(
            {
                "manager_id": manager_id,
                "name": names.get(manager_id, ""),
                **{f"{state.value}_seconds": round(mine.get(state.value, 0.0), 3) for state in ManagerState},
                "known_seconds": round(sum(mine.values(), 0.0), 3),
            }
        )
    return rows


def manager_rows(figures: Iterable[ManagerFigures], zone: tzinfo) -> list[dict[str, object]]:
    def local(at: datetime | None) -> str | None:
        return at.astimezone(zone).isoformat() if at else None

    return [
        {
            "manager_id": m.manager_id,
            "name": m.name,
            "offers": m.offers,
            "answered": m.answered,
            "missed": m.missed,
            "calls": m.calls,
            "talk_seconds": m.talk_seconds,
            "average_talk_seconds": m.average_talk_seconds,
            "longest_talk_seconds": m.longest_talk_seconds,
            "first_call": local(m.first_call),
            "last_call": local(m.last_call),
            "leads_owned": m.leads_owned,
            "won": m.won,
            "lost": m.lost,
        }
        for m in figures
    ]


def group_rows(groups: Iterable[GroupFigures], key: str) -> list[dict[str, object]]:
    return [
        {
            key: g.key,
            "leads": g.leads,
            "reached": g.reached,
            "assigned": g.assigned,
            "won": g.won,
            "reached_pct": g.reached_pct,
            "assigned_pct": g.assigned_pct,
            "won_pct": g.won_pct,
        }
        for g in groups
    ]


def hour_rows(hours: Iterable[HourFigures]) -> list[dict[str, object]]:
    return [
        {"hour": h.hour, "calls": h.calls, "answered": h.answered, "bridged": h.bridged, "talk_seconds": h.talk_seconds}
        for h in hours
    ]


def rows_by(report: StatsReport, by: str) -> list[dict[str, object]]:
    """The report's table ``by`` manager, source, scenario or hour."""
    if by == "manager":
        return manager_rows(report.managers, report.period.zone)
    if by == "source":
        return group_rows(report.sources, "source")
    if by == "scenario":
        return group_rows(report.scenarios, "scenario")
    if by == "hour":
        return hour_rows(report.hours)
    raise ValueError(f"unknown table {by!r}: one of {', '.join(BY)}")


def report_summary(report: StatsReport) -> dict[str, object]:
    """Everything but the tables: the period, speed-to-lead, leads never reached, fairness."""
    period = report.period
    return {
        "first_day": period.first.isoformat(),
        "last_day": period.last.isoformat(),
        "zone": str(period.zone),
        "from": period.start.isoformat(),
        "to": period.end.isoformat(),
        "speed_to_lead": {
            step: {"leads": s.leads, "p50": s.p50, "p90": s.p90, "max": s.max}
            for step, s in (
                ("first_dial", report.speed_to_lead.first_dial),
                ("client_answered", report.speed_to_lead.client_answered),
                ("manager_bridged", report.speed_to_lead.manager_bridged),
            )
        },
        "never_reached": {
            "leads": report.never_reached.leads,
            "by_status": report.never_reached.by_status,
            "lead_ids": report.never_reached.lead_ids,
        },
        "abandons": {
            "answered": report.abandons.answered,
            "without_manager": report.abandons.without_manager,
            "rate_pct": report.abandons.rate_pct,
        },
        "fairness": [
            {
                "weight": f.weight,
                "managers": f.managers,
                "leads": f.leads,
                "max_share_pct": f.max_share,
                "min_share_pct": f.min_share,
                "ratio": f.ratio,
            }
            for f in report.fairness
        ],
    }


def csv_text(rows: Sequence[dict[str, object]]) -> str:
    """RFC 4180 CSV with a header line; empty values for None."""
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\r\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return out.getvalue()
