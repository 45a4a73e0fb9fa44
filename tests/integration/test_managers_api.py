"""Managers changed from outside: routing.yaml edited, checked like a reload, applied, published."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import pytest
import yaml

from leadrouter.cli import main
from pbxsim import Behaviour, World
from pbxsim.tests.amitools import wait_until
from tests.integration.rig import TOKEN, running

ROUTING_TEXT = """\
# the sales floor (this comment must survive a change from the API)
version: 2
timezone: Europe/Moscow
managers:
  - id: anna
    name: Anna Petrova
    extension: "101"   # her desk
    groups: [senior]
scenarios:
  - name: vip
    match: {sources: vip}
    pool: {managers: anna}
  - name: default
"""
WORLD = World(clients={}, managers={"101": Behaviour(answer_after=1), "102": Behaviour(answer_after=1)})


@pytest.mark.timeout(60)
async def test_managers_are_added_changed_and_removed_through_the_file_with_its_checks(
    tmp_path: Path, mosquitto_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    routing = yaml.safe_load(ROUTING_TEXT)
    async with running(tmp_path, world=WORLD, routing=routing, mqtt_port=mosquitto_port) as rig:
        # Each change is checked in the reload process: seconds on a loaded machine, not the default 5.
        rig.http.timeout = httpx.Timeout(60)
        rig.routing_file.write_text(ROUTING_TEXT)  # the same rules, with an ops' comments
        assert await rig.daemon.reload_routing()

        listed = (await rig.http.get("/managers")).json()["managers"]
        assert [(m["id"], m["extension"], m["groups"]) for m in listed] == [("anna", "101", ["senior"])]

        added = await rig.http.post(
            "/managers",
            json={"id": "boris", "name": "Boris", "extension": "102", "groups": ["junior"], "max_open_leads": 5},
        )
        assert added.status_code == 201, added.text
        assert added.json()["change"] == "added" and added.json()["manager"]["max_open_leads"] == 5
        assert [m.id for m in rig.daemon.routing.plan.managers] == ["anna", "boris"]  # in force at once
        assert len(rig.daemon.board) == 2
        text = rig.routing_file.read_text()
        assert "# the sales floor (this comment must survive" in text and "# her desk" in text
        assert yaml.safe_load(text)["managers"][1]["extension"] == "102"

        # Checked by the file's own rules, named by field; the file and the plan stay as they were.
        for change, field in [({"extension": "10x"}, "extension"), ({"weight": 500}, "weight")]:
            refused = await rig.http.patch("/managers/boris", json=change)
            assert refused.status_code == 422 and refused.json()["error"] == "invalid_manager"
            assert [p["field"] for p in refused.json()["problems"]] == [field]
        duplicate = await rig.http.patch("/managers/boris", json={"extension": "101"})
        assert duplicate.status_code == 422 and "101" in duplicate.text
        assert rig.routing_file.read_text() == text
        assert not [name for name in os.listdir(tmp_path) if name.startswith(".routing.yaml.")]  # no candidate left

        changed = await rig.http.patch("/managers/boris", json={"weight": 80, "max_open_leads": None})
        assert changed.status_code == 200
        boris = changed.json()["manager"]
        assert (boris["weight"], boris["max_open_leads"]) == (80, None)
        assert "max_open_leads" not in yaml.safe_load(rig.routing_file.read_text())["managers"][1]

        in_a_pool = await rig.http.delete("/managers/anna")
        assert in_a_pool.status_code == 422 and in_a_pool.json()["problems"][0]["field"].startswith("scenarios[0]")
        assert (await rig.http.delete("/managers/nobody")).status_code == 404
        assert (
            await rig.http.post("/managers", json={"id": "boris", "name": "B", "extension": "103"})
        ).status_code == 409
        removed = await rig.http.delete("/managers/boris")
        assert removed.status_code == 200 and removed.json() == {"change": "removed", "manager": None}
        assert [m.id for m in rig.daemon.routing.plan.managers] == ["anna"]

        def published() -> list[tuple[str, str]]:
            return [(e["manager_id"], e["change"]) for e in rig.mqtt if e["type"] == "manager.changed"]

        # The CLI goes through the same endpoints of the running daemon.
        cli = ["--config", str(tmp_path / "leadrouter.yaml"), "--url", str(rig.http.base_url), "--token", TOKEN]
        code = await asyncio.to_thread(main, ["managers", "set", "anna", "--weight", "70", "--skills", "b2b", *cli])
        assert code == 0 and "anna: changed" in capsys.readouterr().out
        assert await asyncio.to_thread(main, ["managers", "list", *cli]) == 0
        listing = capsys.readouterr().out
        assert "Anna Petrova" in listing and "b2b" in listing and " 70 " in listing
        code = await asyncio.to_thread(main, ["managers", "set", "anna", "--extension", "1x", *cli])
        assert code == 1 and "extension" in capsys.readouterr().err
        anna = rig.daemon.routing.plan.managers[0]
        assert (anna.weight, anna.skills, anna.extension) == (70, frozenset({"b2b"}), "101")

        await wait_until(lambda: len(published()) == 4, 10, "four manager.changed events")
        assert published() == [("boris", "added"), ("boris", "changed"), ("boris", "removed"), ("anna", "changed")]
