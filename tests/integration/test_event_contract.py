"""The event contract (events/schema/) against what the daemon really emits, and as it serves it."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import jsonschema
import pytest
import yaml

from events.contract import SCHEMA_DIR, event_schema_files
from events.receipts import fence_topic
from events.subscriber import command_topics
from pbxsim import Behaviour, World
from pbxsim.tests.amitools import wait_until
from router.board import ManagerState
from router.events import EVENT_TYPES, SCHEMA_VERSION
from router.model import Disposition
from tests.integration.rig import running

MOSCOW = ZoneInfo("Europe/Moscow")
# A lead of source `later` is retried after 5 minutes: time enough to close its call window by a
# reload, so that the retry is claimed outside it (lead.deferred).
LATER = {
    "name": "later",
    "match": {"sources": ["later"]},
    "hold_limit": "60s",
    "ring_timeout": "8s",
    "max_attempts": 3,
    "retry_delays": ["5m"],
}
ROUTING = {
    "version": 2,
    "timezone": "Europe/Moscow",
    "managers": [
        {"id": f"m{extension}", "name": f"M {extension}", "extension": str(extension)} for extension in (101, 102)
    ],
    "scenarios": [
        LATER,
        # An owner who reports nothing for a minute loses the lead to the other manager (lead.reassigned).
        {
            "name": "default",
            "hold_limit": "60s",
            "ring_timeout": "8s",
            "max_attempts": 2,
            "retry_delays": ["10s"],
            "sla_release": {"after": "60s"},
        },
    ],
}
LATER_PHONE = "+74951110007"  # a Moscow landline: one time zone for its call window
# As the demo's sales floor: clients who talk, who are busy, who never pick up, who give up on hold.
CLIENTS = {
    "+79161110001": Behaviour(answer_after=2, talk=20),
    "+79161110002": Behaviour(answer_after=1, talk=8),
    "+79161110003": Behaviour(busy=True),
    "+79161110004": Behaviour(answer_after=None),
    "+79161110005": Behaviour(unavailable=True),
    "+79161110006": Behaviour(answer_after=1, talk=0.3),
}


def _strict(schema: Any) -> Any:
    """The shipped schema, but refusing fields it does not name: every field emitted must be documented,
    in nested objects with named fields too (manager.changed's manager); free-form ones (payload) stay free."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: _strict(value) for key, value in schema.items()}
    if "properties" in schema:
        strict["additionalProperties"] = False
    return strict


def _schemas() -> dict[str, dict[str, Any]]:
    return {event_type: json.loads(path.read_text()) for event_type, path in event_schema_files().items()}


def _event_channels(prefix: str) -> set[str]:
    return {f"{prefix}/{event.type.replace('.', '/')}" for event in EVENT_TYPES}


def _other_channels(prefix: str) -> set[str]:
    """The topics beside the events: the CRM's commands, their replies, the daemon's receipts fence."""
    create, outcome = command_topics(prefix)
    return {
        create,
        outcome.replace("+", "{lead_id}"),
        f"{prefix}/replies/{{reply_path}}",
        fence_topic(prefix, "{client_id}"),
    }


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
    # The enums name every value the model has, no fewer and no more.
    dispositions = {disposition.value for disposition in Disposition}
    for event_type, field in (
        ("call.ended", "disposition"),
        ("lead.scheduled", "last_disposition"),
        ("lead.failed", "last_disposition"),
    ):
        assert set(schemas[event_type]["properties"][field]["enum"]) == dispositions, event_type
    states = {state.value for state in ManagerState}
    for field in ("state", "previous_state"):
        assert set(schemas["manager.state"]["properties"][field]["enum"]) == states
    # Events about no lead say so: manager.state carries 0, manager.changed null, the others a lead's id.
    lead_ids = {event_type: schema["properties"]["lead_id"] for event_type, schema in schemas.items()}
    assert lead_ids.pop("manager.state")["const"] == 0
    assert lead_ids.pop("manager.changed")["type"] == "null"
    assert all(rule["type"] == "integer" and rule["minimum"] == 1 for rule in lead_ids.values())
    asyncapi = json.loads((SCHEMA_DIR / "asyncapi.json").read_text())
    channels = asyncapi["channels"]
    assert set(channels) == _event_channels("leadrouter") | _other_channels("leadrouter")
    for channel in _other_channels("leadrouter"):
        (operation,) = {"publish", "subscribe"} & set(channels[channel])
        message = channels[channel][operation]["message"]["$ref"].split("/")[-1]
        assert message in asyncapi["components"]["messages"], channel
    for channel in _event_channels("leadrouter"):
        spec = channels[channel]
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
        later = await rig.post(phone=LATER_PHONE, name="Позже", source="later")
        assert later.status_code == 201, later.text
        later_id = later.json()["id"]
        # The same client again while his lead is open: merged into it (lead.duplicate).
        again = await rig.post(phone=LATER_PHONE, name="Позже", source="landing", external_id="c-again")
        assert again.status_code == 200 and again.json()["id"] == later_id, again.text

        def later_event(event_type: str) -> bool:
            return any(e["type"] == event_type and e["lead_id"] == later_id for e in rig.mqtt)

        # Its retry is 5 minutes away: the call window closes meanwhile (holidays today and tomorrow).
        await wait_until(lambda: later_event("lead.scheduled"), 20, "the later lead's retry planned")
        today = rig.clock.now().astimezone(MOSCOW).date()
        holidays = [today.isoformat(), date.fromordinal(today.toordinal() + 1).isoformat()]
        closed = {**ROUTING, "scenarios": [{**LATER, "call_window": {"holidays": holidays}}, ROUTING["scenarios"][1]]}
        rig.routing_file.write_text(yaml.safe_dump(closed, sort_keys=False))
        assert await rig.daemon.reload_routing()
        await wait_until(lambda: later_event("lead.deferred"), 20, "the later lead deferred")

        async def settled() -> bool:
            counts = await rig.daemon.queries.lead_status_counts()
            return (
                counts.get("assigned", 0) + counts.get("failed", 0) == len(CLIENTS) and not rig.daemon.dialer.live_calls
            )

        await wait_until(settled, 60, "every lead assigned or failed")
        # A manager added and removed from outside (manager.changed, with him and with null).
        added = await rig.http.post("/managers", json={"id": "m103", "name": "M 103", "extension": "103"})
        assert added.status_code == 201, added.text
        assert (await rig.http.delete("/managers/m103")).status_code == 200
        # The CRM reports outcomes, as the demo's CRM does.
        # Nobody reported on the quick talker's lead within the SLA: it went to the other manager.
        await wait_until(
            lambda: any(e["type"] == "lead.reassigned" for e in rig.mqtt), 20, "a lead released to the other manager"
        )
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
    # The events about no lead, as the run emitted them.
    changed = [event for event in events.values() if event["type"] == "manager.changed"]
    assert [(event["change"], event["lead_id"]) for event in changed] == [("added", None), ("removed", None)]
    assert changed[0]["manager"]["extension"] == "103" and changed[1]["manager"] is None
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {**changed[0], "manager": {**changed[0]["manager"], "surprise": 1}}, schemas["manager.changed"]
        )
    state = next(event for event in events.values() if event["type"] == "manager.state")
    assert state["lead_id"] == 0 and state["manager_id"] in {"m101", "m102"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**state, "lead_id": 1}, schemas["manager.state"])
    (duplicate,) = [event for event in events.values() if event["type"] == "lead.duplicate"]
    assert (duplicate["source"], duplicate["external_id"]) == ("landing", "c-again")


@pytest.mark.timeout(60)
async def test_the_served_asyncapi_names_the_daemons_own_topic_prefix(tmp_path: Path) -> None:
    prefix = {"mqtt": {"enabled": False, "topic_prefix": "acme/calls"}}
    async with running(tmp_path, world=World(), routing=ROUTING, sections=prefix) as rig:
        served = (await rig.http.get("/schema/asyncapi.json")).json()
    assert set(served["channels"]) == _event_channels("acme/calls") | _other_channels("acme/calls")
