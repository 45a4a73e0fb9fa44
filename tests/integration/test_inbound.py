"""Inbound calls on the simulator: a known client calling the company number reaches his owner;
an unknown caller becomes a lead `inbound:<number>`; a number not ours is apologised to."""

from __future__ import annotations

import contextlib
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
    ],
    "scenarios": [{"name": "default", "owner_first": {"owner_wait": "10s"}, "caller_name": "{name} · {source}"}],
}
COMPANY = "74951234567"


def _running(
    tmp_path: Path, mosquitto_port: int, *, routing: dict[str, Any], client_talks: float
) -> contextlib.AbstractAsyncContextManager[Rig]:
    """The daemon taking the company number's callers; clients (and callers) talk for ``client_talks``."""
    world = World(
        default_client=lambda _number: Behaviour(answer_after=1, talk=client_talks),
        default_manager=lambda _extension: Behaviour(answer_after=1, talk=2),
    )
    sections = {"pbx": {"inbound_numbers": [COMPANY]}}
    return running(tmp_path, world=world, routing=routing, mqtt_port=mosquitto_port, scale=20, sections=sections)


async def _calls(rig: Rig, lead_id: int) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = (await rig.http.get(f"/leads/{lead_id}")).json()["calls"]
    return calls


async def test_a_known_client_calling_in_reaches_his_owner(tmp_path: Path, mosquitto_port: int) -> None:
    async with _running(tmp_path, mosquitto_port, routing=ROUTING, client_talks=6) as rig:
        lead_id = (await rig.post(phone="+79161234561", name="Иван", source="site")).json()["id"]

        async def ended(count: int) -> bool:
            calls = await _calls(rig, lead_id)
            return len(calls) == count and calls[-1]["state"] == CallState.ENDED

        await wait_until(lambda: ended(1), 15, "the first call to end")
        owner = (await rig.http.get(f"/leads/{lead_id}")).json()["owner_id"]
        other = {"anna": "boris", "boris": "anna"}[owner]
        # The other manager has now been free longer, so longest idle alone would pick him.
        rig.sim.place_inbound("79161234561", COMPANY)
        await wait_until(lambda: ended(2), 15, "the inbound call to end")
        call = (await _calls(rig, lead_id))[-1]
        assert call["disposition"] == "completed" and call["manager_id"] == owner
        assert [leg["manager_id"] for leg in call["managers_tried"]] == [owner]
        extension = {"anna": "101", "boris": "102"}
        assert actions_received(rig.sim, "Redirect")[-1]["Exten"] == extension[owner]
        # His channel got what the connect context reads, the lead's name for the manager's phone.
        setvars = {a["Variable"]: a["Value"] for a in actions_received(rig.sim, "Setvar")}
        assert setvars["LEADROUTER_CALLER_NAME"] == "Иван · site" and setvars["LEADROUTER_LEAD"] == str(lead_id)

        # An unknown caller: a new lead from the inbound number, routed by the scenarios.
        rig.sim.place_inbound("+79161234999", COMPANY)

        def created() -> list[dict[str, Any]]:
            return [m for m in rig.mqtt if m["type"] == "lead.created" and m["phone"] == "+79161234999"]

        await wait_until(lambda: bool(created()), 10, "lead.created for the unknown caller")
        (new,) = created()
        assert new["source"] == f"inbound:{COMPANY}"

        async def new_ended() -> bool:
            calls = await _calls(rig, new["lead_id"])
            return bool(calls) and calls[-1]["state"] == CallState.ENDED

        await wait_until(new_ended, 15, "the unknown caller's call to end")
        assert (await rig.http.get(f"/leads/{new['lead_id']}")).json()["owner_id"] in {owner, other}

        # A number the daemon does not take: the caller hears the apology, no lead is made.
        rig.sim.place_inbound("79161234562", "74950000000")
        await wait_until(
            lambda: any(a["Context"] == "leadrouter-sorry" for a in actions_received(rig.sim, "Redirect")),
            10,
            "the apology",
        )
        assert not [m for m in rig.mqtt if m["type"] == "lead.created" and m["phone"] == "+79161234562"]


async def test_a_caller_on_hold_across_a_restart_is_put_through_after_it(tmp_path: Path, mosquitto_port: int) -> None:
    """His channel is named by the PBX, not by us: the restarted daemon finds it in the listing by
    the context he waits in, adopts his call and steers it as any other."""
    routing = {**ROUTING, "scenarios": [{"name": "default", "hold_limit": "10m"}]}
    async with _running(tmp_path, mosquitto_port, routing=routing, client_talks=3600) as rig:  # he waits, patiently
        for manager_id in ("anna", "boris"):  # nobody free: he stays on hold
            paused = await rig.http.post(f"/managers/{manager_id}/pause", json={"reason": "meeting"})
            assert paused.status_code == 200
        rig.sim.place_inbound("79161234561", COMPANY)

        def created() -> list[dict[str, Any]]:
            return [m for m in rig.mqtt if m["type"] == "lead.created" and m["phone"] == "+79161234561"]

        await wait_until(lambda: bool(created()), 10, "lead.created for the caller")
        lead_id = created()[0]["lead_id"]

        async def state_is(state: CallState) -> bool:
            calls = await _calls(rig, lead_id)
            return bool(calls) and calls[-1]["state"] == state

        await wait_until(lambda: state_is(CallState.HOLDING), 10, "the caller on hold")
        await rig.stop_daemon()
        await rig.start_daemon()
        assert (await rig.http.post("/managers/anna/resume")).status_code == 200

        await wait_until(lambda: state_is(CallState.ENDED), 15, "the adopted caller's call to end")
        (call,) = await _calls(rig, lead_id)
        assert call["disposition"] == "completed" and call["manager_id"] == "anna"
        assert actions_received(rig.sim, "Redirect")[-1]["Exten"] == "101"


async def test_a_caller_who_called_while_the_daemon_was_away_is_taken_after_it(
    tmp_path: Path, mosquitto_port: int
) -> None:
    """Nobody heard his UserEvent: the listing after the start shows him in leadrouter-inbound's
    music, and he is taken as if it had been heard."""
    async with _running(tmp_path, mosquitto_port, routing=ROUTING, client_talks=3600) as rig:
        await rig.stop_daemon()
        rig.sim.place_inbound("79161234561", COMPANY)

        def waiting() -> bool:
            return any(
                c.context == "leadrouter-inbound" and c.application == "MusicOnHold" for c in rig.sim.switch.live()
            )

        await wait_until(waiting, 10, "the caller in the inbound context's music")
        await rig.start_daemon()

        def created() -> list[dict[str, Any]]:
            return [m for m in rig.mqtt if m["type"] == "lead.created" and m["phone"] == "+79161234561"]

        await wait_until(lambda: bool(created()), 10, "lead.created for the caller")
        lead = created()[0]
        assert lead["source"] == f"inbound:{COMPANY}"

        async def ended() -> bool:
            calls = await _calls(rig, lead["lead_id"])
            return bool(calls) and calls[-1]["state"] == CallState.ENDED

        await wait_until(ended, 15, "his call to end")
        (call,) = await _calls(rig, lead["lead_id"])
        assert call["disposition"] == "completed" and call["manager_id"] in {"anna", "boris"}
