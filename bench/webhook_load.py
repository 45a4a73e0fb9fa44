"""What webhook delivery costs the intake and the dialer: 200 leads/s with no subscriber, with
one whose receiver is up, and with one whose receiver is down (every attempt refused).

The whole daemon on SQLite against the PBX simulator over AMI (clock at real speed), MQTT off so
that only webhooks differ. Every client is busy: each lead is created, dialled, ended and failed
(4 events). The receiver is examples/crm_subscriber.py in webhook mode, a process of its own.
Per run: POST /leads latency, lead created -> call started (the claim that sends the Originate,
from the database), the event loop's lag (a 1 ms ticker), and for the receiver that is up, how
long after the last lead every event had arrived. Interleaved rounds, medians of the runs.

Bars (DESIGN.md): lead POST -> Originate p50 <= 3 ms, p99 <= 20 ms at 200 leads/s; loop lag p99 <= 5 ms.

Run: .venv/bin/python -m bench.webhook_load
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import yaml

from ami_adapter.asterisk import SHIPPED_DIALPLAN
from config.routing import RoutingSource
from config.settings import load_settings
from leadrouter.broker import free_port
from leadrouter.daemon import Daemon
from leadrouter.demo import simulator_settings
from pbxsim import Behaviour, ScaledClock, Simulator, World
from pbxsim.tests.amitools import wait_until
from storage.schema import calls, leads

RATE = 200  # leads per second
SECONDS = 3
ROUNDS = 3
TOKEN = "bench-token-0123456789abcdef"
SECRET = "bench-secret-0123456789"
EXAMPLE = Path(__file__).parents[1] / "examples" / "crm_subscriber.py"
ROUTING = {
    "version": 1,
    "managers": [{"id": "m101", "name": "M", "extension": "101"}],
    "scenarios": [{"name": "default", "max_attempts": 1}],
}


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


@contextlib.asynccontextmanager
async def _receiver(port: int, cards: Path) -> AsyncIterator[None]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        "webhook",
        "--port",
        str(port),
        "--cards",
        str(cards),
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "LEADROUTER_WEBHOOK_SECRET": SECRET},
    )
    assert process.stderr is not None
    await asyncio.wait_for(process.stderr.readline(), 10)  # "listening on ..."
    try:
        yield
    finally:
        process.terminate()
        await process.wait()


async def _ticker(lags: list[float], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(0.001)
        lags.append(loop.time() - before - 0.001)


async def one_run(mode: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        clock = ScaledClock(1.0)
        phones = [f"+7916{3000000 + index:07d}" for index in range(RATE * SECONDS)]
        world = World(clients={phone[1:]: Behaviour(busy=True) for phone in phones})
        port = free_port()
        async with contextlib.AsyncExitStack() as stack:
            sim = await stack.enter_async_context(Simulator(clock=clock, dialplan=SHIPPED_DIALPLAN, world=world))
            config = simulator_settings(ami_port=sim.port, database=workdir / "lr.db", mqtt_port=None, token=TOKEN)
            config["log"] = {"level": "warning"}
            if mode != "none":
                subscriber = {"name": "crm", "url": f"http://127.0.0.1:{port}/", "secret": SECRET}
                config["webhooks"] = {"subscribers": [subscriber]}
            (workdir / "routing.yaml").write_text(yaml.safe_dump(ROUTING))
            (workdir / "leadrouter.yaml").write_text(yaml.safe_dump(config))
            settings = load_settings(workdir / "leadrouter.yaml", env={})
            if mode == "up":
                await stack.enter_async_context(_receiver(port, workdir / "cards.json"))
            daemon = await stack.enter_async_context(Daemon(settings, RoutingSource.load(settings.routing_file), clock))
            await wait_until(lambda: daemon.ami.connected, 5, "AMI login")
            http = await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{daemon.http_port}", headers={"Authorization": f"Bearer {TOKEN}"}
                )
            )
            lags: list[float] = []
            stop = asyncio.Event()
            ticker = asyncio.create_task(_ticker(lags, stop))
            posts: list[float] = []

            async def post(phone: str) -> None:
                started = time.perf_counter()
                (await http.post("/leads", json={"phone": phone, "source": "bench"})).raise_for_status()
                posts.append(time.perf_counter() - started)

            began = time.perf_counter()
            sent = []
            for index, phone in enumerate(phones):
                sent.append(asyncio.create_task(post(phone)))
                await asyncio.sleep(max(0.0, began + (index + 1) / RATE - time.perf_counter()))
            await asyncio.gather(*sent)
            last_post = time.perf_counter()

            async def settled() -> bool:
                return (await daemon.queries.lead_status_counts()).get("failed", 0) == len(phones)

            await wait_until(settled, 60, "every lead dialled and failed")
            delivered_after = float("nan")
            if mode == "up":
                cards = workdir / "cards.json"

                def all_arrived() -> bool:
                    try:
                        known = json.loads(cards.read_text())
                    except (FileNotFoundError, json.JSONDecodeError):
                        return False
                    return len(known) == len(phones) and all(card.get("status") == "failed" for card in known.values())

                await wait_until(all_arrived, 60, "every event at the receiver")
                delivered_after = time.perf_counter() - last_post
            stop.set()
            await ticker
            query = calls.join(leads, leads.c.id == calls.c.lead_id).select()
            async with daemon.database.read() as conn:
                rows = (await conn.execute(query.with_only_columns(leads.c.created_at, calls.c.started_at))).all()
            to_dial = [(started - created).total_seconds() for created, started in rows]
    return {
        "post_p50": statistics.median(posts),
        "post_p99": _percentile(posts, 0.99),
        "dial_p50": statistics.median(to_dial),
        "dial_p99": _percentile(to_dial, 0.99),
        "lag_p99": _percentile(lags, 0.99),
        "delivered_after": delivered_after,
    }


async def main() -> None:
    modes = {"none": "no subscriber", "up": "receiver up", "down": "receiver down"}
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    for _ in range(ROUNDS):
        for mode in modes:
            results[mode].append(await one_run(mode))
    print(f"{RATE} leads/s for {SECONDS} s, 4 events a lead, SQLite; medians of {ROUNDS} interleaved runs (ms)")
    print(f"{'':16}{'POST p50':>10}{'POST p99':>10}{'->dial p50':>12}{'->dial p99':>12}{'lag p99':>10}{'all in':>10}")
    base: dict[str, float] = {}
    for mode, label in modes.items():
        figures = {key: statistics.median(run[key] for run in results[mode]) for key in results[mode][0]}
        base = base or figures
        delivered = figures["delivered_after"]
        print(
            f"{label:16}"
            + "".join(
                f"{figures[key] * 1000:>{width}.1f}"
                for key, width in (("post_p50", 10), ("post_p99", 10), ("dial_p50", 12), ("dial_p99", 12))
            )
            + f"{figures['lag_p99'] * 1000:>10.1f}"
            + (f"{delivered:>9.2f}s" if delivered == delivered else f"{'-':>10}")
        )
        if mode != "none":
            ratio = figures["dial_p99"] / base["dial_p99"]
            print(f"{'':16}lead -> dial p99 {ratio:.2f}x of no subscriber's")


if __name__ == "__main__":
    asyncio.run(main())
