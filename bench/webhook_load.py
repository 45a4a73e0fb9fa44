"""What webhook delivery costs the intake: leads at a steady rate with no subscriber, with one whose
receiver is up, and with one whose receiver is down (every attempt refused, retried).

The whole daemon on SQLite, MQTT off so that only webhooks differ, the PBX away (the AMI port
refuses): leads are taken and wait, so each lead is one commit and one event (lead.created),
and the dialer's share of the machine is the same in every run. The receiver is
examples/crm_subscriber.py in webhook mode, a process of its own. Per run: POST /leads latency
(the commit every lead waits for, on the SQLite writer the senders share), the event loop's lag
(a 1 ms ticker), the CPU time of this process per lead (the daemon and the posting client; the
receiver is another process), and with the receiver up, how long after the last lead every
event had arrived. Interleaved rounds; the medians of the runs' figures.

Run: .venv/bin/python -m bench.webhook_load
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import yaml
from sqlalchemy import func, select

from config.routing import RoutingSource
from config.settings import load_settings
from leadrouter.broker import free_port
from leadrouter.daemon import Daemon, SystemClock
from leadrouter.demo import simulator_settings
from leadrouter.logs import configure_logging
from pbxsim.tests.amitools import wait_until
from storage.schema import outbox

RATE = 50  # leads per second: this shared 2-core machine serves ~200 with nothing else on it
SECONDS = 4
ROUNDS = 3
TOKEN = "bench-token-0123456789abcdef"
SECRET = "bench-secret-0123456789"
EXAMPLE = Path(__file__).parents[1] / "examples" / "crm_subscriber.py"
ROUTING = {
    "version": 1,
    "managers": [{"id": "m101", "name": "M", "extension": "101"}],
    "scenarios": [{"name": "default"}],
}


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


@contextlib.asynccontextmanager
async def _receiver(port: int) -> AsyncIterator[None]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        "webhook",
        "--port",
        str(port),
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
        phones = [f"+7916{3000000 + index:07d}" for index in range(RATE * SECONDS)]
        port = free_port()
        async with contextlib.AsyncExitStack() as stack:
            config = simulator_settings(ami_port=free_port(), database=workdir / "lr.db", mqtt_port=None, token=TOKEN)
            if mode != "none":
                subscriber = {"name": "crm", "url": f"http://127.0.0.1:{port}/", "secret": SECRET}
                config["webhooks"] = {"subscribers": [subscriber]}
            (workdir / "routing.yaml").write_text(yaml.safe_dump(ROUTING))
            (workdir / "leadrouter.yaml").write_text(yaml.safe_dump(config))
            settings = load_settings(workdir / "leadrouter.yaml", env={})
            if mode == "up":
                await stack.enter_async_context(_receiver(port))
            routing = RoutingSource.load(settings.routing_file)
            daemon = await stack.enter_async_context(Daemon(settings, routing, SystemClock()))
            http = await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{daemon.http_port}",
                    headers={"Authorization": f"Bearer {TOKEN}"},
                    timeout=30,
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

            began, cpu = time.perf_counter(), time.process_time()
            sent = []
            for index, phone in enumerate(phones):
                sent.append(asyncio.create_task(post(phone)))
                await asyncio.sleep(max(0.0, began + (index + 1) / RATE - time.perf_counter()))
            await asyncio.gather(*sent)
            last_post = time.perf_counter()

            delivered_after = float("nan")
            if mode == "up":

                async def all_delivered() -> bool:
                    (crm,) = await daemon.webhook_state.overview()
                    async with daemon.database.read() as conn:
                        last = (await conn.execute(select(func.max(outbox.c.seq)))).scalar_one()
                    return bool(crm["cursor"] == last and crm["pending"] == 0)

                await wait_until(all_delivered, 60, "every event delivered")
                delivered_after = time.perf_counter() - last_post
            stop.set()
            await ticker
            cpu = time.process_time() - cpu
    return {
        "cpu_per_lead": cpu / len(phones),
        "post_p50": statistics.median(posts),
        "post_p99": _percentile(posts, 0.99),
        "lag_p99": _percentile(lags, 0.99),
        "delivered_after": delivered_after,
    }


async def main() -> None:
    configure_logging("error")  # a line per refused attempt would measure the terminal
    modes = {"none": "no subscriber", "up": "receiver up", "down": "receiver down"}
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    for _ in range(ROUNDS):
        for mode in modes:
            results[mode].append(await one_run(mode))
    print(f"{RATE} leads/s for {SECONDS} s, one event a lead, SQLite; medians of {ROUNDS} interleaved runs (ms)")
    print(f"{'':16}{'CPU/lead':>10}{'POST p50':>10}{'POST p99':>10}{'lag p99':>10}{'all in':>10}")
    base: dict[str, float] = {}
    for mode, label in modes.items():
        figures = {key: statistics.median(run[key] for run in results[mode]) for key in results[mode][0]}
        base = base or figures
        delivered = figures["delivered_after"]
        print(
            f"{label:16}"
            + "".join(
                f"{figures[key] * 1000:>{width}.1f}"
                for key, width in (("cpu_per_lead", 10), ("post_p50", 10), ("post_p99", 10))
            )
            + f"{figures['lag_p99'] * 1000:>10.1f}"
            + (f"{delivered:>9.2f}s" if delivered == delivered else f"{'-':>10}")
        )
        if mode != "none":
            print(
                f"{'':16}CPU/lead {figures['cpu_per_lead'] / base['cpu_per_lead']:.2f}x, "
                f"POST p99 {figures['post_p99'] / base['post_p99']:.2f}x of no subscriber's"
            )


if __name__ == "__main__":
    asyncio.run(main())
