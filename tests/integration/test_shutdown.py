"""``leadrouter run`` as systemd runs it: a process of its own, NOTIFY_SOCKET, SIGTERM with live calls.

The daemon runs on the wall clock here (the production SystemClock), against the simulator
in this process over TCP, SQLite and a real mosquitto.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import yaml

from ami_adapter.asterisk import SHIPPED_DIALPLAN
from api.app import RETRY_AFTER_STOPPING
from leadrouter.broker import free_port
from leadrouter.demo import CrmListener, simulator_settings
from pbxsim import Behaviour, ScaledClock, Simulator, World
from pbxsim.tests.amitools import wait_until
from router.model import Disposition
from storage.engine import Database
from storage.queries import SqlQueries
from tests.integration.rig import TOKEN, actions_received
from tests.notify_socket import listening

REPO = Path(__file__).resolve().parents[2]
ROUTING = {
    "version": 1,
    "managers": [
        {"id": "anna", "name": "Anna", "extension": "101"},
        {"id": "boris", "name": "Boris", "extension": "102"},
    ],
    "scenarios": [{"name": "default"}],
}
TALK = 3.0  # seconds each client talks once put through
GRACE = 30.0


async def test_sigterm_refuses_new_leads_lets_live_calls_end_flushes_the_outbox_and_exits_0(
    tmp_path: Path, mosquitto_port: int
) -> None:
    world = World(
        clients={
            "79169000001": Behaviour(answer_after=0.2, talk=TALK),
            "79169000002": Behaviour(answer_after=0.2, talk=TALK),
            "79169000003": Behaviour(answer_after=0.2, talk=TALK),
        },
        managers={"101": Behaviour(answer_after=0.2), "102": Behaviour(answer_after=0.2)},
    )
    crm = CrmListener("crm-shutdown", persistent_session=True)
    http_port = free_port()
    async with (
        Simulator(clock=ScaledClock(1.0), dialplan=SHIPPED_DIALPLAN, world=world, record=True) as sim,
        contextlib.AsyncExitStack() as stack,
    ):
        stack.callback(asyncio.create_task(crm.run(mosquitto_port)).cancel)
        await asyncio.wait_for(crm.subscribed.wait(), 5)
        database = tmp_path / "lr.db"
        config = simulator_settings(ami_port=sim.port, database=database, mqtt_port=mosquitto_port, token=TOKEN)
        config["http"]["port"] = http_port
        config |= {"routing_file": "routing.yaml", "shutdown": {"grace_period": GRACE, "outbox_flush": 10}}
        (tmp_path / "routing.yaml").write_text(yaml.safe_dump(ROUTING))
        (tmp_path / "leadrouter.yaml").write_text(yaml.safe_dump(config))
        systemd = stack.enter_context(listening(tmp_path))
        env = {**os.environ, "NOTIFY_SOCKET": systemd.address, "WATCHDOG_USEC": "1000000"}
        daemon = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "leadrouter.cli",
            "run",
            "--config",
            str(tmp_path / "leadrouter.yaml"),
            "--log-format",
            "json",
            cwd=REPO,
            env=env,
            stderr=asyncio.subprocess.PIPE,
        )
        assert daemon.stderr is not None
        log_read = asyncio.create_task(daemon.stderr.read())  # drained all along: a full pipe would stall it
        stack.push_async_callback(_killed, daemon)
        await wait_until(lambda: systemd.said("READY=1"), 20, "READY=1")
        await wait_until(lambda: systemd.said("WATCHDOG=1"), 5, "a watchdog ping")
        assert _owner_only(tmp_path, "lr.db*")  # the database, its WAL and shared memory (umask 077)

        http = await stack.enter_async_context(
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", headers={"Authorization": f"Bearer {TOKEN}"})
        )
        # systemctl reload (ExecReload: SIGHUP) with a broken routing.yaml: refused, the daemon runs on.
        (tmp_path / "routing.yaml").write_text("version: 1\nmanagers: [{id: anna}]\n")
        daemon.send_signal(signal.SIGHUP)
        refusal = "STATUS=routing.yaml refused (see the log); the previous rules run on"
        await wait_until(lambda: systemd.said(refusal), 5, "the refusal told to systemd")
        assert (await http.get("/health")).json()["managers"] == 2
        ids = [(await http.post("/leads", json={"phone": f"+7916900000{n}"})).json()["id"] for n in (1, 2, 3)]

        async def talking(lead_id: int) -> bool:
            return (await http.get(f"/leads/{lead_id}")).json()["owner_id"] is not None

        # Two managers, so two clients are put through and the third lead waits its turn.
        await wait_until(lambda: _both(talking, ids[:2]), 5, "two clients put through")
        assert len(actions_received(sim, "Originate")) == 2

        daemon.send_signal(signal.SIGTERM)
        await wait_until(lambda: systemd.said("STOPPING=1"), 5, "STOPPING=1")
        refused = await http.post("/leads", json={"phone": "+79169000004"})
        assert refused.status_code == 503 and refused.headers["Retry-After"] == str(RETRY_AFTER_STOPPING)
        assert refused.json()["error"] == "stopping"
        health = await http.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "stopping"

        assert await asyncio.wait_for(daemon.wait(), GRACE) == 0
        log = [json.loads(line) for line in (await log_read).decode().splitlines()]

    # The live calls ended on their own, talked in full; the waiting lead was not dialled, and
    # is due at the next start; the lead posted while stopping was not taken.
    assert len(actions_received(sim, "Originate")) == 2
    assert actions_received(sim, "Hangup") == []  # nobody was cut off
    async with Database(f"sqlite+aiosqlite:///{database}") as db:
        queries = SqlQueries(db)
        for lead_id in ids[:2]:
            found = await queries.lead_with_calls(lead_id)
            assert found is not None
            (call,) = found[1]
            assert call.disposition is Disposition.COMPLETED and call.talk_seconds is not None
            assert call.talk_seconds >= TALK - 0.5
        assert await queries.lead_status_counts() == {"assigned": 2, "new": 1}
        assert await queries.pending_outbox(10) == []  # flushed before the exit
    await wait_until(
        lambda: sum(event["type"] == "call.ended" for event in crm.received) == 2, 5, "call.ended at the CRM"
    )

    events = [line["event"] for line in log]
    assert "routing.reload_refused" in events
    # The same SIGHUP re-read leadrouter.yaml's webhook subscribers (none here), whatever routing.yaml said.
    (webhooks,) = [line for line in log if line["event"] == "webhooks.reloaded"]
    assert webhooks["subscribers"] == []
    assert events.index("daemon.ready") < events.index("daemon.stopping") < events.index("daemon.drained")
    assert events[-1] == "daemon.stopped"
    (drained,) = [line for line in log if line["event"] == "daemon.drained"]
    assert drained["live_calls"] == 0 and drained["outbox_flushed"] is True
    assert all({"timestamp", "level", "logger", "event"} <= line.keys() for line in log)
    messages = systemd.messages()
    ready = next(index for index, message in enumerate(messages) if "READY=1" in message)
    stopping = next(index for index, message in enumerate(messages) if "STOPPING=1" in message)
    assert ready < stopping


async def _both(check: Callable[[int], Awaitable[bool]], lead_ids: list[int]) -> bool:
    return all([await check(lead_id) for lead_id in lead_ids])


async def _killed(process: asyncio.subprocess.Process) -> None:
    """Whatever the test did, no daemon outlives it."""
    if process.returncode is None:
        process.kill()
        await process.wait()


def _owner_only(folder: Path, pattern: str) -> list[Path]:
    """The files matching ``pattern``; fails when one of them is open to group or others."""
    created = list(folder.glob(pattern))
    assert all(path.stat().st_mode & 0o077 == 0 for path in created), [(p, oct(p.stat().st_mode)) for p in created]
    return created
