"""One daemon speaking to two PBXes (two simulators): each office's leads are dialled on its own
PBX to its own managers, and one PBX gone stops only its own dialling until it comes back."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import yaml

from ami_adapter.asterisk import SHIPPED_DIALPLAN
from leadrouter.demo import simulator_settings
from pbxsim import Behaviour, ScaledClock, Simulator, World
from pbxsim.tests.amitools import wait_until
from tests.integration.rig import TOKEN, Rig, load_written, scrape_metrics

ROUTING: dict[str, Any] = {
    "version": 2,
    "timezone": "Europe/Moscow",
    # The same extension in both offices: each PBX's board is its own.
    "managers": [
        {"id": "anna", "name": "Anna", "extension": "101"},  # no `pbx:`: the first, north
        {"id": "boris", "name": "Boris", "extension": "101", "pbx": "south"},
    ],
    "scenarios": [
        {"name": "north", "match": {"sources": "north-*"}, "pool": {"managers": "anna"}},  # anna's PBX
        {"name": "south", "match": {"sources": "south-*"}, "pbx": "south", "pool": {"managers": "boris"}},
        {"name": "anyone"},  # a pool on both PBXes: whichever has a free manager dials it
    ],
}


def _dialled(sim: Simulator, phone: str) -> bool:
    """Whether the PBX placed a client leg to ``phone`` (the simulator's Local/<digits>@sim-clients)."""
    return any(record.name.startswith(f"Local/{phone[1:]}@sim-clients") for record in sim.channel_history())


async def _lead(rig: Rig, lead_id: int) -> dict[str, Any]:
    lead: dict[str, Any] = (await rig.http.get(f"/leads/{lead_id}")).json()
    return lead


async def _assigned(rig: Rig, lead_id: int, what: str) -> dict[str, Any]:
    async def done() -> bool:
        return (await _lead(rig, lead_id))["status"] == "assigned"

    await wait_until(done, 15, what)
    return await _lead(rig, lead_id)


async def test_each_office_dials_on_its_own_pbx_and_one_down_stops_only_its_own(
    tmp_path: Path, database_url: str
) -> None:
    clock = ScaledClock(30.0)
    world = World(
        # Clients stay long enough to be put through on a loaded machine (20 s: under a second here).
        default_client=lambda _number: Behaviour(answer_after=1, talk=20),
        default_manager=lambda _extension: Behaviour(answer_after=1),
    )
    routing_file = tmp_path / "routing.yaml"
    routing_file.write_text(yaml.safe_dump(ROUTING, sort_keys=False))
    sims = {
        name: Simulator(clock=clock, dialplan=SHIPPED_DIALPLAN, world=world, timestamp_events=True)
        for name in ("north", "south")
    }
    async with contextlib.AsyncExitStack() as stack:
        for sim in sims.values():
            await stack.enter_async_context(sim)
        config = simulator_settings(ami_port=0, database=tmp_path / "lr.db", mqtt_port=None, token=TOKEN)
        config["database"] = {"url": database_url}  # on PostgreSQL the daemon holds an id per PBX
        link = config.pop("ami")
        config["pbxes"] = {name: link | {"port": sim.port} for name, sim in sims.items()}
        settings = load_written(tmp_path, config | {"routing_file": str(routing_file)})
        rig = Rig(sims["north"], clock, settings, routing_file, [])
        stack.push_async_callback(rig.stop_daemon)
        await rig.start_daemon()
        daemon = rig.daemon
        await wait_until(lambda: all(link.ami.connected for link in daemon.pbxes.values()), 5, "both AMI logins")
        assert {name: len(link.board) for name, link in daemon.pbxes.items()} == {"north": 1, "south": 1}

        north = (await rig.post(phone="+79161234501", source="north-site")).json()["id"]
        south = (await rig.post(phone="+79161234502", source="south-site")).json()["id"]
        for lead_id, office, manager in ((north, "north", "anna"), (south, "south", "boris")):
            lead = await _assigned(rig, lead_id, f"the {office} lead assigned")
            assert lead["owner_id"] == manager
            assert [call["pbx"] for call in lead["calls"]] == [office]
        assert (_dialled(sims["north"], "+79161234501"), _dialled(sims["south"], "+79161234501")) == (True, False)
        assert (_dialled(sims["north"], "+79161234502"), _dialled(sims["south"], "+79161234502")) == (False, True)

        # The south PBX's AMI port closes: its dialling stops, the north's goes on.
        await sims["south"].stop_listening()
        await wait_until(lambda: not daemon.pbxes["south"].ami.connected, 5, "the south link down")
        waiting = (await rig.post(phone="+79161234503", source="south-x")).json()["id"]
        served = (await rig.post(phone="+79161234504", source="north-x")).json()["id"]
        assert (await _assigned(rig, served, "a north lead while the south is down"))["calls"][0]["pbx"] == "north"
        await daemon.pbxes["north"].dialer.idle()
        assert (await _lead(rig, waiting))["status"] == "new"  # the north dialer leaves it to the south's
        assert not _dialled(sims["north"], "+79161234503")
        health = (await rig.http.get("/health")).json()
        assert health["status"] == "degraded"
        assert (health["pbxes"]["north"]["ami"], health["pbxes"]["south"]["ami"]) == ("up", "down")
        assert health["checks"]["ami"]["state"] == "partial"
        samples = await scrape_metrics(rig)
        assert samples[("leadrouter_ami_connected", (("pbx", "north"),))] == 1
        assert samples[("leadrouter_ami_connected", (("pbx", "south"),))] == 0

        # Back: the south's waiting lead is dialled there, to its own manager.
        await sims["south"].start()
        lead = await _assigned(rig, waiting, "the south lead dialled once its PBX is back")
        assert (lead["owner_id"], [call["pbx"] for call in lead["calls"]]) == ("boris", ["south"])
        assert (_dialled(sims["north"], "+79161234503"), _dialled(sims["south"], "+79161234503")) == (False, True)
        assert (await rig.http.get("/health")).json()["pbxes"]["south"]["ami"] == "up"
