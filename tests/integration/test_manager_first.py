"""``dial_order: manager_first`` in the running daemon on the simulator (the shipped dialplan's
leadrouter-dial-client context): the manager's phone rings first, the client is dialled once he
answers, and no client waits on hold."""

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
    ],
    "scenarios": [
        {"name": "default", "dial_order": "manager_first", "ring_timeout": "3s", "client_ring_timeout": "5s"},
    ],
}


async def _ended(rig: Rig, lead_id: int) -> dict[str, Any]:
    async def done() -> bool:
        calls = (await rig.http.get(f"/leads/{lead_id}")).json()["calls"]
        return bool(calls) and calls[-1]["state"] == CallState.ENDED

    await wait_until(done, 15, f"lead {lead_id}'s call to end")
    lead: dict[str, Any] = (await rig.http.get(f"/leads/{lead_id}")).json()
    return lead


async def test_the_manager_answers_first_then_the_client_is_dialled_and_never_holds(
    tmp_path: Path, database_url: str
) -> None:
    world = World(
        clients={"79161234501": Behaviour(answer_after=2, talk=10), "79161234508": Behaviour(answer_after=None)},
        managers={"101": Behaviour(answer_after=None), "102": Behaviour(answer_after=1)},
    )
    async with running(tmp_path, database=database_url, world=world, routing=ROUTING, scale=20) as rig:
        lead = await _ended(rig, (await rig.post(phone="+79161234501")).json()["id"])
        (call,) = lead["calls"]
        # Anna (free longest) let it ring 3 s; Boris answered, then the client did.
        assert [(leg["manager_id"], leg["result"]) for leg in call["managers_tried"]] == [
            ("anna", "no_answer"),
            ("boris", "answered"),
        ]
        assert (call["disposition"], call["manager_id"], lead["owner_id"]) == ("completed", "boris", "boris")
        assert call["hold_seconds"] == 0.0 and call["talk_seconds"] > 5
        originates = actions_received(rig.sim, "Originate")
        assert [(o["Channel"], o["Context"]) for o in originates] == [
            ("Local/101@sim-managers", "leadrouter-dial-client"),
            ("Local/102@sim-managers", "leadrouter-dial-client"),
        ]
        # One Originate, one channel: Boris's leg has its own id, which names the recording.
        assert call["recording_file"] == f"leadrouter/{originates[1]['ChannelId']}.wav"
        sent = [headers for headers in rig.sim.received if ("Action", "Originate") in headers]
        variables = [value for name, value in sent[1] if name == "Variable"]
        assert {"LEADROUTER_CLIENT=79161234501", "LEADROUTER_CLIENT_RING_TIMEOUT=5"} <= set(variables)
        assert actions_received(rig.sim, "Redirect") == []  # nobody was put on hold or moved

        # A client who does not answer within client_ring_timeout costs the attempt; Boris is free again.
        silent = await _ended(rig, (await rig.post(phone="+79161234508")).json()["id"])
        assert silent["calls"][0]["disposition"] == "no_answer" and silent["attempts"] == 1
        assert silent["calls"][0]["hold_seconds"] is None
        await wait_until(lambda: rig.daemon.board.is_free("boris"), 5, "Boris to be free")
