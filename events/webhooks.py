"""Outgoing webhooks: the outbox's second way out, beside MQTT (events/publisher.py).

Each subscriber gets every event it asked for as an HTTP POST of the same JSON the MQTT topic
carries, signed with HMAC-SHA256 over ``<timestamp>.<raw body>`` with its secret (see
``signature``). Delivery is at least once: a row is deleted only after a 2xx, so a crash
between the answer and the commit sends the event again, and receivers dedupe by its ``id``.

A lead's events arrive in order: a failed event is retried with exponential backoff and
jitter while the lead's later events wait behind it; other leads go on. An event still
failing ``dead_after`` seconds after its first failure is dead (with the lead's later ones):
``leadrouter webhooks list`` and ``GET /webhooks`` show it, ``retry`` sends it again.

Each subscriber runs in its own task on its own state in the database: a receiver that is down
or slow delays only itself, never the intake, the dialer or MQTT.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

import structlog

from events.links import Backoff, Outage

if TYPE_CHECKING:  # imported by the senders, which a daemon without subscribers never starts
    import httpx

log = structlog.get_logger("webhooks")

SIGNATURE_HEADER = "X-Leadrouter-Signature"  # "sha256=" + hex HMAC of "<timestamp>.<raw body>"
TIMESTAMP_HEADER = "X-Leadrouter-Timestamp"  # Unix seconds when this attempt was signed
EVENT_HEADER = "X-Leadrouter-Event"  # the event's type, e.g. lead.assigned
EVENT_ID_HEADER = "X-Leadrouter-Event-Id"  # the event's id: the same on every attempt, dedupe by it
ATTEMPT_HEADER = "X-Leadrouter-Attempt"  # 1 on the first attempt

BATCH = 500  # outbox rows taken, and events sent, per round at most
REMINDER_INTERVAL = 300.0  # a "still unavailable" line this often while a receiver stays away
# Real seconds a woken sender waits for more commits before it reads the outbox: under load one
# round then takes many leads' events, so the senders' transactions stay few beside the intake's
# and the dialer's on the one SQLite writer (bench/webhook_load.py); MQTT is the channel for speed.
LINGER = 0.2


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The value of X-Leadrouter-Signature for a body signed at ``timestamp``."""
    digest = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class Clock(Protocol):
    def now(self) -> datetime: ...

    def call_later(self, seconds: float, callback: Callable[[], object]) -> asyncio.TimerHandle: ...

    async def sleep(self, seconds: float) -> None: ...


