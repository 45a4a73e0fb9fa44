"""/health latency beside idle connections: what an attacker's idle sockets cost the API.

The daemon's HTTP server (api/server.py, default limits but a header timeout long enough to
keep every idle socket open during the run) with 0, 2,000 and 4,000 idle TCP connections on
127.0.0.1; 50 GET /health one after another on a fresh connection each, after the idle
ones are all accepted. Prints the median and the slowest.

Bar (issue 10): /health answers within a second beside 2,000 idle connections.

Run: .venv/bin/python -m bench.api_idle
"""

from __future__ import annotations

import asyncio
import statistics
import time

import httpx
from fastapi import FastAPI

from api.server import ApiServer, ConnectionLimits

REQUESTS = 50


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


async def _run(idle: int) -> tuple[float, float]:
    limits = ConnectionLimits(max_connections=idle + 100, header_timeout=600)
    async with ApiServer(_app(), "127.0.0.1", 0, limits) as server:
        sockets = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(idle)]
        for _ in range(600):  # every idle socket accepted before the measurement (30 s at most)
            if server.open_connections >= idle:
                break
            await asyncio.sleep(0.05)
        times = []
        for _ in range(REQUESTS):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
                started = time.perf_counter()
                (await client.get("/health")).raise_for_status()
                times.append(time.perf_counter() - started)
        for _, writer in sockets:
            writer.close()
    return statistics.median(times), max(times)


async def main() -> None:
    for idle in (0, 2000, 4000):
        median, slowest = await _run(idle)
        print(f"{idle:>5} idle connections: /health median {median * 1000:.1f} ms, slowest {slowest * 1000:.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
