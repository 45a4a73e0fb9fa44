"""The outbox publisher against a real mosquitto: order, acknowledgements, outages."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from events.publisher import FENCE_TRIES, MqttSettings, OutboxPublisher, OutboxRecord, PublisherState
from leadrouter.broker import free_port, private_mosquitto
from leadrouter.demo import CrmListener
from pbxsim.tests.amitools import wait_until
from router.model import Lead
from storage.engine import Database, StorageUnavailable
from storage.queries import SqlQueries
from storage.uow import SqlUnitOfWork
from tests.conftest import JsonLog, sqlite_read_only

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


async def _commit_leads(db: Database, publisher: OutboxPublisher, first: int, count: int) -> None:
    for number in range(first, first + count):
        async with SqlUnitOfWork(db, on_events_committed=publisher.wake) as uow:
            lead = Lead(
                phone=f"+7916000{number:04d}", name="x", source="web", external_id=None, payload={}, created_at=NOW
            )
            await uow.leads.add([lead])
            uow.outbox.add([lead.created()], NOW)
            await uow.commit()


async def test_events_leave_in_commit_order_with_ids_and_are_marked(db: Database, mosquitto_port: int) -> None:
    queries = SqlQueries(db)
    settings = MqttSettings(host="127.0.0.1", port=mosquitto_port, topic_prefix="leadrouter", client_id="pub-1")
    publisher = OutboxPublisher(queries, settings, now=lambda: NOW, feed_outages=(StorageUnavailable,))
    crm = CrmListener("crm-test", persistent_session=True)
    async with asyncio.TaskGroup() as group:
        listening = group.create_task(crm.run(mosquitto_port))
        await asyncio.wait_for(crm.subscribed.wait(), 5)
        publishing = group.create_task(publisher.run())
        await _commit_leads(db, publisher, 0, 30)
        await wait_until(lambda: len(crm.received) >= 30, 10, "30 events at the CRM")
        await wait_until(lambda: publisher.published >= 30, 5, "30 acknowledgements")
        listening.cancel()
        publishing.cancel()
    assert [event["lead_id"] for event in crm.received] == list(range(1, 31))
    assert {event["type"] for event in crm.received} == {"lead.created"}
    assert set(crm.topics) == {"leadrouter/lead/created"}
    assert await queries.pending_outbox(100) == []  # every row acknowledged and marked
    assert len({event["id"] for event in crm.received}) == 30


async def test_a_broker_outage_delays_events_loses_none_and_does_not_flood_the_log(
    db: Database, tmp_path: Path, json_log: JsonLog
) -> None:
    port = free_port()
    queries = SqlQueries(db)
    settings = MqttSettings(
        host="127.0.0.1",
        port=port,
        topic_prefix="leadrouter",
        client_id="pub-2",
        reconnect_delay=0.02,
        reconnect_max_delay=0.1,
        reminder_interval=0.5,  # an hour's outage in production, compressed: reminders every 5 min there
    )
    publisher = OutboxPublisher(queries, settings, now=lambda: NOW, feed_outages=(StorageUnavailable,))
    crm = CrmListener("crm-test", persistent_session=True)
    state = tmp_path / "broker"
    state.mkdir()
    async with asyncio.TaskGroup() as group:
        with private_mosquitto(port, state):
            listening = group.create_task(crm.run(port))
            await asyncio.wait_for(crm.subscribed.wait(), 5)
            publishing = group.create_task(publisher.run())
            await _commit_leads(db, publisher, 0, 20)
            await wait_until(lambda: len(crm.received) >= 20, 10, "20 events at the CRM")
            # The broker may pass an event on before its PUBACK reaches the publisher: wait for
            # the acknowledgements too, so the outage starts with exactly these 20 marked.
            await wait_until(lambda: publisher.published >= 20, 5, "20 acknowledgements")
            # And their receipts acknowledged to the broker before it goes: stopping it blocks the loop.
            await publisher.flush()
        listening.cancel()
        # The broker is down: the daemon keeps committing, nothing is published, nothing is lost.
        await _commit_leads(db, publisher, 20, 40)
        await wait_until(lambda: publisher.broker_failures >= 10, 10, "ten failed reconnects")
        tasks_during_outage = len(asyncio.all_tasks())
        await wait_until(lambda: len(json_log.events("mqtt.still_unavailable")) >= 2, 10, "two reminders")
        await wait_until(lambda: publisher.broker_failures >= 30, 10, "thirty failed reconnects")
        # Retrying holds nothing more than it did ten failures ago: no task, no pending publish.
        assert len(asyncio.all_tasks()) == tasks_during_outage
        assert publisher.state is PublisherState.BROKER_UNAVAILABLE and publisher.published == 20
        # Every event committed during the outage waits in the outbox, in commit order.
        waiting = [record.lead_id for record in await queries.pending_outbox(100)]
        assert waiting == list(range(21, 61))
        with private_mosquitto(port, state):
            # The CRM comes back whenever it likes: its persistent session queues what it missed.
            listening = group.create_task(crm.run(port))
            await wait_until(lambda: len({event["id"] for event in crm.received}) >= 60, 15, "60 distinct events")
            await wait_until(lambda: publisher.published >= 60, 5, "60 acknowledgements")
            listening.cancel()
            publishing.cancel()
            # Gone before the broker is: its stop would otherwise count as a second outage.
            await asyncio.wait([listening, publishing])
    first_seen: dict[str, int] = {}
    for event in crm.received:
        first_seen.setdefault(event["id"], event["lead_id"])
    assert list(first_seen.values()) == list(range(1, 61))  # every event, in commit order
    assert await queries.pending_outbox(100) == []

    # The log: one line when the broker went, one when it came back, a reminder every 0.5 s
    # in between; not a line per failed reconnect.
    assert len(json_log.events("mqtt.unavailable")) == 1
    (back,) = json_log.events("mqtt.back")
    assert back["failures"] == publisher.broker_failures >= 30
    reminders = json_log.events("mqtt.still_unavailable")
    assert 2 <= len(reminders) <= back["down_for"] / 0.5 + 1 < publisher.broker_failures
    ours = [line["event"] for line in json_log.lines() if line["logger"] == "events"]
    assert ours == ["mqtt.connected", "mqtt.unavailable", *["mqtt.still_unavailable"] * len(reminders), "mqtt.back"]
    # paho says once that the socket was reset; aiomqtt would warn when publishes pile up
    # unacknowledged, which the publisher's window never lets happen.
    for client in ("mqtt", "mqtt.receipts"):
        library = [line["event"] for line in json_log.lines() if line["logger"] == client]
        assert len(library) <= 1 and not any("pending publish" in event for event in library), [
            (line["logger"], line["event"], line["timestamp"]) for line in json_log.lines()
        ]


# These two stage the outage by SQLite's means (its "no such table" and query_only are what a lost or
# read-only file raise); on PostgreSQL a missing table is a bug, not an outage, and is not survived.
sqlite_outage = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@sqlite_outage
async def test_the_publisher_survives_database_errors_and_resumes(
    db: Database, mosquitto_port: int, json_log: JsonLog
) -> None:
    queries = SqlQueries(db)
    settings = MqttSettings(
        host="127.0.0.1", port=mosquitto_port, topic_prefix="leadrouter", client_id="pub-3", reconnect_max_delay=0.05
    )
    publisher = OutboxPublisher(queries, settings, now=lambda: NOW, feed_outages=(StorageUnavailable,))
    crm = CrmListener("crm-db-test", persistent_session=True)
    await _commit_leads(db, publisher, 0, 10)
    # A real database error under the publisher: the outbox table is gone while it runs.
    async with db.engine.begin() as conn:
        await conn.exec_driver_sql("ALTER TABLE outbox RENAME TO outbox_away")
    async with asyncio.TaskGroup() as group:
        listening = group.create_task(crm.run(mosquitto_port))
        await asyncio.wait_for(crm.subscribed.wait(), 5)
        publishing = group.create_task(publisher.run())
        await wait_until(lambda: publisher.database_failures >= 5, 10, "five failed outbox reads")
        assert publisher.state is PublisherState.DATABASE_FAILING and not publishing.done()
        assert publisher.connected  # the broker connection is kept meanwhile
        async with db.engine.begin() as conn:
            await conn.exec_driver_sql("ALTER TABLE outbox_away RENAME TO outbox")
        await wait_until(lambda: len(crm.received) >= 10, 10, "10 events at the CRM")
        await wait_until(lambda: publisher.published >= 10, 5, "10 acknowledgements")
        listening.cancel()
        publishing.cancel()
    assert [event["lead_id"] for event in crm.received] == list(range(1, 11))  # each once, in order
    assert await queries.pending_outbox(100) == []
    (failing,) = json_log.events("outbox.database.unavailable")
    assert "no such table: outbox" in failing["error"]
    (back,) = json_log.events("outbox.database.back")
    assert back["failures"] == publisher.database_failures >= 5


@sqlite_outage
async def test_events_acknowledged_while_the_database_is_read_only_are_not_sent_again(
    db: Database, mosquitto_port: int, json_log: JsonLog
) -> None:
    queries = SqlQueries(db)
    settings = MqttSettings(
        host="127.0.0.1", port=mosquitto_port, topic_prefix="leadrouter", client_id="pub-4", reconnect_max_delay=0.05
    )
    publisher = OutboxPublisher(queries, settings, now=lambda: NOW, feed_outages=(StorageUnavailable,))
    crm = CrmListener("crm-read-only", persistent_session=True)
    await _commit_leads(db, publisher, 0, 10)
    # The outbox can be read but not marked (SQLite refusing writes as for a read-only file):
    # the broker acknowledges the events, and the publisher cannot record that it did.
    read_only = [True]

    with sqlite_read_only(db.engine.sync_engine, read_only):
        async with asyncio.TaskGroup() as group:
            listening = group.create_task(crm.run(mosquitto_port))
            await asyncio.wait_for(crm.subscribed.wait(), 5)
            publishing = group.create_task(publisher.run())
            await wait_until(lambda: len(crm.received) >= 10, 10, "10 events at the CRM")
            await wait_until(lambda: publisher.database_failures >= 5, 10, "five failed attempts to mark them")
            assert publisher.published == 0 and len(await queries.pending_outbox(100)) == 10
            read_only[0] = False
            await wait_until(lambda: publisher.published >= 10, 10, "the events marked")
            listening.cancel()
            publishing.cancel()
    # Sent once: retries mark what the broker acknowledged instead of publishing it again.
    assert [event["lead_id"] for event in crm.received] == list(range(1, 11))
    assert await queries.pending_outbox(100) == []
    assert len(json_log.events("outbox.database.unavailable")) == 1


class _DiesBeforeMarking:
    """The outbox as a daemon killed right after the broker's PUBACK sees it: the mark never lands."""

    def __init__(self, queries: SqlQueries) -> None:
        self._queries = queries
        self.acknowledged = asyncio.Event()

    async def pending_outbox(self, limit: int) -> Sequence[OutboxRecord]:
        return await self._queries.pending_outbox(limit)

    async def mark_published(self, seqs: list[int], at: datetime) -> None:
        self.acknowledged.set()
        await asyncio.Event().wait()  # the kill: nothing after the PUBACK is written

    async def mark_published_ids(self, ids: Sequence[str], at: datetime) -> None:
        await self._queries.mark_published_ids(ids, at)


