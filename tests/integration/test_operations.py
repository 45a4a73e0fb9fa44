"""What ops see of a running daemon (simulator over TCP, SQLite, a real mosquitto): /metrics, /health."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

from pbxsim import Behaviour, World
from pbxsim.tests.amitools import wait_until
from tests.conftest import JsonLog
from tests.integration.rig import running, scrape_metrics

ROUTING = {
    "version": 1,
    "managers": [
        {"id": "anna", "name": "Anna", "extension": "101"},
        {"id": "boris", "name": "Boris", "extension": "102"},
    ],
    "scenarios": [{"name": "default", "hold_limit": "60s", "max_attempts": 1}],
}


def _phone(index: int) -> str:
    return f"+7916700{index:04d}"


async def test_metrics_count_what_the_daemon_did(tmp_path: Path, database_url: str, mosquitto_port: int) -> None:
    # One client talks and hangs up, one talks on, one never answers.
    world = World(
        clients={
            _phone(0)[1:]: Behaviour(answer_after=1, talk=5),
            _phone(1)[1:]: Behaviour(answer_after=1, talk=100_000),  # still talking when scraped
            _phone(2)[1:]: Behaviour(answer_after=None),
        },
        managers={"101": Behaviour(answer_after=1), "102": Behaviour(answer_after=1)},
    )
    async with running(tmp_path, database=database_url, world=world, routing=ROUTING, mqtt_port=mosquitto_port) as rig:
        for index in range(3):
            assert (await rig.post(phone=_phone(index))).status_code == 201

        async def settled() -> bool:
            counts = await rig.daemon.queries.lead_status_counts()
            return counts == {"assigned": 1, "dialing": 1, "failed": 1} and rig.daemon.dialer.live_calls == 1

        await wait_until(settled, 20, "a lead assigned, one failed, one on the phone")
        await wait_until(lambda: rig.daemon.publisher and rig.daemon.publisher.published >= 10, 10, "events published")
        samples = await scrape_metrics(rig)

    assert all(name.startswith("leadrouter_") for name, _ in samples)
    assert samples[("leadrouter_leads", (("state", "assigned"),))] == 1
    assert samples[("leadrouter_leads", (("state", "dialing"),))] == 1
    assert samples[("leadrouter_leads", (("state", "failed"),))] == 1
    assert samples[("leadrouter_leads", (("state", "new"),))] == 0
    assert samples[("leadrouter_calls_in_progress", (("pbx", "default"),))] == 1
    # Boris or Anna is on the call that is still up; the other's phone is idle again.
    assert samples[("leadrouter_managers", (("pbx", "default"), ("state", "busy")))] == 1
    assert samples[("leadrouter_managers", (("pbx", "default"), ("state", "free")))] == 1
    assert samples[("leadrouter_ami_connected", (("pbx", "default"),))] == 1
    assert samples[("leadrouter_mqtt_connected", ())] == 1
    assert samples[("leadrouter_database_writable", ())] == 1
    assert samples[("leadrouter_events_published_total", ())] >= 10
    assert samples[("leadrouter_outbox_backlog", ())] >= 0
    assert samples[("leadrouter_outbox_lag_seconds", ())] >= 0
    # Every lead was dialled once, each timed from its arrival.
    assert samples[("leadrouter_speed_to_dial_seconds_count", ())] == 3
    assert samples[("leadrouter_speed_to_dial_seconds_bucket", (("le", "+Inf"),))] == 3
    assert samples[("leadrouter_originate_latency_seconds_count", ())] == 3
    assert samples[("leadrouter_event_loop_lag_seconds_count", ())] >= 1
    for task in ("publisher", "dialer", "database-recovery", "loop-lag", "http"):
        assert samples[("leadrouter_task_up", (("task", task),))] == 1
    assert samples[("leadrouter_breaker_state", (("pbx", "default"), ("state", "closed")))] == 1
    assert samples[("leadrouter_breaker_state", (("pbx", "default"), ("state", "open")))] == 0
    assert samples[("leadrouter_pbx_failures_total", (("pbx", "default"),))] == 0


async def test_health_says_each_part_and_a_dead_task_makes_it_unhealthy(
    tmp_path: Path, database_url: str, mosquitto_port: int, json_log: JsonLog
) -> None:
    async with running(
        tmp_path, database=database_url, world=World(), routing=ROUTING, mqtt_port=mosquitto_port
    ) as rig:
        await wait_until(lambda: rig.daemon.publisher and rig.daemon.publisher.connected, 5, "the broker")
        # Until the PBX said FullyBooted and its calls were read, dials wait: "degraded" is right then.
        await wait_until(lambda: rig.daemon.dialer.breaker_state == "closed", 5, "the PBX read after login")
        healthy = await rig.http.get("/health")
        assert healthy.status_code == 200, healthy.text
        body = healthy.json()
        assert body["status"] == "ok"
        assert {name: check["state"] for name, check in body["checks"].items()} == {
            "ami": "up",
            "database": "up",
            "mqtt": "up",
            "publisher": "publishing",
            "dialer": "running",
            "tasks": "running",
        }

        # The dialer's task ends as no task should (here: cancelled from outside it).
        (dialer,) = [task for task in asyncio.all_tasks() if task.get_name() == "dialer"]
        dialer.cancel()
        await wait_until(lambda: not rig.daemon.tasks.all_alive, 5, "the death noticed")
        unhealthy = await rig.http.get("/health")
        assert unhealthy.status_code == 503
        body = unhealthy.json()
        assert body["status"] == "unhealthy"
        assert body["checks"]["dialer"]["state"] == "died"
        assert body["checks"]["tasks"]["died"] == {"dialer": "cancelled"}
        samples = await scrape_metrics(rig)
        assert samples[("leadrouter_task_up", (("task", "dialer"),))] == 0
    (died,) = json_log.events("task.died")
    assert died["task"] == "dialer" and died["level"] == "critical"


async def test_the_garbage_collector_is_on_again_once_the_daemon_has_started(tmp_path: Path) -> None:
    # `leadrouter run` starts with it off (cli._run): the start leaves little garbage, and what it
    # made is frozen out of the collector's sight once the daemon has started, then it runs again.
    gc.disable()
    try:
        async with running(tmp_path, world=World(), routing=ROUTING):
            assert gc.isenabled()
    finally:
        gc.enable()
