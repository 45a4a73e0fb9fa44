"""What the broker really accepted: our own events, heard back through a persistent session.

A publisher killed between the broker's PUBACK and marking the row published cannot tell,
when it starts again, which of its last publishes reached the broker; sending them again is
what made delivery at-least-once. ``Receipts`` closes that gap. It subscribes to our own
topics with a persistent session (clean session off) and acknowledges a message only once its
event is marked published in the outbox. So every event the broker accepted is, at any time,
either marked or still held for us in that session. After a (re)connect the publisher sends a
fence through the broker and waits for it here: by then everything accepted before has been
redelivered and marked, and what is still unmarked never reached the broker.

It holds as long as the broker keeps our session: a broker restarted without persistence, or
``max_queued_messages`` overflowing while we are away, reopens the gap (the consumers' sessions
are lost with it too).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import NamedTuple, Protocol

import aiomqtt
import structlog

from events.links import Backoff, acknowledge, acknowledge_when_told, connected
from router.events import EVENT_TYPES

log = structlog.get_logger("events")

# Ids the publisher marked lately: an echo of one of them is acknowledged without a write.
_RECENTLY_MARKED = 5000
_BATCH = 500


class ReceiptFeed(Protocol):
    async def mark_published_ids(self, ids: Sequence[str], at: datetime) -> None: ...


class ReceiptSettings(Protocol):
    """The publisher's MQTT settings, read-only."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def topic_prefix(self) -> str: ...
    @property
    def client_id(self) -> str: ...
    @property
    def username(self) -> str | None: ...
    @property
    def password(self) -> str | None: ...
    @property
    def tls(self) -> ssl.SSLContext | None: ...
    @property
    def ack_timeout(self) -> float: ...
    @property
    def reconnect_delay(self) -> float: ...
    @property
    def reconnect_max_delay(self) -> float: ...


def fence_topic(prefix: str, client_id: str) -> str:
    # Outside the event topics, so consumers subscribed to ``<prefix>/#`` never see a fence.
    return f"{prefix}_fence/{client_id}"


