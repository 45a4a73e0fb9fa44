"""Flows through the shipped dialplan that the end-to-end mix does not pin down one by one."""

from __future__ import annotations

from pathlib import Path

import yaml

from pbxsim import Behaviour, World
from pbxsim.tests.amitools import wait_until
from router.model import CallState, Disposition, LeadStatus, LegResult
from tests.integration.rig import Rig, actions_received, running

PHONE = "+79161234567"


def _routing(*managers: str, hold_limit: str = "60s") -> dict[str, object]:
    return {
        "version": 1,
        "managers": [{"id": f"m{ext}", "name": f"Manager {ext}", "extension": ext} for ext in managers],
        "scenarios": [
            {
                "name": "default",
                "hold_limit": hold_limit,
                "ring_timeout": "5s",
                "max_attempts": 3,
                "retry_delays": ["5m"],
            }
        ],
    }


async def _history(rig: Rig, lead_id: int):  # type: ignore[no-untyped-def]
    found = await rig.daemon.queries.lead_with_calls(lead_id)
    assert found is not None
    return found


async def test_nobody_free_within_the_hold_limit_hears_the_apology_and_is_called_back(
    tmp_path: Path, database_url: str
) -> None:
    world = World(clients={PHONE[1:]: Behaviour(answer_after=1)}, managers={"201": Behaviour(answer_after=None)})
    async with running(
        tmp_path, database=database_url, world=world, routing=_routing("201", hold_limit="8s"), scale=20
    ) as rig:
        lead_id = (await rig.post(phone=PHONE)).json()["id"]

        async def ended() -> bool:
            _, calls = await _history(rig, lead_id)
            return bool(calls) and calls[0].state is CallState.ENDED

        await wait_until(ended, 10, "the call to end")
        lead, (call,) = await _history(rig, lead_id)
        # The only manager rang 5 s unanswered; the client went back on hold until the 8 s limit,
        # was sent to leadrouter-sorry and hung up after the prompt.
        assert call.disposition is Disposition.NO_MANAGER
        assert [(leg.manager_id, leg.result) for leg in call.legs] == [("m201", LegResult.NO_ANSWER)]
        assert call.hold_seconds is not None and 9 <= call.hold_seconds <= 12
        redirects = actions_received(rig.sim, "Redirect")
        assert [redirect["Context"] for redirect in redirects] == ["leadrouter-connect", "leadrouter-sorry"]
        assert lead.status is LeadStatus.SCHEDULED and lead.owner_id is None


async def test_a_restarted_daemon_adopts_the_call_in_progress_and_records_its_end(
    tmp_path: Path, database_url: str
) -> None:
    world = World(clients={PHONE[1:]: Behaviour(answer_after=1, talk=40)}, managers={"101": Behaviour(answer_after=1)})
    async with running(tmp_path, database=database_url, world=world, routing=_routing("101"), scale=20) as rig:
        lead_id = (await rig.post(phone=PHONE)).json()["id"]

        async def bridged() -> bool:
            _, calls = await _history(rig, lead_id)
            return bool(calls) and calls[0].state is CallState.BRIDGED

        await wait_until(bridged, 10, "the bridge")
        await rig.stop_daemon()  # systemctl restart while the client talks
        await rig.start_daemon()
        # Adoption follows the login (CoreShowChannels); the adopted call keeps its manager.
        await wait_until(lambda: rig.daemon.board.free_count == 0, 5, "the live call to be adopted")

        async def ended() -> bool:
            _, calls = await _history(rig, lead_id)
            return calls[0].state is CallState.ENDED

        await wait_until(ended, 10, "the adopted call to end")
        lead, (call,) = await _history(rig, lead_id)
        assert call.disposition is Disposition.COMPLETED and call.manager_id == "m101"
        assert call.hold_seconds is not None and call.talk_seconds is not None
        assert call.hold_seconds + call.talk_seconds > 38
        assert lead.status is LeadStatus.ASSIGNED and lead.owner_id == "m101"
        await wait_until(lambda: rig.daemon.board.free_count == 1, 5, "the manager to be free again")


async def test_routing_reload_takes_a_good_file_and_keeps_running_on_a_broken_one(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database=database_url, world=World(), routing=_routing("101"), scale=20) as rig:
        rig.routing_file.write_text(yaml.safe_dump(_routing("101", "102")))
        assert await rig.daemon.reload_routing() is True
        assert len(rig.daemon.board) == 2
        rig.routing_file.write_text("managers: [\n")
        assert await rig.daemon.reload_routing() is False
        assert [manager.id for manager in rig.daemon.routing.plan.managers] == ["m101", "m102"]
        assert (await rig.http.get("/health")).json()["managers"] == 2
