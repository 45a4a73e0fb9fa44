"""The lead's life over time in the running daemon, on the simulator: a lead posted off-hours is
dialled at the opening (newest first), a duplicate POST makes no second call, and a lead nobody
worked is released to another manager with ``lead.reassigned`` on a real mosquitto."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from pbxsim import Behaviour, World
from pbxsim.tests.amitools import wait_until
from tests.integration.rig import Rig, actions_received, running

MOSCOW = ZoneInfo("Europe/Moscow")
MANAGERS = [
    {"id": "anna", "name": "Anna", "extension": "101"},
    {"id": "boris", "name": "Boris", "extension": "102"},
]


def _routing(managers: list[dict[str, str]] = MANAGERS, **scenario: Any) -> dict[str, Any]:
    return {
        "version": 2,
        "timezone": "Europe/Moscow",
        "managers": managers,
        "scenarios": [{"name": "default", "hold_limit": "30s", "ring_timeout": "5s", **scenario}],
    }


async def _lead(rig: Rig, lead_id: int) -> dict[str, Any]:
    body: dict[str, Any] = (await rig.http.get(f"/leads/{lead_id}")).json()
    return body


async def test_leads_posted_before_the_opening_are_dialled_at_it_newest_first(tmp_path: Path) -> None:
    # Moscow landlines (one zone); a single manager, so the backlog is dialled one lead at a time.
    phones = ["+74951110001", "+74951110002", "+74951110003"]
    world = World(
        clients={phone[1:]: Behaviour(answer_after=1, talk=3) for phone in phones},
        default_manager=lambda _extension: Behaviour(answer_after=1),
    )
    routing = _routing(MANAGERS[:1], call_window={})  # client hours 09:00-21:00 by default
    opening = datetime(2026, 11, 24, 9, 0, tzinfo=MOSCOW)  # a Tuesday
    start = datetime(2026, 11, 24, 8, 59, 0, tzinfo=MOSCOW)
    async with running(tmp_path, world=world, routing=routing, scale=10, start=start) as rig:
        ids = []
        for phone in phones:
            response = await rig.post(phone=phone, source="site")
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
            due = datetime.fromisoformat((await _lead(rig, ids[-1]))["next_attempt_at"])
            assert due == opening  # stored due at the opening, not dialled and deferred
        await rig.daemon.dialer.idle()
        assert rig.clock.now() < opening
        assert actions_received(rig.sim, "Originate") == []  # nobody is called before 09:00

        async def all_called() -> bool:
            statuses = [(await _lead(rig, lead_id))["status"] for lead_id in ids]
            return statuses == ["assigned"] * len(ids)

        await wait_until(all_called, 60, "every lead called and assigned after the opening")
        dialer = (await rig.http.get("/health")).json()["checks"]["dialer"]
        assert (dialer["answer_rate"], dialer["abandon_rate"]) == (1.0, 0.0)  # all three answered and talked
        started = {lead_id: (await _lead(rig, lead_id))["calls"][0]["started_at"] for lead_id in ids}
        assert all(datetime.fromisoformat(moment) >= opening for moment in started.values())
        assert sorted(ids, key=lambda lead_id: started[lead_id]) == list(reversed(ids))  # newest first


async def test_a_duplicate_post_is_merged_into_the_open_lead_and_makes_no_second_call(
    tmp_path: Path, mosquitto_port: int
) -> None:
    phone = "+74951110010"
    world = World(clients={phone[1:]: Behaviour(answer_after=None)}, default_manager=lambda _e: Behaviour())
    routing = _routing(max_attempts=2, retry_delays=["1h"])
    async with running(tmp_path, world=world, routing=routing, mqtt_port=mosquitto_port, scale=10) as rig:
        first = await rig.post(phone=phone, name="Ivan", source="site", external_id="crm-1")
        assert first.status_code == 201
        lead_id = first.json()["id"]
        await wait_until(lambda: len(actions_received(rig.sim, "Originate")) == 1, 10, "the first call")

        again = await rig.post(
            phone="8 (495) 111-00-10", name="Ivan P.", source="landing", external_id="crm-2", payload={"utm": "second"}
        )
        assert again.status_code == 200 and again.json()["id"] == lead_id
        # The CRM repeating the same POST is answered the same, and records nothing twice.
        repeated = await rig.post(phone=phone, name="Ivan P.", source="landing", external_id="crm-2")
        assert repeated.status_code == 200 and repeated.json()["id"] == lead_id

        async def duplicate_published() -> bool:
            return any(event["type"] == "lead.duplicate" for event in rig.mqtt)

        await wait_until(duplicate_published, 10, "lead.duplicate on MQTT")
        (event,) = [event for event in rig.mqtt if event["type"] == "lead.duplicate"]
        assert event["lead_id"] == lead_id and event["payload"] == {"utm": "second"}
        assert event["source"] == "landing" and event["external_id"] == "crm-2"
        history = (await rig.http.get(f"/leads/{lead_id}/history")).json()["history"]
        assert [(entry["kind"], entry["payload"], entry["name"]) for entry in history] == [
            ("duplicate", {"utm": "second"}, "Ivan P.")
        ]

        await rig.daemon.dialer.idle()
        assert len(actions_received(rig.sim, "Originate")) == 1  # still the one call
        assert sum(1 for event in rig.mqtt if event["type"] == "lead.created") == 1


@pytest.mark.timeout(60)
async def test_a_lead_nobody_worked_goes_to_another_manager_with_lead_reassigned_on_mqtt(
    tmp_path: Path, mosquitto_port: int
) -> None:
    phone = "+74951110020"
    world = World(
        clients={phone[1:]: Behaviour(answer_after=1, talk=2)},
        default_manager=lambda _extension: Behaviour(answer_after=1),
    )
    routing = _routing(sla_release={"after": "60s"})
    async with running(tmp_path, world=world, routing=routing, mqtt_port=mosquitto_port, scale=20) as rig:
        lead_id = (await rig.post(phone=phone, source="site")).json()["id"]

        async def reassigned() -> list[dict[str, Any]]:
            return [event for event in rig.mqtt if event["type"] == "lead.reassigned"]

        async def has_reassigned() -> bool:
            return bool(await reassigned())

        await wait_until(has_reassigned, 20, "lead.reassigned on MQTT")
        (event,) = await reassigned()
        (assigned,) = [event for event in rig.mqtt if event["type"] == "lead.assigned"]
        first_owner = assigned["owner_id"]
        assert event["lead_id"] == lead_id and event["previous_owner_id"] == first_owner
        assert event["owner_id"] in {"anna", "boris"} - {first_owner} and event["reason"] == "sla"
        # Released 60 s after the assignment (the bridge), not before.
        lead = await _lead(rig, lead_id)
        bridged = datetime.fromisoformat(lead["calls"][0]["bridged_at"])
        assert (datetime.fromisoformat(event["ts"]) - bridged).total_seconds() >= 60
        assert lead["owner_id"] == event["owner_id"]
        (entry,) = (await rig.http.get(f"/leads/{lead_id}/history")).json()["history"]
        assert entry["kind"] == "reassigned" and entry["reason"] == "sla"
        assert entry["previous_owner_id"] == first_owner and entry["owner_id"] == lead["owner_id"]
        # Both managers have had it now: it stays with the second, and no call was made for it.
        assert len(actions_received(rig.sim, "Originate")) == 1
