"""Commands in over MQTT: a CRM creates leads and reports outcomes, and hears back on a reply topic.

Topics (under ``mqtt.topic_prefix``):

- ``<prefix>/commands/leads/create``: a lead, the JSON body ``POST /leads`` takes;
- ``<prefix>/commands/leads/<id>/outcome``: an outcome, the JSON body ``PATCH /leads/<id>`` takes.

The answer goes where the command asks: the MQTT 5 response topic (its correlation data sent
back as is), or, for MQTT 3.1.1 clients that have neither, ``reply_to`` and ``correlation_id``
in the JSON body (taken out before the body is validated). Reply topics must lie under
``<prefix>/replies/``: the daemon may write its own event topics, and a command must not make
it publish a forged event there.

A command is acknowledged to the broker only once it is answered (committed, refused, or not
answerable): a daemon killed in between gets it again from its persistent session, and a
lead with an ``external_id`` is then found, not created twice, exactly as on HTTP.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Protocol

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from dialer.requests import LEAD_ID_MAX, Accepted, Refused
from events.links import Backoff, Outage, acknowledge, acknowledge_when_told
from events.publisher import MqttSettings

log = structlog.get_logger("events")

LEAD_ID_DIGITS = len(str(LEAD_ID_MAX))  # more in a topic's lead id is no lead of ours
MAX_CORRELATION_ID = 200  # characters of a body's correlation_id; it is echoed back, not stored


class LeadRequestsPort(Protocol):
    """dialer.requests.LeadRequests: what HTTP answers, answered here too."""

    async def create(self, body: object) -> Accepted | Refused: ...

    async def report(self, lead_id: int, body: object) -> Accepted | Refused: ...


@dataclass(frozen=True)
class CommandSettings:
    mqtt: MqttSettings
    max_bytes: int = 65536  # a bigger command is refused unread, as HTTP refuses a bigger body
    # The broker keeps our subscriptions and queues commands this long while the daemon is away
    # (a restart, an upgrade): CRMs' commands wait instead of being dropped.
    session_expiry: int = 7 * 24 * 3600


def command_topics(prefix: str) -> tuple[str, str]:
    """The two subscriptions: lead creation, and outcomes for any lead id."""
    return f"{prefix}/commands/leads/create", f"{prefix}/commands/leads/+/outcome"


@dataclass(frozen=True)
class _ReplyTo:
    topic: str
    correlation_data: bytes | None  # MQTT 5's, echoed in the reply's properties
    correlation_id: object  # the 3.1.1 fallback's, echoed in the reply's body


class CommandSubscriber:
    def __init__(self, requests: LeadRequestsPort, settings: CommandSettings) -> None:
        self._requests = requests
        self._settings = settings
        prefix = settings.mqtt.topic_prefix
        self._create, self._outcome = command_topics(prefix)
        self._replies = f"{prefix}/replies/"
        self.connected = False
        self.handled = 0  # commands answered (or dropped as unanswerable) and acknowledged, ever

    async def run(self) -> None:
        mqtt = self._settings.mqtt
        backoff = Backoff(mqtt.reconnect_delay, mqtt.reconnect_max_delay)
        outage = Outage("mqtt.commands", mqtt.reminder_interval)
        connect = Properties(PacketTypes.CONNECT)
        connect.SessionExpiryInterval = self._settings.session_expiry
        while True:
            client = aiomqtt.Client(
                mqtt.host,
                mqtt.port,
                identifier=f"{mqtt.client_id}-commands",
                username=mqtt.username,
                password=mqtt.password,
                tls_context=mqtt.tls,
                timeout=mqtt.ack_timeout,
                protocol=aiomqtt.ProtocolVersion.V5,
                clean_start=False,
                properties=connect,
            )
            # Acknowledged once answered: a command a crash cut short is delivered again.
            acknowledge_when_told(client)
            try:
                async with client:
                    for topic in (self._create, self._outcome):
                        await client.subscribe(topic, qos=1)
                    self.connected = True
                    backoff.reset()
                    if outage.ongoing:
                        outage.ended(host=mqtt.host, port=mqtt.port)
                    else:
                        log.info("mqtt.commands.subscribed", topics=[self._create, self._outcome])
                    async for message in client.messages:
                        await self._handle(client, message)
                        acknowledge(client, message)
                        self.handled += 1
            except aiomqtt.MqttError as exc:
                reason = f"{exc}: {exc.__cause__}" if exc.__cause__ else str(exc)
                outage.failed(reason, host=mqtt.host, port=mqtt.port)
            finally:
                self.connected = False
            await asyncio.sleep(backoff.next())

    async def _handle(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        topic = str(message.topic)
        raw = message.payload if isinstance(message.payload, bytes | bytearray) else b""
        body: Any = None
        problem: tuple[str, str] | None = None
        if len(raw) > self._settings.max_bytes:
            problem = ("body", f"larger than {self._settings.max_bytes} bytes")
        else:
            try:
                body = json.loads(raw)
            except (ValueError, RecursionError) as exc:  # ValueError: an integer of more than 4,300 digits too
                problem = ("body", f"not JSON we can read: {exc}")
        reply = self._reply_to(message, body if isinstance(body, dict) else None)
        if isinstance(reply, str):
            # Nowhere to answer, or a place we must not write to: acting would leave the CRM guessing.
            log.warning("mqtt.command_unanswerable", topic=topic, reason=reply)
            return
        if problem is not None:
            answer: Accepted | Refused = Refused("invalid_request", [problem])
        else:
            try:
                answer = await self._act(topic, message, body)
            except Exception:
                # A command that breaks us must not come back at every start (it is acknowledged
                # once handled, and the session keeps it until then): logged, answered, let go.
                log.exception("mqtt.command_failed", topic=topic)
                answer = Refused("internal_error", [("command", "it could not be handled; the daemon's log says why")])
        if reply is not None:
            await self._send(client, reply, answer)

    async def _act(self, topic: str, message: aiomqtt.Message, body: Any) -> Accepted | Refused:
        if message.topic.matches(self._create):
            return await self._requests.create(body)
        lead_id = topic.split("/")[-2]
        if lead_id.isascii() and lead_id.isdigit() and len(lead_id) <= LEAD_ID_DIGITS:
            return await self._requests.report(int(lead_id), body)
        return Refused("invalid_request", [("lead_id", f"{lead_id[:40]!r} is not a lead id")])

    def _reply_to(self, message: aiomqtt.Message, body: dict[str, Any] | None) -> _ReplyTo | str | None:
        """Where the answer goes (None: nowhere asked), or why it cannot go where asked.

        Takes ``reply_to`` and ``correlation_id`` out of ``body``: they are the envelope's, not the lead's.
        """
        topic: object = None
        correlation_id: object = None
        if body is not None:
            topic = body.pop("reply_to", None)
            correlation_id = body.pop("correlation_id", None)
        properties = message.properties
        response_topic = getattr(properties, "ResponseTopic", None)
        if response_topic is not None:
            topic = response_topic
        if topic is None:
            return None
        if not isinstance(topic, str) or not topic.startswith(self._replies) or {"#", "+", "\0"} & set(topic):
            return f"reply topic {topic!r} must lie under {self._replies} without wildcards"
        if correlation_id is not None and (
            not isinstance(correlation_id, str) or len(correlation_id) > MAX_CORRELATION_ID
        ):
            return f"correlation_id must be a string of at most {MAX_CORRELATION_ID} characters"
        data = getattr(properties, "CorrelationData", None)
        return _ReplyTo(topic, bytes(data) if data is not None else None, correlation_id)

    async def _send(self, client: aiomqtt.Client, reply: _ReplyTo, answer: Accepted | Refused) -> None:
        body = reply_body(answer)
        if reply.correlation_id is not None:
            body["correlation_id"] = reply.correlation_id
        properties = Properties(PacketTypes.PUBLISH)
        properties.ContentType = "application/json"
        if reply.correlation_data is not None:
            properties.CorrelationData = reply.correlation_data
        await client.publish(reply.topic, json.dumps(body, ensure_ascii=False), qos=1, properties=properties)


def reply_body(answer: Accepted | Refused) -> dict[str, Any]:
    """The answer as JSON: accepted with the lead's id, or refused with the API's error shape."""
    if isinstance(answer, Accepted):
        lead = answer.lead
        outcome = lead.outcome.value if lead.outcome else None
        return {"status": "accepted", "lead_id": lead.id, "created": answer.created, "outcome": outcome}
    body: dict[str, Any] = {
        "status": "refused",
        "error": answer.error,
        "problems": [{"field": field, "reason": reason} for field, reason in answer.problems],
    }
    if answer.retry_after is not None:
        body["retry_after"] = answer.retry_after
    return body
