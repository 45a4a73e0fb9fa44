"""One month of per-manager stats over 1,000,000 stored calls and 200 managers, on SQLite.

The database: 1,000,000 calls spread evenly over six months (about 167,000 in the month asked
for), 200 managers; 60% of calls answered, of those 85% bridged after one or two manager legs
(1,000,000 legs in all), talk 20..900 s, a lead for every two calls, a third of the leads with a
CRM outcome. Calls run through the day in Moscow time, so some cross midnight.

Timed (median of 7, the database warm in the page cache as on a server that serves stats):
- ours: ``SqlStats.manager_rows`` + ``manager_figures``, the figures ``GET /stats/managers`` serves
  for a month (offers, answered, missed, calls, talk split at the bounds, average, longest, first
  and last call, leads owned, won, lost);
- the naive peer in the same run: the month's calls, legs and leads read row by row and summed in
  Python (what one writes first), same figures, on the same indexes;
- for information, the whole report (sources, scenarios, speed-to-lead, hours) of the month.

Bar (DESIGN.md §6): ours ≤ 300 ms. The database is built once into var/bench/ (about a minute)
and reused while its schema revision is the same.

Run: .venv/bin/python -m bench.stats_month
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from router.routing import Manager
from router.stats import ManagerFigures, Period, build_report, hours_of_day, manager_figures
from storage.engine import Database
from storage.schema import call_legs, calls, leads
from storage.stats import LONGEST_TALK, SqlStats

CALLS = 1_000_000
MANAGERS = 200
MONTHS = 6
FIRST_DAY = date(2026, 6, 1)
MONTH = (date(2026, 9, 1), date(2026, 9, 30))
ZONE = ZoneInfo("Europe/Moscow")
RUNS = 7
BAR_MS = 300.0
PATH = Path("var/bench/stats_month.db")
REVISION = "0004"


def _fmt(at: datetime) -> str:
    """As SQLAlchemy stores a DateTime on SQLite (UTC wall time)."""
    return at.strftime("%Y-%m-%d %H:%M:%S.%f")


def _build(path: Path, total_calls: int = CALLS) -> None:
    rng = random.Random(9)
    span = (date(2026, 12, 1) - FIRST_DAY).days * 86400
    t0 = datetime.combine(FIRST_DAY, datetime.min.time(), tzinfo=ZONE).astimezone(UTC)
    con = sqlite3.connect(path)
    con.execute("PRAGMA synchronous=OFF")
    lead_rows: list[tuple[Any, ...]] = []
    call_rows: list[tuple[Any, ...]] = []
    leg_rows: list[tuple[Any, ...]] = []
    for lead_id in range(1, total_calls // 2 + 1):
        created = t0 + timedelta(seconds=rng.uniform(0, span))
        owner = None
        for attempt in (1, 2):
            call_id = (lead_id - 1) * 2 + attempt
            started = created + timedelta(seconds=rng.uniform(5, 600) + (attempt - 1) * 3600)
            answered = bridged = ended = manager = None
            talk = None
            if rng.random() < 0.6:
                answered = started + timedelta(seconds=rng.uniform(3, 25))
                first = f"m{rng.randrange(MANAGERS)}"
                if rng.random() < 0.85:
                    manager = first
                    if rng.random() < 0.3:  # the first manager missed it, another took it
                        leg_rows.append((call_id, 1, first, _fmt(answered), None, None, "no_answer"))
                        manager = f"m{rng.randrange(MANAGERS)}"
                    bridged = answered + timedelta(seconds=rng.uniform(5, 40))
                    talk = rng.uniform(20, 900)
                    ended = bridged + timedelta(seconds=talk)
                    leg_rows.append(
                        (
                            call_id,
                            2,
                            manager,
                            _fmt(bridged - timedelta(seconds=4)),
                            _fmt(bridged),
                            _fmt(ended),
                            "answered",
                        )
                    )
                    owner = manager
                else:
                    ended = answered + timedelta(seconds=rng.uniform(5, 60))
            else:
                ended = started + timedelta(seconds=rng.uniform(5, 40))
            call_rows.append(
                (
                    call_id,
                    lead_id,
                    attempt,
                    "default",
                    f"lr-{call_id}",
                    "+79160000000",
                    "ended",
                    _fmt(started),
                    answered and _fmt(answered),
                    bridged and _fmt(bridged),
                    _fmt(ended),
                    manager,
                    "completed" if bridged else "no_answer",
                    talk,
                )
            )
        outcome = rng.choice(("won", "lost", None)) if owner else None
        lead_rows.append(
            (
                lead_id,
                "+79160000000",
                "",
                f"src{lead_id % 7}",
                "{}",
                "assigned" if owner else "failed",
                owner,
                2,
                _fmt(created),
                outcome,
            )
        )
    con.executemany(
        "INSERT INTO leads (id, phone, name, source, payload, status, owner_id, attempts, created_at, outcome)"
        " VALUES (?,?,?,?,?,?,?,?,?,?)",
        lead_rows,
    )
    con.executemany(
        "INSERT INTO calls (id, lead_id, attempt, scenario, channel_id, phone, state, started_at, answered_at,"
        " bridged_at, ended_at, manager_id, disposition, talk_seconds) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        call_rows,
    )
    con.executemany(
        "INSERT INTO call_legs (call_id, leg_no, manager_id, started_at, answered_at, ended_at, result)"
        " VALUES (?,?,?,?,?,?,?)",
        leg_rows,
    )
    con.commit()
    con.execute("ANALYZE")
    con.close()


async def _database(total_calls: int = CALLS) -> Database:
    size = "" if total_calls == CALLS else f".{total_calls}"
    fresh = PATH.with_suffix(f"{size}.{REVISION}.db")
    if not fresh.exists():
        print(f"building {fresh} ({total_calls:,} calls; once)...", file=sys.stderr, flush=True)
        fresh.parent.mkdir(parents=True, exist_ok=True)
        async with Database(f"sqlite+aiosqlite:///{fresh}") as db:  # closed before the rows go in
            await db.migrate()
        _build(fresh, total_calls)
    return Database(f"sqlite+aiosqlite:///{fresh}")


async def naive(db: Database, period: Period, managers: list[Manager]) -> list[ManagerFigures]:
    """The month's rows into Python, summed there: the peer every figure is compared with."""
    talk: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0, 0.0])
    first: dict[str, datetime] = {}
    last: dict[str, datetime] = {}
    offers: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    owned: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    c, lg, ld = calls.c, call_legs.c, leads.c
    async with db.read() as conn:
        query = select(c.manager_id, c.bridged_at, c.ended_at, c.talk_seconds).where(
            c.bridged_at >= period.start - LONGEST_TALK, c.bridged_at < period.end
        )
        for manager_id, bridged, ended, seconds in await conn.execute(query):
            row = talk[manager_id]
            seconds = seconds or 0.0
            if bridged >= period.start:
                row[0] += 1
                row[2] += seconds
                row[3] = max(row[3], seconds)
                first[manager_id] = min(first.get(manager_id, bridged), bridged)
                last[manager_id] = max(last.get(manager_id, bridged), bridged)
            if ended is not None:
                inside = (min(ended, period.end) - max(bridged, period.start)).total_seconds()
                row[1] += max(min(inside, seconds), 0.0)
        legs = select(lg.manager_id, lg.result).where(lg.started_at >= period.start, lg.started_at < period.end)
        for manager_id, result in await conn.execute(legs):
            offers[manager_id][0] += 1
            offers[manager_id][1] += result == "answered"
            offers[manager_id][2] += result in ("no_answer", "busy", "unavailable")
        own = select(ld.owner_id, ld.outcome).where(
            ld.created_at >= period.start, ld.created_at < period.end, ld.owner_id.is_not(None)
        )
        for owner_id, outcome in await conn.execute(own):
            owned[owner_id][0] += 1
            owned[owner_id][1] += outcome == "won"
            owned[owner_id][2] += outcome == "lost"
    return [
        ManagerFigures(
            manager_id=m.id,
            name=m.name,
            weight=m.weight,
            offers=offers[m.id][0],
            answered=offers[m.id][1],
            missed=offers[m.id][2],
            calls=int(talk[m.id][0]),
            talk_seconds=round(talk[m.id][1], 3),
            average_talk_seconds=round(talk[m.id][2] / talk[m.id][0], 3) if talk[m.id][0] else 0.0,
            longest_talk_seconds=round(talk[m.id][3], 3),
            first_call=first.get(m.id),
            last_call=last.get(m.id),
            leads_owned=owned[m.id][0],
            won=owned[m.id][1],
            lost=owned[m.id][2],
        )
        for m in managers
    ]