class Receipts:
    def __init__(
        self,
        feed: ReceiptFeed,
        settings: ReceiptSettings,
        now: Callable[[], datetime],
        *,
        feed_outages: tuple[type[Exception], ...],
    ) -> None:
        self._feed = feed
        self._settings = settings
        self._now = now
        self._feed_outages = feed_outages
        self._subscribed = asyncio.Event()
        self._fences: dict[str, asyncio.Future[None]] = {}
        # Echoes of events the publisher has in flight: acknowledged once it marks them.
        self._in_flight: set[str] = set()
        self._held: dict[str, _Echo] = {}
        self._marked: OrderedDict[str, None] = OrderedDict()
        self._client: aiomqtt.Client | None = None
        self._marking: set[asyncio.Task[None]] = set()  # echoes of abandoned events being marked
        # The subscription's <prefix>/+/+ also takes what CRMs may write (<prefix>/commands/x):
        # only our events' own topics are read.
        self._topics = frozenset(f"{settings.topic_prefix}/{event.type.replace('.', '/')}" for event in EVENT_TYPES)
        self.marked_here = 0  # events this side marked: ones whose PUBACK the publisher never saw

    # -- what the publisher tells us ---------------------------------------------------------

    def sending(self, ids: Iterable[str]) -> None:
        self._in_flight.update(ids)

    def marked(self, ids: Iterable[str]) -> None:
        for event_id in ids:
            self._in_flight.discard(event_id)
            self._marked[event_id] = None
            echo = self._held.pop(event_id, None)
            if echo is not None:
                self._ack(echo)
        while len(self._marked) > _RECENTLY_MARKED:
            self._marked.popitem(last=False)

    def abandoned(self, ids: Iterable[str]) -> None:
        """The publisher gave these up unmarked (its connection broke): echoes of them are ours to mark."""
        ids = set(ids)
        self._in_flight.difference_update(ids)
        echoed = {event_id: self._held.pop(event_id) for event_id in ids & self._held.keys()}
        if echoed:
            marking = asyncio.ensure_future(self._mark_and_ack(echoed))
            self._marking.add(marking)
            marking.add_done_callback(self._marking.discard)

    async def settle(self, client: aiomqtt.Client) -> bool:
        """Return once every event the broker accepted before this call is marked published: True.

        False when our own events cannot be heard back in time (the receipts session is not up
        yet, or the broker's ACL does not let us read our topics): the publisher decides.
        """
        timeout = self._settings.ack_timeout
        if self._marking:
            await asyncio.gather(*self._marking)
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation that
            # arrives as the awaited thing completes.
            async with asyncio.timeout(timeout):
                await self._subscribed.wait()
        except TimeoutError:
            return False
        token = uuid.uuid4().hex
        arrived = asyncio.get_running_loop().create_future()
        self._fences[token] = arrived
        try:
            await client.publish(fence_topic(self._settings.topic_prefix, self._settings.client_id), token, qos=1)
            async with asyncio.timeout(timeout):
                await arrived
        except TimeoutError:
            return False
        finally:
            self._fences.pop(token, None)
        return True

    # -- the session -------------------------------------------------------------------------

    async def run(self) -> None:
        settings = self._settings
        backoff = Backoff(settings.reconnect_delay, settings.reconnect_max_delay)
        while True:
            client = aiomqtt.Client(
                settings.host,
                settings.port,
                identifier=f"{settings.client_id}-receipts",
                username=settings.username,
                password=settings.password,
                tls_context=settings.tls,
                timeout=settings.ack_timeout,
                clean_session=False,
                # Its own name: paho's line about a reset socket is then one per client, not two of one.
                logger=logging.getLogger("mqtt.receipts"),
            )
            # Acknowledged once the event is marked: one acknowledged on arrival, before the mark,
            # would be a receipt a kill -9 loses.
            acknowledge_when_told(client)
            try:
                async with client:
                    # Event topics are <prefix>/<entity>/<event>: commands and replies lie deeper.
                    await client.subscribe(f"{settings.topic_prefix}/+/+", qos=1)
                    await client.subscribe(fence_topic(settings.topic_prefix, settings.client_id), qos=1)
                    self._client = client
                    self._subscribed.set()
                    backoff.reset()
                    await self._listen(client)
            except aiomqtt.MqttError:
                pass  # the publisher logs the broker's outages; its fence waits for us
            finally:
                self._subscribed.clear()
                self._client = None
                self._held.clear()  # unacknowledged: the broker delivers them again
            await asyncio.sleep(backoff.next())

    async def _listen(self, client: aiomqtt.Client) -> None:
        messages = client.messages
        while True:
            batch = [await anext(aiter(messages))]
            while len(messages) and len(batch) < _BATCH:
                batch.append(await anext(aiter(messages)))
            await self._take([_Echo(client, message) for message in batch])

    async def _take(self, batch: list[_Echo]) -> None:
        fence = fence_topic(self._settings.topic_prefix, self._settings.client_id)
        to_mark: dict[str, _Echo] = {}
        fences: list[str] = []
        for echo in batch:
            message = echo.message
            if message.topic.value == fence:
                fences.append(bytes(message.payload).decode(errors="replace"))
                self._ack(echo)
                continue
            event_id = _event_id(message) if message.topic.value in self._topics else None
            if event_id is None or event_id in self._marked:
                self._ack(echo)
            elif event_id in self._in_flight:
                self._held[event_id] = echo  # the publisher marks it when its PUBACK comes
            else:
                to_mark[event_id] = echo
        if to_mark:
            await self._mark_and_ack(to_mark)
        for token in fences:
            arrived = self._fences.get(token)
            if arrived is not None and not arrived.done():
                arrived.set_result(None)

    async def _mark_and_ack(self, echoes: dict[str, _Echo]) -> None:
        backoff = Backoff(self._settings.reconnect_delay, self._settings.reconnect_max_delay)
        while True:
            try:
                await self._feed.mark_published_ids(list(echoes), self._now())
                break
            except self._feed_outages:
                # Unacknowledged meanwhile, so nothing is lost; the publisher reports the outage.
                await asyncio.sleep(backoff.next())
        self.marked_here += len(echoes)
        for echo in echoes.values():
            self._ack(echo)

    def _ack(self, echo: _Echo) -> None:
        # Only on the connection it came by: once that broke, the broker sends it again.
        client = echo.client
        if client is self._client and echo.message.qos > 0 and connected(client):
            acknowledge(client, echo.message)


class _Echo(NamedTuple):
    client: aiomqtt.Client
    message: aiomqtt.Message


def _event_id(message: aiomqtt.Message) -> str | None:
    """The id of an event of ours, from one of our events' topics: its type must be the one its
    topic names, as the publisher sends it. Anything else is no receipt (and never an error: an
    unacknowledged message that raised here would come back at every start)."""
    try:
        event = json.loads(bytes(message.payload))
    except (ValueError, TypeError, RecursionError):
        return None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return None
    if not message.topic.value.endswith(f"/{event['type'].replace('.', '/')}"):
        return None
    event_id = event.get("id")
    return event_id if isinstance(event_id, str) else None
