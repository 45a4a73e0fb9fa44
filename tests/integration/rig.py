"""The whole daemon against the PBX simulator over TCP, SQLite or PostgreSQL, and a real mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ami_adapter.asterisk import SHIPPED_DIALPLAN
from config.routing import RoutingSource
from config.settings import Settings, load_settings
from leadrouter.daemon import Daemon
from leadrouter.demo import CrmListener, monitor_folder, simulator_settings
from pbxsim import ScaledClock, Simulator, World
from pbxsim.tests.amitools import wait_until

TOKEN = "test-token-0123456789abcdef"


@dataclass
class Rig:
    sim: Simulator
    clock: ScaledClock
    settings: Settings
    routing_file: Path
    mqtt: list[dict[str, Any]]
    daemon: Daemon = field(init=False)
    http: httpx.AsyncClient = field(init=False)
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    async def post(self, **lead: Any) -> httpx.Response:
        return await self.http.post("/leads", json=lead)

    async def start_daemon(self) -> None:
        self.daemon = await self._stack.enter_async_context(
            Daemon(self.settings, RoutingSource.load(self.routing_file, self.settings.pbx_names), self.clock)
        )
        self.http = await self._stack.enter_async_context(
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{self.daemon.http_port}", headers={"Authorization": f"Bearer {TOKEN}"}
            )
        )
        await wait_until(lambda: self.daemon.ami.connected, 5, "AMI login")

    async def stop_daemon(self) -> None:
        """Stop the daemon as systemd would; the PBX and its calls go on."""
        await self._stack.aclose()
        self._stack = contextlib.AsyncExitStack()


def load_written(folder: Path, config: dict[str, Any]) -> Settings:
    """Settings as the daemon reads them: written to ``folder/leadrouter.yaml`` and loaded from there."""
    path = folder / "leadrouter.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return load_settings(path, env={})


def actions_received(sim: Simulator, action: str) -> list[dict[str, str]]:
    """The simulator's record of each ``action`` it was sent, as header dicts."""
    return [dict(headers) for headers in sim.received if dict(headers).get("Action") == action]


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path,
    *,
    world: World,
    routing: dict[str, Any],
    mqtt_port: int | None = None,
    scale: float = 50.0,
    sections: dict[str, dict[str, Any]] | None = None,
    recordings: bool = False,
    start: datetime | None = None,
    device_states: dict[str, str] | None = None,
    database: str | None = None,
) -> AsyncIterator[Rig]:
    """``sections`` adds to or replaces keys of the simulator settings' sections, e.g. {"http": {...}};
    ``recordings``: the simulator writes real WAVs into the daemon's recordings folder; ``start``:
    the moment the clock starts at (default: now); ``device_states`` are the simulator's cached
    device states (``Custom:101``) before the daemon logs in; ``database``: its URL (the
    ``database_url`` fixture's), by default a SQLite file in ``tmp_path``."""
    clock = ScaledClock(scale, start=start)
    routing_file = tmp_path / "routing.yaml"
    routing_file.write_text(yaml.safe_dump(routing, sort_keys=False))
    crm = CrmListener("crm-e2e")
    async with (
        Simulator(
            clock=clock,
            dialplan=SHIPPED_DIALPLAN,
            world=world,
            timestamp_events=True,
            record=True,
            recordings=monitor_folder(tmp_path) if recordings else None,
        ) as sim,
        contextlib.AsyncExitStack() as stack,
    ):
        if mqtt_port is not None:
            stack.callback(asyncio.create_task(crm.run(mqtt_port)).cancel)
            await asyncio.wait_for(crm.subscribed.wait(), 5)
        config = simulator_settings(ami_port=sim.port, database=tmp_path / "lr.db", mqtt_port=mqtt_port, token=TOKEN)
        if database is not None:
            config["database"] = {"url": database}
        for section, keys in (sections or {}).items():
            config[section] = config.get(section, {}) | keys
        settings = load_written(tmp_path, config | {"routing_file": str(routing_file)})
        rig = Rig(sim, clock, settings, routing_file, crm.received)
        for device, state in (device_states or {}).items():
            sim.set_device_state(device, state)
        await rig.start_daemon()
        try:
            yield rig
        finally:
            await rig.stop_daemon()


async def scrape_metrics(rig: Rig) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics as Prometheus parses it, scraped without a token like Prometheus does."""
    async with httpx.AsyncClient(base_url=str(rig.http.base_url)) as scraper:
        response = await scraper.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