async def _median_ms(work: Callable[[], Awaitable[object]]) -> tuple[float, object]:
    result = await work()  # warm: the page cache, SQLAlchemy's statement cache
    times = []
    for _ in range(RUNS):
        t = time.perf_counter()
        result = await work()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), result


async def month_ms(total_calls: int = CALLS) -> float:
    """``python -m bench``'s figure: the median milliseconds of a month of per-manager stats."""
    async with await _database(total_calls) as db:
        managers = [Manager(f"m{n}", f"Manager {n}", str(100 + n)) for n in range(MANAGERS)]
        period = Period.of_days(*MONTH, ZONE)
        sql = SqlStats(db)
        ms, _ = await _median_ms(lambda: _figures(sql, managers, period))
        return ms


async def _figures(sql: SqlStats, managers: list[Manager], period: Period) -> list[ManagerFigures]:
    return manager_figures(managers, *await sql.manager_rows(period))


async def main() -> None:
    async with await _database() as db:
        await _report(db)


async def _report(db: Database) -> None:
    managers = [Manager(f"m{n}", f"Manager {n}", str(100 + n)) for n in range(MANAGERS)]
    period = Period.of_days(*MONTH, ZONE)
    sql = SqlStats(db)

    async def ours() -> list[ManagerFigures]:
        return manager_figures(managers, *await sql.manager_rows(period))

    async def whole_report() -> object:
        figures = await ours()
        return build_report(period, figures, await sql.journeys(period), hours_of_day(await sql.quarters(period), ZONE))

    ours_ms, ours_rows = await _median_ms(ours)
    naive_ms, naive_rows = await _median_ms(lambda: naive(db, period, managers))
    report_ms, _ = await _median_ms(whole_report)
    assert isinstance(ours_rows, list) and isinstance(naive_rows, list)
    # The peer is a check as well as a yardstick: same figures, or the timing means nothing.
    for a, b in zip(ours_rows, naive_rows, strict=True):
        assert (a.offers, a.missed, a.calls, a.leads_owned, a.won) == (
            b.offers,
            b.missed,
            b.calls,
            b.leads_owned,
            b.won,
        )
        assert abs(a.talk_seconds - b.talk_seconds) < 0.01 and a.first_call == b.first_call, (a, b)
    in_month = sum(row.calls for row in ours_rows)
    print(
        f"stats of {MONTH[0]:%B %Y} ({ZONE}) over {CALLS:,} calls, {MANAGERS} managers;"
        f" {in_month:,} bridged calls that month"
    )
    print(f"  per-manager stats, SQL:            {ours_ms:7.1f} ms  (bar <= {BAR_MS:.0f} ms)")
    print(f"  naive peer, Python-side sums:      {naive_ms:7.1f} ms  ({naive_ms / ours_ms:.1f}x ours)")
    print(f"  whole report (+ sources, scenarios, speed-to-lead, hours): {report_ms:7.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
