"""Commands in over MQTT against the whole daemon, the PBX simulator and a real mosquitto.

A CRM on MQTT 5 (response topic + correlation data) and one on MQTT 3.1.1 (``reply_to`` and
``correlation_id`` in the body) create leads, report outcomes and send bad commands.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from pbxsim import Behaviour, World
from pbxsim.tests.amitools import wait_until
from router.model import LeadStatus
from tests.integration.rig import Rig, actions_received, running

PREFIX = "crm-test"  # the daemon's topic_prefix here: its events and replies stay apart from other tests'
ROUTING = {
    "version": 1,
    "managers": [{"id": "anna", "name": "Anna", "extension": "101"}],
    "scenarios": [{"name": "default", "hold_limit": "60s", "ring_timeout": "8s", "max_attempts": 1}],
}
CLIENT = "79165550101"
WORLD = World(clients={CLIENT: Behaviour(answer_after=1, talk=5)}, managers={"101": Behaviour(answer_after=1)})


class Crm:
    """One CRM connection: sends commands, collects the replies on its own reply topic."""

    def __init__(self, client: aiomqtt.Client, reply_topic: str) -> None:
        self.client = client
        self.reply_topic = reply_topic
        self.replies: list[tuple[dict[str, Any], bytes | None]] = []

    async def listen(self) -> None:
        async for message in self.client.messages:
            assert isinstance(message.payload, bytes)
            data = getattr(message.properties, "CorrelationData", None)
            self.replies.append((json.loads(message.payload), data))

    async def reply(self, count: int) -> tuple[dict[str, Any], bytes | None]:
        await wait_until(lambda: len(self.replies) >= count, 10, f"reply {count}")
        return self.replies[count - 1]


@asynccontextmanager
async def crm(port: int, *, v5: bool) -> AsyncIterator[Crm]:
    name = uuid.uuid4().hex[:8]
    protocol = aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"crm-{name}", protocol=protocol) as client:
        reply_topic = f"{PREFIX}/replies/crm-{name}"
        await client.subscribe(reply_topic, qos=1)
        listener = Crm(client, reply_topic)
        task = asyncio.create_task(listener.listen())
        try:
            yield listener
        finally:
            task.cancel()


def _v5_request(reply_topic: str, correlation: bytes) -> Properties:
    properties = Properties(PacketTypes.PUBLISH)
    properties.ResponseTopic = reply_topic
    properties.CorrelationData = correlation
    return properties


@asynccontextmanager
async def daemon(tmp_path: Path, port: int) -> AsyncIterator[Rig]:
    mqtt = {"topic_prefix": PREFIX, "client_id": f"lr-{uuid.uuid4().hex[:8]}"}
    async with running(tmp_path, world=WORLD, routing=ROUTING, mqtt_port=port, sections={"mqtt": mqtt}) as rig:
        await wait_until(lambda: rig.daemon.commands is not None and rig.daemon.commands.connected, 5, "subscribed")
        yield rig


@pytest.mark.timeout(60)
async def test_a_lead_created_by_an_mqtt5_command_is_answered_dialled_and_takes_its_outcome(
    tmp_path: Path, mosquitto_port: int
) -> None:
    async with daemon(tmp_path, mosquitto_port) as rig, crm(mosquitto_port, v5=True) as cli:
        lead = {"phone": "+7 916 555-01-01", "name": "Иван", "source": "site", "external_id": "crm-1"}
        request = _v5_request(cli.reply_topic, b"\x00corr-1")
        await cli.client.publish(f"{PREFIX}/commands/leads/create", json.dumps(lead), qos=1, properties=request)
        answer, correlation = await cli.reply(1)
        assert correlation == b"\x00corr-1"  # MQTT 5 correlation data comes back byte for byte
        assert answer["status"] == "accepted" and answer["created"] is True
        lead_id = answer["lead_id"]

        # Dialled: the PBX was asked to call the client, and the lead reached its manager.
        await wait_until(lambda: actions_received(rig.sim, "Originate"), 10, "Originate")
        assert any(CLIENT in action.get("Channel", "") for action in actions_received(rig.sim, "Originate"))

        async def assigned() -> bool:
            return bool((await rig.http.get(f"/leads/{lead_id}")).json()["status"] == LeadStatus.ASSIGNED)

        await wait_until(assigned, 20, "the lead assigned to its manager")

        # The same command again (a CRM retrying, or QoS 1 delivering twice): the same lead, not a new one.
        await cli.client.publish(
            f"{PREFIX}/commands/leads/create", json.dumps(lead), qos=1, properties=_v5_request(cli.reply_topic, b"2")
        )
        again, _ = await cli.reply(2)
        assert again == {"status": "accepted", "lead_id": lead_id, "created": False, "outcome": None}

        outcome = {"outcome": "won", "reason": "paid the invoice", "author": "crm-bot"}
        await cli.client.publish(
            f"{PREFIX}/commands/leads/{lead_id}/outcome",
            json.dumps(outcome),
            qos=1,
            properties=_v5_request(cli.reply_topic, b"3"),
        )
        reported, correlation = await cli.reply(3)
        assert correlation == b"3"
        assert reported == {"status": "accepted", "lead_id": lead_id, "created": False, "outcome": "won"}
        shown = (await rig.http.get(f"/leads/{lead_id}")).json()
        assert shown["outcome"] == "won" and shown["owner_id"] == "anna"


@pytest.mark.timeout(60)
async def test_bad_commands_are_answered_with_the_field_and_reason_and_store_nothing(
    tmp_path: Path, mosquitto_port: int
) -> None:
    async with daemon(tmp_path, mosquitto_port) as rig, crm(mosquitto_port, v5=False) as cli:
        create = f"{PREFIX}/commands/leads/create"

        async def send(topic: str, body: dict[str, Any] | bytes, correlation_id: str) -> dict[str, Any]:
            if isinstance(body, dict):
                payload: bytes = json.dumps(
                    {**body, "reply_to": cli.reply_topic, "correlation_id": correlation_id}
                ).encode()
            else:
                payload = body
            await cli.client.publish(topic, payload, qos=1)
            answer, correlation = await cli.reply(len(cli.replies) + 1)
            assert correlation is None  # a 3.1.1 client gets its correlation in the body
            return answer

        # The same refusals as POST /leads, in the same shape.
        http = (await rig.post(phone="12ab", name="x")).json()
        answer = await send(create, {"phone": "12ab", "name": "x"}, "bad-phone")
        assert answer["correlation_id"] == "bad-phone"
        assert answer["status"] == "refused" and answer["error"] == "invalid_lead"
        assert answer["problems"] == http["problems"] and answer["problems"][0]["field"] == "phone"

        answer = await send(create, {"phone": "+79165550101", "colour": "red"}, "extra")
        assert answer["problems"] == [{"field": "colour", "reason": "Extra inputs are not permitted"}]

        answer = await send(f"{PREFIX}/commands/leads/1/outcome", {"outcome": "maybe", "author": "x"}, "o")
        assert answer["error"] == "invalid_request" and answer["problems"][0]["field"] == "outcome"

        answer = await send(f"{PREFIX}/commands/leads/999/outcome", {"outcome": "won", "author": "x"}, "gone")
        assert answer["error"] == "not_found" and answer["problems"][0]["field"] == "lead_id"

        # Not JSON: no body to carry reply_to, so only an MQTT 5 client hears why; nothing is stored.
        await cli.client.publish(create, b"{not json", qos=1)

        # A reply topic outside <prefix>/replies/ is not written to, and the command is not acted on.
        forged = {"phone": "+79165550101", "reply_to": f"{PREFIX}/lead/created"}
        await cli.client.publish(create, json.dumps(forged), qos=1)

        # What raised out of the subscriber (and, on <prefix>/commands/x, which <prefix>/+/+ takes,
        # out of the publisher's receipts) and, never acknowledged, came back at every start.
        await cli.client.publish(create, b"[" * 5000, qos=1)
        await cli.client.publish(f"{PREFIX}/commands/leads/{'9' * 5000}/outcome", b"{}", qos=1)
        await cli.client.publish(f"{PREFIX}/commands/x", b"[" * 5000, qos=1)
        answer = await send(create, {"phone": "+79165550101", "payload": {"note": "\ud800"}}, "surrogate")
        assert answer["error"] == "invalid_lead" and answer["problems"][0]["field"] == "payload", answer

        good = await send(create, {"phone": "+79165550101", "external_id": "after"}, "ok")
        assert good["status"] == "accepted" and good["lead_id"] == 1  # nothing before it was stored
        assert rig.daemon.commands is not None and rig.daemon.publisher is not None
        await wait_until(lambda: rig.daemon.commands.handled == 10, 5, "every command acknowledged")
        assert len(cli.replies) == 6
        publisher = rig.daemon.publisher
        await wait_until(lambda: publisher.published >= 1, 10, "the new lead's events published")


@pytest.mark.timeout(60)
async def test_a_command_sent_while_the_daemon_is_down_is_answered_once_it_is_back(
    tmp_path: Path, mosquitto_port: int
) -> None:
    async with daemon(tmp_path, mosquitto_port) as rig, crm(mosquitto_port, v5=True) as cli:
        await rig.stop_daemon()  # its session stays with the broker, which queues the command meanwhile
        lead = {"phone": "+79165550101", "external_id": "while-down"}
        request = _v5_request(cli.reply_topic, b"late")
        await cli.client.publish(f"{PREFIX}/commands/leads/create", json.dumps(lead), qos=1, properties=request)
        await rig.start_daemon()
        answer, correlation = await cli.reply(1)
        assert correlation == b"late" and answer["status"] == "accepted" and answer["created"] is True
