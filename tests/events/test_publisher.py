"""The outbox publisher against a real mosquitto: order, acknowledgements, outages."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt

from events.publisher import MqttSettings, OutboxPublisher
from leadrouter.broker import free_port, private_mosquitto
from router.model import Lead
from storage.engine import Database
from storage.queries import SqlQueries
from storage.uow import SqlUnitOfWork

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


async def _commit_leads(db: Database, publisher: OutboxPublisher, first: int, count: int) -> None:
    for i in range(first, first + count):
        async with SqlUnitOfWork(db, on_events_committed=publisher.wake) as uow:
            lead = Lead(phone=f"+7916000{i:04d}", name="x", source="web", external_id=None, payload={}, created_at=NOW)
            await uow.leads.add(lead)
            uow.outbox.add([lead.created()], NOW)
            await uow.commit()


class Subscriber:
    """A CRM with a persistent session: the broker queues for it while it is away."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.messages: list[dict[str, object]] = []
        self.topics: list[str] = []
        self.subscribed = asyncio.Event()

    async def run(self) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port, identifier="crm-test", clean_session=False) as client:
            await client.subscribe("leadrouter/#", qos=1)
            self.subscribed.set()
            async for message in client.messages:
                self.topics.append(str(message.topic))
                self.messages.append(json.loads(bytes(message.payload)))  # type: ignore[arg-type]


async def _until(predicate: object, seconds: float) -> None:
    for _ in range(int(seconds / 0.02)):
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


async def test_events_leave_in_commit_order_with_ids_and_are_marked(db: Database, mosquitto_port: int) -> None:
    queries = SqlQueries(db)
    settings = MqttSettings(host="127.0.0.1", port=mosquitto_port, topic_prefix="leadrouter", client_id="pub-1")
    publisher = OutboxPublisher(queries, settings, now=lambda: NOW)
    crm = Subscriber(mosquitto_port)
    async with asyncio.TaskGroup() as group:
        sub = group.create_task(crm.run())
        await asyncio.wait_for(crm.subscribed.wait(), 5)
        pub = group.create_task(publisher.run())
        await _commit_leads(db, publisher, 0, 30)
        await _until(lambda: len(crm.messages) >= 30, 10)
        await _until(lambda: publisher.published >= 30, 5)
        sub.cancel()
        pub.cancel()
    assert [m["lead_id"] for m in crm.messages] == list(range(1, 31))
    assert {m["type"] for m in crm.messages} == {"lead.created"}
    assert set(crm.topics) == {"leadrouter/lead/created"}
    outbox_ids = [m.id for m in await queries.pending_outbox(100)]
    assert outbox_ids == []  # every row acknowledged and marked
    assert len({m["id"] for m in crm.messages}) == 30


async def test_a_broker_outage_delays_events_and_loses_none(db: Database, tmp_path: Path) -> None:
    port = free_port()
    queries = SqlQueries(db)
    settings = MqttSettings(
        host="127.0.0.1", port=port, topic_prefix="leadrouter", client_id="pub-2", reconnect_delay=0.2
    )
    publisher = OutboxPublisher(queries, settings, now=lambda: NOW)
    crm = Subscriber(port)
    state = tmp_path / "broker"
    state.mkdir()
    async with asyncio.TaskGroup() as group:
        with private_mosquitto(port, state):
            sub = group.create_task(crm.run())
            await asyncio.wait_for(crm.subscribed.wait(), 5)
            pub = group.create_task(publisher.run())
            await _commit_leads(db, publisher, 0, 20)
            await _until(lambda: len(crm.messages) >= 20, 10)
        sub.cancel()
        # The broker is down: the daemon keeps committing, nothing is published, nothing is lost.
        await _commit_leads(db, publisher, 20, 40)
        await asyncio.sleep(0.5)
        assert len(await queries.pending_outbox(100)) == 40
        with private_mosquitto(port, state):
            # The CRM comes back whenever it likes: its persistent session queues what it missed.
            await asyncio.sleep(0.5)
            sub = group.create_task(crm.run())
            await _until(lambda: len({m["id"] for m in crm.messages}) >= 60, 15)
            await _until(lambda: publisher.published >= 60, 5)
            sub.cancel()
            pub.cancel()
    first_seen: dict[object, int] = {}
    for m in crm.messages:
        first_seen.setdefault(m["id"], m["lead_id"])  # type: ignore[arg-type]
    assert list(first_seen.values()) == list(range(1, 61))  # every event, in commit order
    assert await queries.pending_outbox(100) == []