@pytest.mark.parametrize("receipts", [True, False], ids=["receipts", "no_receipts"])
async def test_a_crash_between_the_puback_and_the_mark_sends_nothing_twice_with_receipts(
    db: Database, mosquitto_port: int, receipts: bool
) -> None:
    queries = SqlQueries(db)
    # Ids of this run only: the broker outlives the test and keeps the persistent sessions of the
    # other database's run, whose queued events would come back here.
    run = uuid.uuid4().hex[:8]
    settings = MqttSettings(
        host="127.0.0.1",
        port=mosquitto_port,
        topic_prefix="crash",
        client_id=f"pub-crash-{receipts}-{run}",
        receipts=receipts,
        max_inflight=20,
    )
    crm = CrmListener(f"crm-crash-{receipts}-{run}", persistent_session=True, topics="crash/#")
    dying = _DiesBeforeMarking(queries)
    first = OutboxPublisher(dying, settings, now=lambda: NOW, feed_outages=(StorageUnavailable,))
    await _commit_leads(db, first, 0, 30)
    async with asyncio.TaskGroup() as group:
        listening = group.create_task(crm.run(mosquitto_port))
        await asyncio.wait_for(crm.subscribed.wait(), 5)
        killed = group.create_task(first.run())
        await asyncio.wait_for(dying.acknowledged.wait(), 10)
        await wait_until(lambda: len(crm.received) >= 20, 10, "the first window at the CRM")
        killed.cancel()  # with its first 20 events at the broker and none marked

        second = OutboxPublisher(queries, settings, now=lambda: NOW, feed_outages=(StorageUnavailable,))
        publishing = group.create_task(second.run())
        await wait_until(lambda: len({event["id"] for event in crm.received}) >= 30, 10, "30 distinct events")
        await wait_until(lambda: not second._acked and second.published + second.receipts_marked >= 30, 10, "marked")
        listening.cancel()
        publishing.cancel()
    assert await queries.pending_outbox(100) == []
    lead_ids = [event["lead_id"] for event in crm.received]
    if receipts:
        # The 20 the broker had were marked from their echo; only the last 10 were sent.
        assert lead_ids == list(range(1, 31))
        assert (second.receipts_marked, second.published) == (20, 10)
    else:
        assert lead_ids == list(range(1, 21)) + list(range(1, 31))  # at least once: the window again


