"""A singleton job taken over when the session holding its lock is killed (storage.cluster).

Two clusters (the daemons' default poll, 1 s) on a scratch PostgreSQL database: one runs the
``publisher`` job, the other stands by. The holder's backend is ended with
``pg_terminate_backend`` (what a server restart or an admin does while the process lives), and
two moments are taken from it: when the holder stopped its job, and when the standby started
it. The second must come after the first: the job never runs twice at once.
Run: .venv/bin/python -m bench.job_takeover [--runs 7]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import UTC, datetime

from sqlalchemy import text

from leadrouter.postgres import postgres_server, scratch_database
from storage.cluster import Cluster
from storage.engine import Database, lock_key

_HOLDER = text(
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
    " AND classid = :high AND objid = :low"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def _now() -> datetime:
    return datetime.now(UTC)


async def _once(url: str) -> tuple[float, float]:
    """Seconds from the kill until the holder stopped, and until the standby ran the job."""
    started: dict[str, float] = {}

    async def job(name: str) -> None:
        started[name] = time.monotonic()
        await asyncio.Event().wait()

    async with Database(url) as db, Cluster(db, "pbx#a", _now) as a, Cluster(db, "pbx#b", _now) as b:
        holder = asyncio.create_task(a.elected("publisher", lambda: job("a"), 1.0))
        # Cluster has no event for "elected"; polling every 10 ms costs the measure nothing.
        while "publisher" not in a.jobs:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        standby = asyncio.create_task(b.elected("publisher", lambda: job("b"), 1.0))
        await asyncio.sleep(1.5)  # b tries and waits
        key = lock_key("job:publisher") & 0xFFFFFFFFFFFFFFFF
        async with db.write() as conn:
            pid = (await conn.execute(_HOLDER, {"high": key >> 32, "low": key & 0xFFFFFFFF})).scalar_one()
            killed = time.monotonic()
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        stopped = None
        while "b" not in started:
            if stopped is None and "publisher" not in a.jobs:
                stopped = time.monotonic() - killed
            await asyncio.sleep(0.005)
        assert stopped is not None, "the standby ran the job while the holder still did"
        for task in (holder, standby):
            task.cancel()
        await asyncio.gather(holder, standby, return_exceptions=True)
        return stopped, started["b"] - killed


async def main(runs: int) -> None:
    stops, starts = [], []
    with postgres_server() as server:
        for _ in range(runs):
            async with scratch_database(server, "leadrouter_bench") as url:
                async with Database(url) as db:
                    await db.migrate()
                stopped, took = await _once(url)
            stops.append(stopped)
            starts.append(took)
    print(f"holder stopped its job after  {statistics.median(stops):.2f} s (median of {runs}; max {max(stops):.2f})")
    print(f"standby ran the job after     {statistics.median(starts):.2f} s (median of {runs}; min {min(starts):.2f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    asyncio.run(main(parser.parse_args().runs))
