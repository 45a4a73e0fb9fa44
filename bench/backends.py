"""Intake and supervisors' stats on SQLite and on PostgreSQL, side by side in one run.

Intake: ``--leads`` leads through ``LeadIntake.submit`` (what POST /leads does after validation:
normalise, one INSERT ... ON CONFLICT with its outbox row, commit), 20 at a time as concurrent
webhooks arrive; then each sent again (same external_id: the conflict path answers with the
stored lead). Per-lead latency median and p99, and leads per second.

Stats: ``--calls`` calls over three months and 200 managers (60% answered, 85% of those bridged,
a lead per two calls) written straight into each database, then the per-manager figures of one
month (``SqlStats.manager_rows`` + ``manager_figures``, what GET /stats/managers serves): median of 7.

SQLite is a file in var/bench/; PostgreSQL a scratch database on this machine's server (or a
throwaway one: leadrouter/postgres.py), with the server's own settings (synchronous_commit off
for the scratch database, as the tests have it). Run: .venv/bin/python -m bench.backends
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import insert

from bench.lead_import import SHIPPED_ROUTING
from dialer.intake import LeadInput, LeadIntake
from leadrouter.daemon import SystemClock
from leadrouter.postgres import postgres_server, scratch_database
from router.routing import Manager
from router.stats import Period, manager_figures
from storage.engine import Database
from storage.schema import call_legs, calls, leads
from storage.stats import SqlStats
from storage.uow import SqlUnitOfWork

MANAGERS = 200
ZONE = ZoneInfo("Europe/Moscow")
FIRST_DAY = date(2026, 6, 1)
MONTH = (date(2026, 7, 1), date(2026, 7, 31))
CONCURRENCY = 20
RUNS = 7
CHUNK = 5000


def _dataset(count: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    rng = random.Random(9)
    t0 = datetime.combine(FIRST_DAY, datetime.min.time(), tzinfo=ZONE).astimezone(UTC)
    span = 92 * 86400
    lead_rows, call_rows, leg_rows = [], [], []
    for lead_id in range(1, count // 2 + 1):
        created = t0 + timedelta(seconds=rng.uniform(0, span))
        owner = None
        for attempt in (1, 2):
            call_id = (lead_id - 1) * 2 + attempt
            started = created + timedelta(seconds=rng.uniform(5, 600) + (attempt - 1) * 3600)
            answered = bridged = ended = manager = talk = None
            if rng.random() < 0.6:
                answered = started + timedelta(seconds=rng.uniform(3, 25))
                if rng.random() < 0.85:
                    manager = f"m{rng.randrange(MANAGERS)}"
                    bridged = answered + timedelta(seconds=rng.uniform(5, 40))
                    talk = rng.uniform(20, 900)
                    ended = bridged + timedelta(seconds=talk)
                    leg_rows.append(
                        {"call_id": call_id, "leg_no": 1, "manager_id": manager, "answered_at": bridged,
                         "started_at": bridged - timedelta(seconds=4), "ended_at": ended, "result": "answered"}
                    )  # fmt: skip
                    owner = manager
            ended = ended or (answered or started) + timedelta(seconds=rng.uniform(1, 30))
            call_rows.append(
                {"id": call_id, "lead_id": lead_id, "attempt": attempt, "scenario": "default",
                 "channel_id": f"lr-{call_id}", "phone": "+79160000000", "state": "ended", "started_at": started,
                 "answered_at": answered, "bridged_at": bridged, "ended_at": ended, "manager_id": manager,
                 "disposition": "completed" if bridged else "no_answer", "talk_seconds": talk,
                 "total_seconds": (ended - started).total_seconds()}
            )  # fmt: skip
        lead_rows.append(
            {"id": lead_id, "phone": "+79160000000", "name": "", "source": "site", "external_id": None, "payload": {},
             "status": "assigned" if owner else "failed", "owner_id": owner, "attempts": 2, "created_at": created,
             "pbx_failures": 0}
        )  # fmt: skip
    return lead_rows, call_rows, leg_rows


async def _fill(db: Database, data: tuple[list[dict[str, Any]], ...]) -> None:
    for table, rows in zip((leads, calls, call_legs), data, strict=True):
        for start in range(0, len(rows), CHUNK):
            async with db.write() as conn:
                await conn.execute(insert(table), rows[start : start + CHUNK])
                await conn.commit()
    if db.engine.dialect.name == "postgresql":
        async with db.write() as conn:  # the ids were given: move the sequences past them
            for name in ("leads", "calls"):
                await conn.exec_driver_sql(f"SELECT setval('{name}_id_seq', (SELECT max(id) FROM {name}))")
            await conn.exec_driver_sql("ANALYZE")
            await conn.commit()
    else:
        async with db.write() as conn:
            await conn.exec_driver_sql("ANALYZE")
            await conn.commit()


async def _intake(db: Database, count: int) -> dict[str, float]:
    intake = LeadIntake(
        uow=lambda: SqlUnitOfWork(db),
        clock=SystemClock(),
        routing=lambda: SHIPPED_ROUTING,
        default_region="RU",
        on_new_lead=lambda: None,
    )

    async def submit_all(label: str) -> tuple[list[float], float]:
        latencies: list[float] = []
        queue = list(range(count))

        async def worker() -> None:
            while queue:
                n = queue.pop()
                t = time.perf_counter()
                await intake.submit(LeadInput(phone=f"+7916{n:07d}", source="bench", external_id=f"{label}-{n}"))
                latencies.append((time.perf_counter() - t) * 1000)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return latencies, count / (time.perf_counter() - began)

    new, rate = await submit_all("bench")
    again, _ = await submit_all("bench")  # the same external ids: the conflict path
    return {
        "p50_ms": statistics.median(new),
        "p99_ms": statistics.quantiles(new, n=100)[98],
        "leads_per_s": rate,
        "repeat_p50_ms": statistics.median(again),
    }


async def _median_ms(work: Callable[[], Awaitable[object]]) -> float:
    await work()
    times = []
    for _ in range(RUNS):
        t = time.perf_counter()
        await work()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


async def _stats(db: Database) -> float:
    managers = [Manager(f"m{n}", f"Manager {n}", str(100 + n)) for n in range(MANAGERS)]
    period = Period.of_days(*MONTH, ZONE)
    sql = SqlStats(db)

    async def ours() -> object:
        return manager_figures(managers, *await sql.manager_rows(period))

    return await _median_ms(ours)


def _fresh(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("backends.db*"):
        stale.unlink()
    return folder / "backends.db"


@asynccontextmanager
async def _backends(folder: Path) -> AsyncIterator[list[tuple[str, str]]]:
    path = _fresh(folder)
    with postgres_server() as server:
        async with scratch_database(server, "leadrouter_bench") as pg_url:
            yield [("sqlite", f"sqlite+aiosqlite:///{path.resolve()}"), ("postgresql", pg_url)]


async def main(leads_count: int, calls_count: int) -> None:
    data = _dataset(calls_count)
    results: dict[str, dict[str, float]] = {}
    async with _backends(Path("var/bench")) as backends:
        for name, url in backends:
            async with Database(url) as db:
                await db.migrate()
                results[name] = await _intake(db, leads_count)
    # The stats on fresh databases that hold the data set alone.
    async with _backends(Path("var/bench")) as backends:
        for name, url in backends:
            async with Database(url) as db:
                await db.migrate()
                await _fill(db, data)
                results[name]["stats_month_ms"] = await _stats(db)
    sqlite, pg = results["sqlite"], results["postgresql"]
    print(f"intake: {leads_count} leads, {CONCURRENCY} at a time; stats: {calls_count:,} calls, {MANAGERS} managers")
    print(f"{'':32}{'SQLite':>10}{'PostgreSQL':>12}{'PG/SQLite':>11}")
    for key, label in (
        ("p50_ms", "intake per lead p50, ms"),
        ("p99_ms", "intake per lead p99, ms"),
        ("leads_per_s", "intake, leads/s"),
        ("repeat_p50_ms", "repeated lead p50, ms"),
        ("stats_month_ms", "a month's manager stats, ms"),
    ):
        print(f"{label:32}{sqlite[key]:10.1f}{pg[key]:12.1f}{pg[key] / sqlite[key]:10.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.backends", description=__doc__)
    parser.add_argument("--leads", type=int, default=2000)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    asyncio.run(main(args.leads, args.calls))