async def test_a_broker_that_will_not_let_us_hear_our_events_gets_them_at_least_once_with_an_error_line(
    db: Database, tmp_path: Path, json_log: JsonLog
) -> None:
    # An ACL written before receipts: the daemon may publish its events but not read them back.
    acl = tmp_path / "acl"
    acl.write_text("topic write leadrouter/#\ntopic write leadrouter_fence/#\n")
    queries = SqlQueries(db)
    with private_mosquitto(acl_file=acl) as port:
        settings = MqttSettings(
            host="127.0.0.1",
            port=port,
            topic_prefix="leadrouter",
            client_id="pub-acl",
            ack_timeout=0.3,  # the fence's wait, compressed
            reconnect_delay=0.01,
            reconnect_max_delay=0.05,
        )
        publisher = OutboxPublisher(queries, settings, now=lambda: NOW, feed_outages=(StorageUnavailable,))
        await _commit_leads(db, publisher, 0, 5)
        publishing = asyncio.create_task(publisher.run())
        try:
            await wait_until(lambda: publisher.published >= 5, 20, "5 events acknowledged without receipts")
        finally:
            publishing.cancel()
            await asyncio.wait([publishing])
    assert await queries.pending_outbox(100) == []
    (unavailable,) = json_log.events("mqtt.receipts_unavailable")
    assert "leadrouter/+/+" in unavailable["hint"] and unavailable["tries"] == FENCE_TRIES
