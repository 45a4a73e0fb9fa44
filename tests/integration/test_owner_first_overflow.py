"""Owner first and overflow in the running daemon, on the simulator: a repeat lead's owner is
offered the client first (free, busy, not answering), and a further pool takes over after its delay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pbxsim import Behaviour, World
from pbxsim.tests.amitools import wait_until
from router.model import CallState
from tests.integration.rig import Rig, running

OWNER_WAIT = 4.0
OVERFLOW_AFTER = 3.0
ROUTING: dict[str, Any] = {
    "version": 2,
    "timezone": "Europe/Moscow",
    "managers": [
        {"id": "anna", "name": "Anna", "extension": "101"},
        {"id": "boris", "name": "Boris", "extension": "102"},
    ],
    "scenarios": [
        {
            "name": "vip",
            "match": {"tags": "vip"},
            "pool": {"managers": "anna"},
            "overflow": [{"after": f"{OVERFLOW_AFTER}s", "pool": {}}],
            "hold_limit": "20s",
        },
        {
            "name": "default",
            "owner_first": {"owner_wait": f"{OWNER_WAIT}s", "owner_changes": False},
            "hold_limit": "20s",
            "ring_timeout": "2s",
            # A repeat lead posted while the phone's first call is live is a duplicate, merged
            # into it (tests/integration/test_lifecycle.py); here each is a lead of its own.
            "duplicate_window": "off",
        },
    ],
}
REPEAT = "+79161234501"  # the returning client's phone


async def _call(rig: Rig, lead_id: int, state: CallState) -> dict[str, Any]:
    async def reached() -> bool:
        calls = (await rig.http.get(f"/leads/{lead_id}")).json()["calls"]
        return bool(calls) and calls[-1]["state"] == state

    await wait_until(reached, 15, f"lead {lead_id}'s call to be {state}")
    call: dict[str, Any] = (await rig.http.get(f"/leads/{lead_id}")).json()["calls"][-1]
    return call


def _tried(call: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(leg["manager_id"], leg["result"]) for leg in call["managers_tried"]]


async def test_a_repeat_lead_goes_to_its_owner_when_free_waits_while_busy_and_moves_on_unanswered(
    tmp_path: Path,
    database_url: str,
) -> None:
    world = World(
        clients={REPEAT[1:]: Behaviour(answer_after=1, talk=8)},
        default_manager=lambda _extension: Behaviour(answer_after=1),
    )
    async with running(tmp_path, database=database_url, world=world, routing=ROUTING, scale=20) as rig:
        first = (await rig.post(phone=REPEAT)).json()["id"]
        assert (await _call(rig, first, CallState.ENDED))["manager_id"] == "anna"  # free longest: the file's first

        # Owner free: Boris is now free longer, but the repeat lead goes to its owner.
        # Anna will be busy with this one. (Set before the POST: its Originate may reach the PBX
        # before the 201 reaches us, and the PBX takes the client as the world says then.)
        world.clients[REPEAT[1:]] = Behaviour(answer_after=1, talk=90)  # long: a loaded machine lags
        second = (await rig.post(phone=REPEAT)).json()["id"]
        taken = await _call(rig, second, CallState.BRIDGED)
        assert _tried(taken) == [("anna", "answered")]

        # Owner busy: the client is kept for her for owner_wait, then Boris (free all along) takes him.
        world.clients[REPEAT[1:]] = Behaviour(answer_after=1, talk=8)
        third = (await rig.post(phone=REPEAT)).json()["id"]
        waited = await _call(rig, third, CallState.ENDED)
        assert _tried(waited) == [("boris", "answered")]
        assert waited["hold_seconds"] >= OWNER_WAIT
        # owner_changes: false, so the phone stays Anna's though Boris talked.
        assert (await rig.http.get(f"/leads/{third}")).json()["owner_id"] == "anna"
        await _call(rig, second, CallState.ENDED)

        # Owner not answering: her phone rings out (ring_timeout 2 s), then the pool takes the client.
        world.managers["101"] = Behaviour(answer_after=None)
        fourth = (await rig.post(phone=REPEAT)).json()["id"]
        moved_on = await _call(rig, fourth, CallState.ENDED)
        assert _tried(moved_on) == [("anna", "no_answer"), ("boris", "answered")]
        assert moved_on["hold_seconds"] < OWNER_WAIT + 3  # not kept for her after she failed

        # A lead from a phone nobody owns is not held for anyone.
        world.managers["101"] = Behaviour(answer_after=1)
        stranger = (await rig.post(phone="+79161234502")).json()["id"]
        assert (await _call(rig, stranger, CallState.ENDED))["hold_seconds"] < OWNER_WAIT


async def test_overflow_takes_the_client_to_the_further_pool_after_the_delay(tmp_path: Path, database_url: str) -> None:
    world = World(
        clients={"79161234510": Behaviour(answer_after=1, talk=30)},
        default_client=lambda _number: Behaviour(answer_after=1, talk=8),
        default_manager=lambda _extension: Behaviour(answer_after=1),
    )
    async with running(tmp_path, database=database_url, world=world, routing=ROUTING, scale=20) as rig:
        busy = (await rig.post(phone="+79161234510")).json()["id"]
        assert _tried(await _call(rig, busy, CallState.BRIDGED)) == [("anna", "answered")]

        # Only Anna is in the vip pool and she talks: after 3 s on hold, everyone may take the client.
        vip = (await rig.post(phone="+79161234511", payload={"tags": ["vip"]})).json()["id"]
        overflowed = await _call(rig, vip, CallState.ENDED)
        assert (overflowed["scenario"], _tried(overflowed)) == ("vip", [("boris", "answered")])
        assert OVERFLOW_AFTER <= overflowed["hold_seconds"] < 20  # the delay, not the hold limit

        # With Anna free again, a vip client goes to her at once.
        await _call(rig, busy, CallState.ENDED)
        again = (await rig.post(phone="+79161234512", payload={"tags": ["vip"]})).json()["id"]
        direct = await _call(rig, again, CallState.ENDED)
        assert _tried(direct) == [("anna", "answered")] and direct["hold_seconds"] < OVERFLOW_AFTER


async def test_a_reload_mid_call_leaves_the_waiting_client_his_rules_and_routes_the_next_by_the_new(
    tmp_path: Path,
    database_url: str,
) -> None:
    world = World(
        # The waiting client talks long enough to be seen bridged after the reload, which is
        # checked in a process of its own (a second of real time is 20 s here).
        clients={
            "79161234510": Behaviour(answer_after=1, talk=400),
            "79161234511": Behaviour(answer_after=1, talk=120),
        },
        default_client=lambda _number: Behaviour(answer_after=1, talk=12),
        default_manager=lambda _extension: Behaviour(answer_after=1),
    )
    async with running(tmp_path, database=database_url, world=world, routing=ROUTING, scale=20) as rig:
        busy = (await rig.post(phone="+79161234510")).json()["id"]
        await _call(rig, busy, CallState.BRIDGED)
        waiting = (await rig.post(phone="+79161234511", payload={"tags": ["vip"]})).json()["id"]
        await _call(rig, waiting, CallState.HOLDING)

        # The new file drops the vip overflow and waits only 5 s for Anna.
        vip, default = ROUTING["scenarios"]
        strict = {key: value for key, value in vip.items() if key != "overflow"} | {"hold_limit": "5s"}
        rig.routing_file.write_text(yaml.safe_dump({**ROUTING, "scenarios": [strict, default]}))
        assert await rig.daemon.reload_routing() is True

        # The client on hold keeps the overflow he started with: Boris takes him after 3 s.
        kept = await _call(rig, waiting, CallState.BRIDGED)
        assert _tried(kept) == [("boris", "answered")] and kept["hold_seconds"] >= OVERFLOW_AFTER

        # The next vip client is routed by the new file: Anna only, so an apology after 5 s.
        after = (await rig.post(phone="+79161234512", payload={"tags": ["vip"]})).json()["id"]
        refused = await _call(rig, after, CallState.ENDED)
        assert (refused["disposition"], refused["managers_tried"]) == ("no_manager", [])
        assert refused["hold_seconds"] >= 5
        assert (await _call(rig, busy, CallState.BRIDGED))["disposition"] is None  # Anna talked throughout