class Delivery(Protocol):
    @property
    def seq(self) -> int: ...

    @property
    def lead_id(self) -> int: ...

    @property
    def id(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def payload(self) -> str: ...

    @property
    def attempts(self) -> int: ...

    @property
    def first_failed_at(self) -> datetime | None: ...


@dataclass(frozen=True, slots=True)
class Failure:
    seq: int
    attempts: int
    error: str
    first_failed_at: datetime
    next_attempt_at: datetime
    dead: bool


class WebhookFeed(Protocol):
    async def enroll(self, subscriber: str, now: datetime) -> None: ...

    async def fan_out(self, subscriber: str, wanted: Collection[str] | None, now: datetime, limit: int) -> int: ...

    async def due(self, subscriber: str, now: datetime, max_leads: int, limit: int) -> Sequence[Delivery]: ...

    async def next_due_at(self, subscriber: str) -> datetime | None: ...

    async def record(self, subscriber: str, delivered: Sequence[int], failed: Sequence[Failure], now: datetime) -> None:
        """Forget the delivered events; store the failures (a Failure is shaped as storage wants it)."""


@dataclass(frozen=True)
class Subscriber:
    name: str
    url: str
    secret: bytes = field(repr=False)
    events: frozenset[str] | None = None  # None: every event, including types added later


@dataclass(frozen=True)
class WebhookSettings:
    subscribers: tuple[Subscriber, ...] = ()
    timeout: float = 10.0  # per request, connect and read
    retry_first: float = 5.0  # after the first failure; doubled after each one up to retry_max
    retry_max: float = 900.0
    dead_after: float = 86400.0  # an event failing this long after its first failure is dead
    parallel: int = 8  # leads sent to at once per subscriber
    poll_interval: float = 5.0  # a safety net: commits, retries and reloads wake the senders


def backoff(settings: WebhookSettings, attempts: int, rng: random.Random) -> float:
    """Seconds before attempt ``attempts + 1``: doubling, capped, and jittered into its upper half so
    that a receiver coming back is not hit by every waiting lead in the same instant."""
    delay: float = min(settings.retry_first * 2 ** (attempts - 1), settings.retry_max)
    return delay / 2 + rng.uniform(0, delay / 2)


class _SubscriberSender:
    def __init__(self, owner: WebhookDispatcher, subscriber: Subscriber) -> None:
        self._owner = owner
        self.subscriber = subscriber
        self.wake = asyncio.Event()
        self.delivered = 0
        self.failures = 0
        # One line when the receiver (or the database) goes, a reminder every 5 minutes, one when back.
        self._receiver = Outage("webhook.receiver", REMINDER_INTERVAL)
        self._database = Outage("webhook.database", REMINDER_INTERVAL)

    async def run(self) -> None:
        import httpx

        owner = self._owner
        feed, clock = owner.feed, owner.clock
        database = Backoff(1.0, 30.0)
        enrolled = False
        # Redirects are not followed: a receiver that moved is a configuration to fix, and a
        # signed body must not be handed on to wherever a Location header points.
        async with httpx.AsyncClient(follow_redirects=False) as http:
            while True:
                self.wake.clear()
                settings = owner.settings
                name = self.subscriber.name
                try:
                    if not enrolled:
                        await feed.enroll(name, clock.now())
                        enrolled = True
                    taken = await feed.fan_out(name, self.subscriber.events, clock.now(), BATCH)
                    batch = await feed.due(name, clock.now(), settings.parallel * 4, BATCH)
                    if batch:
                        await self._send(http, batch)
                    next_at = None if batch or taken else await feed.next_due_at(name)
                except owner.feed_outages as exc:
                    self._database.failed(str(exc), subscriber=name)
                    await clock.sleep(database.next())
                    continue
                if self._database.ongoing:
                    self._database.ended(subscriber=name)
                    database.reset()
                if batch or taken:
                    continue
                wait = settings.poll_interval
                if next_at is not None:
                    wait = min(wait, max((next_at - clock.now()).total_seconds(), 0.0))
                timer = clock.call_later(wait, self.wake.set)
                try:
                    await self.wake.wait()
                finally:
                    timer.cancel()
                await asyncio.sleep(LINGER)

    async def _send(self, http: httpx.AsyncClient, batch: Sequence[Delivery]) -> None:
        by_lead: dict[int, list[Delivery]] = {}
        for delivery in batch:  # in outbox order, so each lead's list is too
            by_lead.setdefault(delivery.lead_id, []).append(delivery)
        delivered: list[int] = []
        failed: list[Failure] = []
        gate = asyncio.Semaphore(self._owner.settings.parallel)
        unreachable: str | None = None  # the receiver could not be reached in this round: why

        async def lead_in_order(deliveries: list[Delivery]) -> None:
            nonlocal unreachable
            async with gate:
                for delivery in deliveries:
                    # A receiver that is down fails every lead alike: the leads still waiting in
                    # this round fail with it (each its own attempt and backoff) without a request.
                    error = unreachable
                    if error is None:
                        error, transport = await self._post(http, delivery)
                        if transport:
                            unreachable = error
                    if error is None:
                        delivered.append(delivery.seq)
                        continue
                    failed.append(self._failure(delivery, error))
                    return  # the lead's later events wait behind this one

        await asyncio.gather(*(lead_in_order(deliveries) for deliveries in by_lead.values()))
        await self._owner.feed.record(self.subscriber.name, delivered, failed, self._owner.clock.now())
        self.delivered += len(delivered)
        self.failures += len(failed)
        context = {"subscriber": self.subscriber.name, "url": self.subscriber.url}
        if failed and not delivered:
            self._receiver.failed(failed[0].error, **context)
        elif delivered:
            self._receiver.ended(**context)
            # The receiver is up but refused these: a line each (their backoff bounds how many).
            for failure in failed:
                log.warning(
                    "webhook.refused", seq=failure.seq, attempts=failure.attempts, error=failure.error, **context
                )
        for failure in failed:
            if failure.dead:
                log.error("webhook.dead", seq=failure.seq, attempts=failure.attempts, error=failure.error, **context)

    async def _post(self, http: httpx.AsyncClient, delivery: Delivery) -> tuple[str | None, bool]:
        """Why the receiver did not take the event (None: it answered 2xx), and whether it could
        not be reached at all (no connection, no answer in time)."""
        import httpx

        body = delivery.payload.encode()
        timestamp = int(self._owner.wall())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "leadrouter-webhooks",
            EVENT_HEADER: delivery.type,
            EVENT_ID_HEADER: delivery.id,
            ATTEMPT_HEADER: str(delivery.attempts + 1),
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: signature(self.subscriber.secret, timestamp, body),
        }
        try:
            response = await http.post(
                self.subscriber.url, content=body, headers=headers, timeout=self._owner.settings.timeout
            )
        except httpx.TransportError as exc:
            return (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__), True
        except httpx.HTTPError as exc:  # an answer it could not read
            return (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__), False
        if 200 <= response.status_code < 300:
            return None, False
        return f"HTTP {response.status_code}", False

    def _failure(self, delivery: Delivery, error: str) -> Failure:
        owner = self._owner
        now = owner.clock.now()
        attempts = delivery.attempts + 1
        first_failed_at = delivery.first_failed_at or now
        dead = (now - first_failed_at).total_seconds() >= owner.settings.dead_after
        delay = backoff(owner.settings, attempts, owner.rng)
        return Failure(
            seq=delivery.seq,
            attempts=attempts,
            error=error,
            first_failed_at=first_failed_at,
            next_attempt_at=now + timedelta(seconds=delay),
            dead=dead,
        )


