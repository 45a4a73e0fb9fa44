"""The manager's phone shows the lead's name: read from the simulator's channel of his phone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pbxsim import Behaviour, World
from pbxsim.tests.amitools import wait_until
from tests.integration.rig import actions_received, running

ROUTING: dict[str, Any] = {
    "version": 2,
    "timezone": "Europe/Moscow",
    "managers": [{"id": "anna", "name": "Anna", "extension": "101"}],
    "scenarios": [
        {"name": "ads", "match": {"sources": "yandex-*"}, "caller_name": "{name} · {source}"},
        {"name": "default", "dial_order": "manager_first", "caller_name": "{name}"},
    ],
}


async def test_the_managers_leg_carries_the_leads_name(tmp_path: Path) -> None:
    world = World(
        default_client=lambda _number: Behaviour(answer_after=1, talk=30),
        default_manager=lambda _extension: Behaviour(answer_after=1, talk=5),
    )
    async with running(tmp_path, world=world, routing=ROUTING, scale=20) as rig:
        # A name with a line break and dialplan characters: they never reach the PBX.
        await rig.post(phone="+79161234561", name="Иван ${EXTEN} Петров,\r\n", source="yandex-direct")

        def manager_leg() -> list[str]:
            return [
                chan.caller_name
                for chan in rig.sim.live_channels()
                if chan.name.startswith("Local/101@sim-managers") and chan.name.endswith(";2")
            ]

        await wait_until(lambda: bool(manager_leg()), 10, "Anna's phone to ring")
        assert manager_leg() == ["Иван EXTEN Петров · yandex-direct"]
        (originate,) = actions_received(rig.sim, "Originate")
        variables = [value for headers in rig.sim.received for key, value in headers if key == "Variable"]
        assert "LEADROUTER_CALLER_NAME=Иван EXTEN Петров · yandex-direct" in variables
        assert originate["Context"] == "leadrouter-hold"
        await wait_until(lambda: not rig.sim.live_channels(), 15, "the call to end")

        # Manager first: the Originate to his phone carries the name as its caller ID.
        await rig.post(phone="+79161234562", name="Ольга", source="site")
        await wait_until(lambda: bool(manager_leg()), 10, "Anna's phone to ring again")
        assert manager_leg() == ["Ольга"]
        assert actions_received(rig.sim, "Originate")[-1]["CallerID"] == '"Ольга" <79161234562>'
