"""Manager states in the running daemon on the simulator: a paused manager and one whose phone is
unregistered are never offered a client; every change is stored and published as manager.state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pbxsim import Behaviour, World
from pbxsim.tests.amitools import wait_until
from router.model import CallState
from tests.integration.rig import Rig, actions_received, running

ROUTING: dict[str, Any] = {
    "version": 2,
    "timezone": "Europe/Moscow",
    "managers": [
        {"id": "anna", "name": "Anna", "extension": "101"},
        {"id": "boris", "name": "Boris", "extension": "102"},
        {"id": "vera", "name": "Vera", "extension": "103"},
    ],
    "scenarios": [{"name": "default", "hold_limit": "20s", "wrap_up": "2s"}],
}
# The managers' phones as a PBX caches their states (Custom: devices stand in for PJSIP endpoints).
DEVICES = {"pbx": {"manager_device": "Custom:{extension}"}}


async def _states(rig: Rig) -> dict[str, tuple[str, str | None]]:
    managers = (await rig.http.get("/managers")).json()["managers"]
    return {m["id"]: (m["state"], m["reason"]) for m in managers}


async def _ended(rig: Rig, lead_id: int) -> dict[str, Any]:
    async def done() -> bool:
        calls = (await rig.http.get(f"/leads/{lead_id}")).json()["calls"]
        return bool(calls) and calls[-1]["state"] == CallState.ENDED

    await wait_until(done, 15, f"lead {lead_id}'s call to end")
    lead: dict[str, Any] = (await rig.http.get(f"/leads/{lead_id}")).json()
    return lead


async def test_paused_and_unregistered_managers_are_never_offered_a_call(tmp_path: Path, mosquitto_port: int) -> None:
    world = World(
        default_client=lambda _number: Behaviour(answer_after=1, talk=30),
        default_manager=lambda _extension: Behaviour(answer_after=1, talk=2),
    )
    async with running(
        tmp_path,
        world=world,
        routing=ROUTING,
        mqtt_port=mosquitto_port,
        scale=20,
        sections=DEVICES,
        device_states={"Custom:102": "UNAVAILABLE"},  # Boris's phone is unregistered when the daemon logs in
    ) as rig:

        async def boris_offline() -> bool:
            return (await _states(rig))["boris"] == ("offline", "unregistered")

        await wait_until(boris_offline, 5, "boris offline from the DeviceStateList at login")
        paused = await rig.http.post("/managers/anna/pause", json={"reason": "lunch"})
        assert paused.status_code == 200 and paused.json() == {"id": "anna", "state": "paused", "reason": "lunch"}

        for phone in ("+79161234561", "+79161234562", "+79161234563"):
            lead = await _ended(rig, (await rig.post(phone=phone, name="Иван", source="site")).json()["id"])
            assert lead["owner_id"] == "vera"
            assert [[leg["manager_id"] for leg in call["managers_tried"]] for call in lead["calls"]] == [["vera"]]
        # Nothing ever rang Anna's or Boris's phone: every Redirect went to Vera's.
        assert {action["Exten"] for action in actions_received(rig.sim, "Redirect")} == {"103"}

        # Boris registers again (DeviceStateChange) and Anna is back from lunch: both are offered.
        rig.sim.set_device_state("Custom:102", "NOT_INUSE")
        assert (await rig.http.post("/managers/anna/resume")).json() == {
            "id": "anna",
            "state": "available",
            "reason": None,
        }

        async def all_back() -> bool:
            states = await _states(rig)
            return states["anna"] == states["boris"] == ("available", None)

        await wait_until(all_back, 5, "anna and boris available")
        owners = set()
        for phone in ("+79161234564", "+79161234565", "+79161234566"):
            owners.add((await _ended(rig, (await rig.post(phone=phone)).json()["id"]))["owner_id"])
        assert {"anna", "boris"} <= owners

        # Each change went out on MQTT as manager.state, in order per manager.
        def published(manager_id: str) -> list[tuple[str, str | None]]:
            return [
                (m["state"], m["reason"])
                for m in rig.mqtt
                if m["type"] == "manager.state" and m["manager_id"] == manager_id
            ]

        await wait_until(lambda: ("available", None) in published("anna"), 5, "anna's resume on MQTT")
        assert published("anna")[:2] == [("paused", "lunch"), ("available", None)]
        assert published("boris")[:2] == [("offline", "unregistered"), ("available", None)]
        assert ("wrap_up", None) in published("vera")  # the scenario's 2 s after each talked call

        # An unknown manager, a reason that is no text: clear errors.
        missing = await rig.http.post("/managers/nobody/pause", json={"reason": "lunch"})
        assert missing.status_code == 404 and missing.json()["problems"][0]["field"] == "manager_id"
        bad = await rig.http.post("/managers/anna/pause", json={"reason": "a\r\nb"})
        assert bad.status_code == 422


async def test_a_pause_outlives_a_restart(tmp_path: Path) -> None:
    async with running(tmp_path, world=World(), routing=ROUTING) as rig:
        await rig.http.post("/managers/vera/pause", json={"reason": "training"})
        await rig.daemon.dialer.idle()
        await rig.stop_daemon()
        await rig.start_daemon()
        assert (await _states(rig))["vera"] == ("paused", "training")
