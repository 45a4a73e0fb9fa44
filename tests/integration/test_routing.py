"""Routing version 2 in the running daemon: match rules pick the scenario, capacity skips a manager,
the CRM's outcome frees him, and a restart remembers who owns what."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pbxsim import Behaviour, World
from pbxsim.tests.amitools import wait_until
from router.model import CallState, Disposition, Outcome
from router.routing import Strategy
from tests.integration.rig import Rig, running
from tests.router.plans import offered

ROUTING: dict[str, Any] = {
    "version": 2,
    "timezone": "Europe/Moscow",
    "managers": [
        {"id": "anna", "name": "Anna", "extension": "101", "groups": ["senior"], "max_open_leads": 1},
        {"id": "boris", "name": "Boris", "extension": "102"},
    ],
    "scenarios": [
        {
            "name": "vip",
            "match": {"tags": "vip"},
            "pool": {"groups": "senior"},
            "hold_limit": "3s",
            "max_attempts": 2,
            "retry_delays": ["1h"],
        },
        {"name": "default"},
    ],
}
VIP = {"tags": ["vip"]}


async def _ended(rig: Rig, lead_id: int) -> dict[str, Any]:
    async def done() -> bool:
        calls = (await rig.http.get(f"/leads/{lead_id}")).json()["calls"]
        return bool(calls) and calls[-1]["state"] == CallState.ENDED

    await wait_until(done, 10, f"lead {lead_id}'s call to end")
    lead: dict[str, Any] = (await rig.http.get(f"/leads/{lead_id}")).json()
    return lead


async def test_a_manager_at_capacity_is_skipped_until_the_crm_decides_a_lead(
    tmp_path: Path, database_url: str, mosquitto_port: int
) -> None:
    world = World(
        # Clients stay on the line past the VIP hold limit (3 s): an unserved one is apologised to.
        default_client=lambda _number: Behaviour(answer_after=1, talk=10),
        default_manager=lambda _extension: Behaviour(answer_after=1),
    )
    async with running(
        tmp_path, database=database_url, world=world, routing=ROUTING, mqtt_port=mosquitto_port, scale=20
    ) as rig:
        first = (await rig.post(phone="+79161234567", payload=VIP)).json()["id"]
        taken = await _ended(rig, first)
        assert (taken["owner_id"], taken["calls"][0]["scenario"]) == ("anna", "vip")

        # Anna owns one undecided lead, her max: the next VIP client finds nobody in the pool.
        second = (await rig.post(phone="+79161234568", payload=VIP)).json()["id"]
        skipped = await _ended(rig, second)
        assert skipped["calls"][0]["disposition"] == Disposition.NO_MANAGER
        assert skipped["calls"][0]["managers_tried"] == []

        won = await rig.http.patch(f"/leads/{first}", json={"outcome": "won", "reason": "paid", "author": "crm:olga"})
        assert won.status_code == 200 and won.json()["outcome"] == Outcome.WON
        assert (await rig.http.get(f"/leads/{first}")).json()["outcome"] == "won"

        third = (await rig.post(phone="+79161234569", payload=VIP)).json()["id"]
        assert (await _ended(rig, third))["owner_id"] == "anna"

        await wait_until(lambda: any(m["type"] == "lead.outcome" for m in rig.mqtt), 5, "lead.outcome on MQTT")
        (event,) = [message for message in rig.mqtt if message["type"] == "lead.outcome"]
        assert (event["lead_id"], event["outcome"], event["owner_id"], event["scenario"]) == (
            first,
            "won",
            "anna",
            "vip",
        )
        assert (event["author"], event["reason"], event["previous_outcome"]) == ("crm:olga", "paid", None)

        # After a restart the board counts Anna's open lead again, from storage.
        await wait_until(lambda: rig.daemon.board.free_count == 1, 5, "Anna to be out of rotation")
        await rig.stop_daemon()
        await rig.start_daemon()
        assert offered(rig.daemon.board, now=rig.clock.now()) == ["boris"]


async def test_outcome_requests_are_checked_and_documented(tmp_path: Path, database_url: str) -> None:
    async with running(tmp_path, database=database_url, world=World(), routing=ROUTING, scale=20) as rig:
        lead_id = (await rig.post(phone="+79161234567")).json()["id"]

        missing = await rig.http.patch("/leads/999", json={"outcome": "lost", "author": "crm"})
        assert missing.status_code == 404 and missing.json()["problems"] == [
            {"field": "lead_id", "reason": "no lead 999"}
        ]
        bad = await rig.http.patch(f"/leads/{lead_id}", json={"outcome": "sold", "authr": "crm"})
        assert bad.status_code == 422
        assert {problem["field"] for problem in bad.json()["problems"]} == {"outcome", "author", "authr"}
        anonymous = await rig.http.patch(
            f"/leads/{lead_id}", json={"outcome": "lost", "author": "crm"}, headers={"Authorization": ""}
        )
        assert anonymous.status_code == 401

        spec = (await rig.http.get("/openapi.json")).json()
        operation = spec["paths"]["/leads/{lead_id}"]["patch"]
        assert "lead.outcome" in operation["description"]
        body = spec["components"]["schemas"]["OutcomeIn"]
        assert set(body["properties"]) == {"outcome", "reason", "author"} and body["required"] == ["outcome", "author"]


async def test_a_reload_applies_new_options_and_refuses_a_broken_file(tmp_path: Path, database_url: str) -> None:
    async with running(tmp_path, database=database_url, world=World(), routing=ROUTING, scale=20) as rig:
        changed = {**ROUTING, "scenarios": [*ROUTING["scenarios"][:-1], {"name": "default", "strategy": "weighted"}]}
        rig.routing_file.write_text(yaml.safe_dump(changed))
        assert await rig.daemon.reload_routing() is True
        assert rig.daemon.routing.plan.scenarios[-1].strategy is Strategy.WEIGHTED

        rig.routing_file.write_text(yaml.safe_dump({**changed, "timezone": "Mars/Olympus"}))
        assert await rig.daemon.reload_routing() is False
        assert rig.daemon.routing.plan.scenarios[-1].strategy is Strategy.WEIGHTED
        lead_id = (await rig.post(phone="+79161234567", payload=VIP)).json()["id"]
        assert (await _ended(rig, lead_id))["calls"][0]["scenario"] == "vip"  # the running rules route on
