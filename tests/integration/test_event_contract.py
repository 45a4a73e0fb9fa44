"""The event contract (events/schema/) against what the daemon really emits, and as it serves it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from events.contract import SCHEMA_DIR, event_schema_files
from pbxsim import Behaviour, World
from pbxsim.tests.amitools import wait_until
from router.events import EVENT_TYPES, SCHEMA_VERSION
from tests.integration.rig import running

ROUTING = {
    "version": 1,
    "managers": [
        {"id": f"m{extension}", "name": f"M {extension}", "extension": str(extension)} for extension in (101, 102)
    ],
    "scenarios": [
        {"name": "default", "hold_limit": "60s", "ring_timeout": "8s", "max_attempts": 2, "retry_delays": ["10s"]}
    ],
}
# As the demo's sales floor: clients who talk, who are busy, who never pick up, who give up on hold.
CLIENTS = {
    "+79161110001": Behaviour(answer_after=2, talk=20),
    "+79161110002": Behaviour(answer_after=1, talk=8),
    "+79161110003": Behaviour(busy=True),
    "+79161110004": Behaviour(answer_after=None),
    "+79161110005": Behaviour(unavailable=True),
    "+79161110006": Behaviour(answer_after=1, talk=0.3),
}


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The shipped schema, but refusing fields it does not name: every field emitted must be documented."""
    return {**schema, "additionalProperties": False}


def _schemas() -> dict[str, dict[str, Any]]:
    return {event_type: json.loads(path.read_text()) for event_type, path in event_schema_files().items()}


def test_every_event_type_has_a_schema_of_this_version_and_an_asyncapi_channel() -> None:
    schemas = _schemas()
    assert set(schemas) == {event.type for event in EVENT_TYPES}
    for event_type, schema in schemas.items():
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION
        assert schema["properties"]["type"]["const"] == event_type
        # Every field the event's dataclass carries is documented and required.
        (event_class,) = [event for event in EVENT_TYPES if event.type == event_type]
        fields = set(event_class.__dataclass_fields__)
        assert fields <= set(schema["required"]) and fields <= set(schema["properties"])
    asyncapi = json.loads((SCHEMA_DIR / "asyncapi.json").read_text())
    channels = asyncapi["channels"]
    assert set(channels) == {f"leadrouter/{event.type.replace('.', '/')}" for event in EVENT_TYPES}
    for channel, spec in channels.items():
        message = asyncapi["components"]["messages"][spec["subscribe"]["message"]["$ref"].split("/")[-1]]
        event_type = channel.removeprefix("leadrouter/").replace("/", ".")
        assert message["payload"]["$ref"] == f"events/{event_type}.json"
        assert (SCHEMA_DIR / message["payload"]["$ref"]).is_file()


@pytest.mark.timeout(120)
async def test_every_event_of_a_demo_like_run_validates_against_its_schema(tmp_path: Path, mosquitto_port: int) -> None:
    world = World(clients={phone[1:]: behaviour for phone, behaviour in CLIENTS.items()}, managers={})
    world.default_manager = lambda extension: Behaviour(answer_after=2)
    async with running(tmp_path, world=world, routing=ROUTING, mqtt_port=mosquitto_port, scale=50) as rig:
        ids = {}
        for index, phone in enumerate(CLIENTS):
            response = await rig.post(
                phone=phone, name=f"Клиент {index}", source="site", external_id=f"c-{index}", payload={"utm": "x"}
            )
            assert response.status_code == 201, response.text
            ids[phone] = response.json()["id"]

        async def settled() -> bool:
            counts = await rig.daemon.queries.lead_status_counts()
            return (
                counts.get("assigned", 0) + counts.get("failed", 0) == len(CLIENTS) and not rig.daemon.dialer.live_calls
            )

        await wait_until(settled, 60, "every lead assigned or failed")
        # The CRM reports outcomes, as the demo's CRM does.
        for phone, outcome in (("+79161110001", "won"), ("+79161110002", "worked"), ("+79161110002", "lost")):
            response = await rig.http.patch(f"/leads/{ids[phone]}", json={"outcome": outcome, "author": "crm"})
            assert response.status_code == 200, response.text
        backlog = rig.daemon.queries.outbox_backlog

        async def drained() -> bool:
            return (await backlog())[0] == 0

        await wait_until(drained, 20, "the outbox published")
        published = await rig.daemon.queries.published_ids()
        await wait_until(lambda: {e["id"] for e in rig.mqtt} >= published, 20, "every event on MQTT")

        # The contract as the daemon serves it: the shipped files, topics under its own prefix.
        async with httpx.AsyncClient(base_url=str(rig.http.base_url)) as anyone:  # no token: a public contract
            served = (await anyone.get("/schema/asyncapi.json")).json()
            assert served == json.loads((SCHEMA_DIR / "asyncapi.json").read_text())
            for event_type, path in event_schema_files().items():
                response = await anyone.get(f"/schema/events/{event_type}.json")
                assert response.status_code == 200 and response.headers["content-type"] == "application/json"
                assert response.json() == json.loads(path.read_text())
            assert (await anyone.get("/schema/events/nothing.json")).status_code == 404

    schemas = {event_type: _strict(schema) for event_type, schema in _schemas().items()}
    events = {event["id"]: event for event in rig.mqtt}
    assert {event["type"] for event in events.values()} == set(schemas)  # the run emitted every type
    for event in events.values():
        jsonschema.validate(event, schemas[event["type"]], cls=jsonschema.Draft202012Validator)
    # A schema that can fail: a required field gone, or an undocumented one added, is refused.
    assigned = next(event for event in events.values() if event["type"] == "lead.assigned")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**assigned, "owner_id": None}, schemas["lead.assigned"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**assigned, "surprise": 1}, schemas["lead.assigned"])


@pytest.mark.timeout(60)
async def test_the_served_asyncapi_names_the_daemons_own_topic_prefix(tmp_path: Path) -> None:
    prefix = {"mqtt": {"enabled": False, "topic_prefix": "acme/calls"}}
    async with running(tmp_path, world=World(), routing=ROUTING, sections=prefix) as rig:
        served = (await rig.http.get("/schema/asyncapi.json")).json()
    assert set(served["channels"]) == {f"acme/calls/{event.type.replace('.', '/')}" for event in EVENT_TYPES}
