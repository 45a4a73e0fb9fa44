"""Answering machines on the simulator: with a scenario's `amd`, AMD() listens to the answer first;
a machine is hung up with disposition `machine` and retried, never bridged to a manager."""

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
    "managers": [{"id": "anna", "name": "Anna", "extension": "101"}],
    "scenarios": [{"name": "default", "amd": True, "retry_delays": ["10m"], "whisper": "leadrouter/lead"}],
}
PERSON, MACHINE, SILENT = "+79161234561", "+79161234562", "+79161234563"


async def _ended(rig: Rig, lead_id: int) -> dict[str, Any]:
    async def done() -> bool:
        calls = (await rig.http.get(f"/leads/{lead_id}")).json()["calls"]
        return bool(calls) and calls[-1]["state"] == CallState.ENDED

    await wait_until(done, 20, f"lead {lead_id}'s call to end")
    lead: dict[str, Any] = (await rig.http.get(f"/leads/{lead_id}")).json()
    return lead


def _amd_statuses(rig: Rig) -> list[str | None]:
    """What AMD() decided on each client leg the PBX had, in order."""
    return [
        record.variables.get("AMDSTATUS")
        for record in rig.sim.channel_history()
        if record.uniqueid.startswith("lr-") and ";" not in record.uniqueid
    ]


async def test_a_machine_is_hung_up_and_retried_never_bridged(tmp_path: Path, mosquitto_port: int) -> None:
    world = World(
        clients={
            PERSON[1:]: Behaviour(answer_after=1, talk=20, greeting=0.5),  # "hello?", then listens
            MACHINE[1:]: Behaviour(answer_after=1, talk=60, greeting=20),  # a voicemail greeting
            SILENT[1:]: Behaviour(answer_after=1, talk=20),  # says nothing: AMD is not sure, a person for us
        },
        default_manager=lambda _extension: Behaviour(answer_after=1, talk=3),
    )
    async with running(tmp_path, world=world, routing=ROUTING, mqtt_port=mosquitto_port, scale=20) as rig:
        machine = await _ended(rig, (await rig.post(phone=MACHINE)).json()["id"])
        (call,) = machine["calls"]
        assert call["disposition"] == "machine" and call["managers_tried"] == [] and call["bridged_at"] is None
        assert machine["status"] == "scheduled" and machine["attempts"] == 1  # retried later, like a no answer
        assert actions_received(rig.sim, "Redirect") == []  # nobody was rung for it

        person = await _ended(rig, (await rig.post(phone=PERSON)).json()["id"])
        assert person["calls"][0]["disposition"] == "completed" and person["owner_id"] == "anna"
        silent = await _ended(rig, (await rig.post(phone=SILENT)).json()["id"])
        assert silent["calls"][0]["disposition"] == "completed"

        # Every client leg was told to run AMD; and the whisper went with it.
        variables = [value for headers in rig.sim.received for key, value in headers if key == "Variable"]
        assert variables.count("LEADROUTER_AMD=1") == 3
        assert variables.count("LEADROUTER_WHISPER=leadrouter/lead") == 3
        assert _amd_statuses(rig) == ["MACHINE", "HUMAN", "NOTSURE"]

        await wait_until(
            lambda: any(m["type"] == "call.ended" and m["disposition"] == "machine" for m in rig.mqtt),
            5,
            "call.ended machine on MQTT",
        )


async def test_a_person_screened_while_the_link_was_down_is_put_through_after_it(tmp_path: Path) -> None:
    """AMD()'s verdict is a UserEvent: one sent while the AMI link is gone is lost. The listing
    after the login shows the client past AMD (a machine would have been hung up): a person, in line."""
    routing = {**ROUTING, "scenarios": [{"name": "default", "amd": True, "hold_limit": "10m"}]}
    world = World(
        # Patient: he waits out the reconnect (seconds, which the scaled clock makes minutes).
        clients={PERSON[1:]: Behaviour(answer_after=1, talk=3600, greeting=0.5)},
        default_manager=lambda _extension: Behaviour(answer_after=1, talk=3),
    )
    async with running(tmp_path, world=world, routing=routing, scale=20) as rig:
        lead_id = (await rig.post(phone=PERSON)).json()["id"]

        def client_in(application: str) -> bool:
            return any(
                chan.application == application and chan.uniqueid.startswith("lr-") for chan in rig.sim.live_channels()
            )

        await wait_until(lambda: client_in("AMD"), 10, "the client's leg in AMD()")
        rig.sim.stall(True)  # a hung Asterisk: it sends nothing, the verdict included
        await wait_until(lambda: client_in("MusicOnHold"), 10, "AMD() done: the person on hold")
        await rig.sim.drop_connections()
        rig.sim.stall(False)

        person = await _ended(rig, lead_id)
        (call,) = person["calls"]
        assert call["disposition"] == "completed" and person["owner_id"] == "anna"
        assert _amd_statuses(rig) == ["HUMAN"]  # AMD() did decide, unheard