class WebhookDispatcher:
    """One sender task per subscriber; ``apply`` (SIGHUP) starts, stops or updates them."""

    def __init__(
        self,
        feed: WebhookFeed,
        settings: WebhookSettings,
        clock: Clock,
        wall: Callable[[], float],
        *,
        feed_outages: tuple[type[Exception], ...],
        rng: random.Random | None = None,
    ) -> None:
        """``wall``: Unix seconds for signatures (receivers compare them with their own clock)."""
        self.feed = feed
        self.settings = settings
        self.clock = clock
        self.wall = wall
        self.feed_outages = feed_outages
        self.rng = rng or random.Random()
        self._senders: dict[str, tuple[_SubscriberSender, asyncio.Task[None]]] = {}
        self._died: asyncio.Future[None] | None = None

    @property
    def senders(self) -> dict[str, _SubscriberSender]:
        return {name: sender for name, (sender, _) in self._senders.items()}

    def wake(self) -> None:
        """After a commit that wrote outbox rows, or a retry."""
        for sender, _ in self._senders.values():
            sender.wake.set()

    async def run(self) -> None:
        """Run the senders until cancelled; a sender that dies of a bug takes this task down with it."""
        self._died = asyncio.get_running_loop().create_future()
        self.apply(self.settings)
        try:
            await self._died
        finally:
            for _, task in self._senders.values():
                task.cancel()
            await asyncio.gather(*(task for _, task in self._senders.values()), return_exceptions=True)
            self._senders.clear()
            # Not running any more (this daemon lost the job to another): a reload starts no sender here.
            self._died = None

    def apply(self, settings: WebhookSettings) -> None:
        """Take a new subscriber list: new names start, missing ones stop (their undelivered events
        stay in the database and go out if the name comes back), changed ones take effect at once."""
        self.settings = settings
        if self._died is None:  # not running yet: run() applies them
            return
        wanted = {subscriber.name: subscriber for subscriber in settings.subscribers}
        for name in list(self._senders):
            if name not in wanted:
                sender, task = self._senders.pop(name)
                task.cancel()
                log.info("webhook.subscriber_removed", subscriber=name)
        for name, subscriber in wanted.items():
            if name in self._senders:
                self._senders[name][0].subscriber = subscriber
                self._senders[name][0].wake.set()
                continue
            sender = _SubscriberSender(self, subscriber)
            task = asyncio.create_task(sender.run(), name=f"webhook-{name}")
            task.add_done_callback(self._sender_done)
            self._senders[name] = (sender, task)
            log.info("webhook.subscriber_started", subscriber=name, url=subscriber.url)

    def _sender_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._died is None or self._died.done():
            return
        error = task.exception()
        if error is not None:
            self._died.set_exception(error)
