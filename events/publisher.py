"""The one place where events leave: outbox rows -> MQTT, QoS 1, in commit order.

A row is marked published only after the broker acknowledged it, so a broker outage or a
crash delays events and never drops them. A crash between the acknowledgement and the mark
would send the row again; ``Receipts`` (events/receipts.py) hears our events back from the
broker and marks them first, so with it on, each event reaches the broker once. Consumers
still get an ``id`` to deduplicate by, for brokers that lose sessions. aiomqtt does not
reconnect by itself: the loop here does.

Outages are survived, not logged per failure: a broker that goes away is one line, a
reminder every ``reminder_interval`` while it stays away, and one line when it is back; the
same for the database under the outbox. Nothing piles up meanwhile: rows are read only while
connected, and at most ``max_inflight`` publishes wait for their acknowledgement at a time.
"""

from __future__ import annotations

import asyncio
import enum
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import aiomqtt
import structlog

from events.links import Backoff, Outage
from events.receipts import Receipts

log = structlog.get_logger("events")


# Connections in a row whose receipts fence may fail before events go out without it.
FENCE_TRIES = 3


class OutboxRecord(Protocol):
    @property
    def seq(self) -> int: ...

    @property
    def id(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def payload(self) -> str: ...


class OutboxFeed(Protocol):
    async def pending_outbox(self, limit: int) -> Sequence[OutboxRecord]: ...

    async def mark_published(self, seqs: list[int], at: datetime) -> None: ...

    async def mark_published_ids(self, ids: Sequence[str], at: datetime) -> None: ...


@dataclass(frozen=True)
class MqttSettings:
    host: str
    port: int
    topic_prefix: str
    client_id: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a log line or traceback
    # TLS to the broker: None is plain TCP; a context checks the broker's certificate (and may
    # carry our client certificate).
    tls: ssl.SSLContext | None = None
    reconnect_delay: float = 2.0  # the first retry; each failure doubles it up to reconnect_max_delay
    reconnect_max_delay: float = 30.0
    poll_interval: float = 5.0  # a safety net; commits wake the publisher at once
    ack_timeout: float = 10.0  # a broker that acknowledges nothing for this long is reconnected
    reminder_interval: float = 300.0  # a "still unavailable" line this often while an outage lasts
    max_inflight: int = 20  # publishes awaiting their PUBACK at once
    # Hear our own events back (a persistent session subscribed to the topic prefix) so that a
    # crash never sends one twice. Needs read access to the prefix in the broker's ACL.
    receipts: bool = True


class PublisherState(enum.StrEnum):
    STARTING = "starting"
    PUBLISHING = "publishing"  # connected to the broker and reading the outbox
    BROKER_UNAVAILABLE = "broker_unavailable"
    DATABASE_FAILING = "database_failing"  # connected, but the outbox cannot be read or marked


def topic_for(prefix: str, event_type: str) -> str:
    """``lead.created`` -> ``<prefix>/lead/created``."""
    return f"{prefix}/{event_type.replace('.', '/')}"


class OutboxPublisher:
    def __init__(
        self,
        feed: OutboxFeed,
        settings: MqttSettings,
        now: Callable[[], datetime],
        *,
        feed_outages: tuple[type[Exception], ...],
        batch_size: int = 200,
    ) -> None:
        """``feed_outages``: what the feed raises when the database cannot serve now; waited out.

        Anything else it raises is a bug: the publisher dies of it, and the daemon says so.
        """
        self._feed = feed
        self._feed_outages = feed_outages
        self._settings = settings
        self._now = now
        self._batch_size = batch_size
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()  # the outbox was read empty and nothing was committed since
        self._settled = False  # since this connection began, the receipts fence came back
        self._fence_failures = 0  # connections in a row whose fence did not come back
        self._acked: list[OutboxRecord] = []  # acknowledged by the broker, not yet marked in the outbox
        self._receipts = Receipts(feed, settings, now, feed_outages=feed_outages) if settings.receipts else None
        self._broker = Outage("mqtt", settings.reminder_interval)
        self._database = Outage("outbox.database", settings.reminder_interval)
        self.state = PublisherState.STARTING
        self.connected = False
        self.published = 0
        self.broker_failures = 0  # connection attempts that failed or connections that broke, ever
        self.database_failures = 0  # outbox reads or marks that failed, ever

    def wake(self) -> None:
        """Called after a commit that wrote outbox rows."""
        self._idle.clear()
        self._wake.set()

    async def flush(self) -> None:
        """Return once every event committed before the call has been published and marked.

        Waits for as long as the broker or the database is away: the caller bounds it.
        """
        self.wake()
        await self._idle.wait()

    async def run(self) -> None:
        if self._receipts is None:
            await self._publish_forever()
            return
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._receipts.run())
            await self._publish_forever()

    @property
    def receipts_marked(self) -> int:
        """Events marked from their echo: ones a crash or a lost PUBACK would have sent again."""
        return self._receipts.marked_here if self._receipts else 0

    async def _publish_forever(self) -> None:
        mqtt = self._settings
        backoff = Backoff(mqtt.reconnect_delay, mqtt.reconnect_max_delay)
        while True:
            try:
                async with aiomqtt.Client(
                    mqtt.host,
                    mqtt.port,
                    identifier=mqtt.client_id,
                    username=mqtt.username,
                    password=mqtt.password,
                    tls_context=mqtt.tls,
                    timeout=mqtt.ack_timeout,
                    max_inflight_messages=mqtt.max_inflight,
                ) as client:
                    # Our window keeps at most max_inflight publishes pending; more would be a bug worth a line.
                    client.pending_calls_threshold = mqtt.max_inflight
                    self.connected = True
                    self.state = PublisherState.PUBLISHING
                    backoff.reset()
                    if self._broker.ongoing:
                        self._broker.ended(host=mqtt.host, port=mqtt.port)
                    else:
                        log.info("mqtt.connected", host=mqtt.host, port=mqtt.port)
                    await self._drain_forever(client)
            except aiomqtt.MqttError as exc:
                self.broker_failures += 1
                self.state = PublisherState.BROKER_UNAVAILABLE
                # aiomqtt's "Disconnected during message iteration" says why only in its cause.
                reason = f"{exc}: {exc.__cause__}" if exc.__cause__ else str(exc)
                self._broker.failed(reason, host=mqtt.host, port=mqtt.port)
            finally:
                self.connected = False
            await asyncio.sleep(backoff.next())

    async def _drain_forever(self, client: aiomqtt.Client) -> None:
        settings = self._settings
        backoff = Backoff(settings.reconnect_delay, settings.reconnect_max_delay)
        # Nothing is subscribed, so the message stream ends only when the connection does:
        # watching it tells a broker that went away at once, not at the next publish.
        gone = asyncio.ensure_future(anext(aiter(client.messages)))
        self._settled = self._receipts is None
        try:
            while True:
                self._wake.clear()
                try:
                    batch = await self._publish_batch(client)
                except self._feed_outages as exc:
                    # Keep the broker connection and try the database again later.
                    self.state = PublisherState.DATABASE_FAILING
                    self.database_failures += 1
                    self._database.failed(str(exc))
                    await asyncio.sleep(backoff.next())
                    continue
                if self._database.ongoing:
                    self._database.ended()
                    backoff.reset()
                self.state = PublisherState.PUBLISHING
                if batch:
                    continue
                if not self._wake.is_set():
                    self._idle.set()
                woken = asyncio.ensure_future(self._wake.wait())
                done, _ = await asyncio.wait(
                    {woken, gone}, timeout=settings.poll_interval, return_when=asyncio.FIRST_COMPLETED
                )
                woken.cancel()
                if gone in done:
                    gone.result()  # raises the MqttError saying why
        finally:
            gone.cancel()

    async def _publish_batch(self, client: aiomqtt.Client) -> int:
        """Publish the next batch in commit order; returns how many rows it published."""
        if self._acked:
            # Acknowledged before the database failed: mark them, or they would be sent again.
            await self._mark_acked()
        if not self._settled and self._receipts is not None:
            # Whatever the broker took before a crash or a broken connection is marked now, so
            # the first batch holds only events it never had. After the marks above: their
            # echoes are held unacknowledged until then, and the fence queues behind them.
            if await self._receipts.settle(client):
                if self._fence_failures >= FENCE_TRIES:
                    log.info("mqtt.receipts_back")
                self._fence_failures = 0
            else:
                self._fence_failures += 1
                if self._fence_failures < FENCE_TRIES:
                    raise aiomqtt.MqttError("our own events did not come back (receipts fence)")
                if self._fence_failures == FENCE_TRIES:
                    # Most likely an ACL that predates receipts. Events must flow: at least once
                    # (a crash may send one twice) until the fence comes back, tried at each connect.
                    log.error(
                        "mqtt.receipts_unavailable",
                        tries=FENCE_TRIES,
                        hint=f"let the daemon's MQTT user read {self._settings.topic_prefix}/+/+ and "
                        f"read and write {self._settings.topic_prefix}_fence/#",
                    )
            self._settled = True
        batch = await self._feed.pending_outbox(self._batch_size)
        window = self._settings.max_inflight
        for start in range(0, len(batch), window):
            records = batch[start : start + window]
            # paho sends in call order, and tasks start in creation order, so commit order holds
            # on the wire without a round trip per event. A failure abandons the whole window:
            # the rows acknowledged so far are the windows before it, a prefix in commit order.
            publishes = [
                asyncio.ensure_future(
                    client.publish(topic_for(self._settings.topic_prefix, record.type), record.payload, qos=1)
                )
                for record in records
            ]
            ids = [record.id for record in records]
            if self._receipts is not None:
                self._receipts.sending(ids)
            try:
                await asyncio.gather(*publishes)
            except BaseException:
                for publish in publishes:
                    publish.cancel()
                if self._receipts is not None:
                    self._receipts.abandoned(ids)
                raise
            self._acked.extend(records)
            # Marked window by window: a kill -9 re-sends at most the window it was marking and
            # the one in flight (at-least-once), not the rest of a 200-row batch.
            await self._mark_acked()
        return len(batch)

    async def _mark_acked(self) -> None:
        await self._feed.mark_published([record.seq for record in self._acked], self._now())
        if self._receipts is not None:
            self._receipts.marked(record.id for record in self._acked)
        self.published += len(self._acked)
        self._acked = []
