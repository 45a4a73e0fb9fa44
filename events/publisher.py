"""The one place where events leave: outbox rows -> MQTT, QoS 1, in commit order.

A row is marked published only after the broker acknowledged it, so a broker outage or a
crash delays events and never drops them; the price is that a message can arrive twice,
which consumers handle by its ``id``. aiomqtt does not reconnect by itself: the loop here does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import aiomqtt
import structlog

log = structlog.get_logger("events")


class OutboxRecord(Protocol):
    @property
    def seq(self) -> int: ...

    @property
    def type(self) -> str: ...

    @property
    def payload(self) -> str: ...


class OutboxFeed(Protocol):
    async def pending_outbox(self, limit: int) -> Sequence[OutboxRecord]: ...

    async def mark_published(self, seqs: list[int], at: datetime) -> None: ...


@dataclass(frozen=True)
class MqttSettings:
    host: str
    port: int
    topic_prefix: str
    client_id: str
    username: str | None = None
    password: str | None = None
    reconnect_delay: float = 2.0
    poll_interval: float = 5.0  # a safety net; commits wake the publisher at once


def topic_for(prefix: str, event_type: str) -> str:
    """``lead.created`` -> ``<prefix>/lead/created``."""
    return f"{prefix}/{event_type.replace('.', '/')}"


class OutboxPublisher:
    def __init__(
        self, feed: OutboxFeed, settings: MqttSettings, now: Callable[[], datetime], batch_size: int = 200
    ) -> None:
        self._feed = feed
        self._settings = settings
        self._now = now
        self._batch_size = batch_size
        self._wake = asyncio.Event()
        self.connected = False
        self.published = 0

    def wake(self) -> None:
        """Called after a commit that wrote outbox rows."""
        self._wake.set()

    async def run(self) -> None:
        mqtt = self._settings
        while True:
            try:
                async with aiomqtt.Client(
                    mqtt.host,
                    mqtt.port,
                    identifier=mqtt.client_id,
                    username=mqtt.username,
                    password=mqtt.password,
                ) as client:
                    self.connected = True
                    log.info("mqtt.connected", host=mqtt.host, port=mqtt.port)
                    await self._drain_forever(client)
            except aiomqtt.MqttError as exc:
                log.warning("mqtt.unavailable", error=str(exc), retry_in=mqtt.reconnect_delay)
            finally:
                self.connected = False
            await asyncio.sleep(mqtt.reconnect_delay)

    async def _drain_forever(self, client: aiomqtt.Client) -> None:
        while True:
            self._wake.clear()
            batch = await self._feed.pending_outbox(self._batch_size)
            if not batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._settings.poll_interval)
                continue
            # paho sends in call order, so issuing the whole batch before awaiting the
            # acknowledgements keeps commit order on the wire without a round trip per event.
            await asyncio.gather(
                *(
                    client.publish(topic_for(self._settings.topic_prefix, record.type), record.payload, qos=1)
                    for record in batch
                )
            )
            await self._feed.mark_published([record.seq for record in batch], self._now())
            self.published += len(batch)
