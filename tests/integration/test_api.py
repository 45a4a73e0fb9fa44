"""The HTTP API of a running daemon: bad leads are refused with the field and the reason,
and nothing of them ever reaches the PBX."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from pbxsim import Behaviour, World
from pbxsim.tests.amitools import wait_until
from tests.integration.rig import actions_received, running

ROUTING = {
    "version": 1,
    "managers": [{"id": "anna", "name": "Anna", "extension": "101"}],
    "scenarios": [{"name": "default"}],
}

BAD_LEADS = [
    ({"name": "no phone"}, "phone", "Field required"),
    ({"phone": "call me maybe"}, "phone", "not part of a phone number"),
    ({"phone": "12"}, "phone", ""),
    ({"phone": "+7916&PJSIP/x"}, "phone", "'&'"),
    ({"phone": "+79161234567\r\nAction: Originate"}, "phone", ""),
    ({"phone": "${SHELL(id)}"}, "phone", "'$'"),
    ({"phone": "+79161234567", "name": "Ivan\r\nAction: Hangup"}, "name", "control characters"),
    ({"phone": "+79161234567", "phonee": "typo"}, "phonee", "Extra inputs are not permitted"),
    ({"phone": 79161234567}, "phone", "string"),
    ({"phone": "+79161234567", "payload": "not an object"}, "payload", "dictionary"),
]


@pytest.fixture
async def rig(tmp_path: Path, database_url: str):  # type: ignore[no-untyped-def]
    world = World(clients={"79161234567": Behaviour(answer_after=None)})
    async with running(tmp_path, database=database_url, world=world, routing=ROUTING) as rig:
        yield rig


async def test_bad_leads_get_a_clear_4xx_and_leave_no_trace_in_ami(rig) -> None:  # type: ignore[no-untyped-def]
    for body, field, reason in BAD_LEADS:
        response = await rig.post(**body)
        assert response.status_code == 422, (body, response.text)
        problems = response.json()["problems"]
        assert any(problem["field"] == field and reason in problem["reason"] for problem in problems), (body, problems)

    raw = await rig.http.post("/leads", content=b"{not json", headers={"Content-Type": "application/json"})
    assert raw.status_code == 422 and "JSON" in raw.json()["problems"][0]["reason"]
    huge = await rig.http.post("/leads", json={"phone": "+79161234567", "payload": {"x": "y" * 100_000}})
    assert huge.status_code == 413 and huge.json()["problems"][0]["field"] == "body"

    async def no_length() -> AsyncIterator[bytes]:  # chunked: the limit cannot trust Content-Length
        body = json.dumps({"phone": "+79161234567", "payload": {"x": "y" * 100_000}}).encode()
        for offset in range(0, len(body), 8192):
            yield body[offset : offset + 8192]

    chunked = await rig.http.post("/leads", content=no_length(), headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413

    async with httpx.AsyncClient(base_url=str(rig.http.base_url)) as anonymous:
        assert (await anonymous.post("/leads", json={"phone": "+79161234567"})).status_code == 401
        wrong = await anonymous.post("/leads", json={"phone": "+79161234567"}, headers={"Authorization": "Bearer x"})
        assert wrong.status_code == 401 and wrong.json()["problems"][0]["field"] == "authorization"

    counts = await rig.daemon.queries.lead_status_counts()
    assert counts == {}
    wire = rig.sim.raw_received.decode("utf-8", "replace")
    assert "Originate" not in wire
    for marker in ("PJSIP/x", "SHELL", "maybe", "Ivan", "typo"):
        assert marker not in wire


async def test_a_good_lead_reaches_ami_as_digits_only_and_is_idempotent(rig) -> None:  # type: ignore[no-untyped-def]
    first = await rig.post(phone=" +7 (916) 123-45-67 ", name="Иван", source="site", external_id="crm-1")
    assert first.status_code == 201, first.text
    lead = first.json()
    assert lead["phone"] == "+79161234567" and lead["name"] == "Иван" and lead["status"] == "new"
    again = await rig.post(phone="+79161234567", name="Иван", source="site", external_id="crm-1")
    assert again.status_code == 200 and again.json()["id"] == lead["id"]

    await wait_until(lambda: b"Action: Originate" in rig.sim.raw_received, 5, "the Originate")
    originates = actions_received(rig.sim, "Originate")
    assert len(originates) == 1
    assert originates[0]["Channel"] == "Local/79161234567@sim-clients"
    assert "Иван" not in rig.sim.raw_received.decode()

    history = await rig.http.get(f"/leads/{lead['id']}")
    assert history.status_code == 200 and history.json()["calls"][0]["state"] == "dialing"
    missing = await rig.http.get("/leads/999999")
    assert missing.status_code == 404 and missing.json()["problems"][0]["field"] == "lead_id"
    health = await rig.http.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert health.json()["checks"]["ami"]["state"] == "up" and health.json()["managers"] == 1
    stats = await rig.http.get("/stats/managers", params={"tz": "Europe/Moscow"})
    assert stats.status_code == 200 and stats.json()["managers"][0]["manager_id"] == "anna", stats.text
    bad_tz = await rig.http.get("/stats/managers", params={"tz": "Mars/Olympus"})
    assert bad_tz.status_code == 422 and bad_tz.json()["problems"][0]["field"] == "tz"
