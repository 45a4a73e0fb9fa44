"""The composition root: the one place that knows every room and wires them together.

Follow a lead: api.app (POST /leads) -> dialer.intake (commit + lead.created in the outbox)
-> dialer.engine (claim, Originate through ami_adapter.pbx) -> ami_adapter.translate
(AMI events -> router.pbx events) -> dialer.engine (redirect to a manager, owner, call
record) -> storage.uow (one transaction with its outbox rows) -> events.publisher (MQTT).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import structlog

from ami_adapter.client import AmiClient
from ami_adapter.client import AmiSettings as AmiClientSettings
from ami_adapter.pbx import AsteriskPbx
from ami_adapter.pbx import PbxSettings as AsteriskPbxSettings
from ami_adapter.translate import WANTED_EVENTS, EventTranslator
from api.app import ApiDeps, create_app
from api.server import ApiServer
from config.routing import RoutingSource
from config.settings import Settings
from dialer.engine import Dialer, DialerSettings
from dialer.intake import LeadIntake
from dialer.ports import Clock
from events.publisher import MqttSettings, OutboxPublisher
from recordings.naming import RecordingNamer
from router.board import ManagerBoard
from router.stats import ManagerStats, with_every_manager
from storage.engine import Database
from storage.queries import SqlQueries
from storage.uow import SqlUnitOfWork

log = structlog.get_logger("daemon")

# An Originate unanswered this long after its own ring timeout is written off (a lost OriginateResponse).
DIAL_DEADLINE_MARGIN = 30.0


class SystemClock:
    """The wall clock the daemon runs on in production (the demo and tests hand in a faster one)."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))

    def call_later(self, seconds: float, callback: Callable[[], object]) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(max(seconds, 0.0), callback)


class Daemon:
    """``async with Daemon(...)`` starts every part; leaving the block stops them in order."""

    def __init__(self, settings: Settings, routing: RoutingSource, clock: Clock) -> None:
        self.settings = settings
        self.routing = routing
        self.clock = clock
        self._stack = AsyncExitStack()
        self.http_port: int | None = None

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    async def _start(self) -> None:
        s, stack = self.settings, self._stack
        db = await stack.enter_async_context(Database(s.database.url))
        await db.migrate()
        self.queries = SqlQueries(db)

        self.publisher: OutboxPublisher | None = None
        if s.mqtt.enabled:
            self.publisher = OutboxPublisher(
                self.queries,
                MqttSettings(
                    host=s.mqtt.host,
                    port=s.mqtt.port,
                    topic_prefix=s.mqtt.topic_prefix,
                    client_id=s.mqtt.client_id,
                    username=s.mqtt.username,
                    password=s.mqtt.password.get_secret_value() if s.mqtt.password else None,
                ),
                now=self.clock.now,
            )
        wake_publisher = self.publisher.wake if self.publisher else None

        def uow() -> SqlUnitOfWork:
            return SqlUnitOfWork(db, on_events_committed=wake_publisher)

        self.board = ManagerBoard(self.routing.plan.managers)
        translator = EventTranslator(
            channel_id_prefix=s.pbx.channel_id_prefix,
            manager_device=s.pbx.manager_device_parts,
            sink=lambda event: self.dialer.pbx_event(event),
        )
        self.ami = AmiClient(
            AmiClientSettings(
                host=s.ami.host,
                port=s.ami.port,
                username=s.ami.username,
                secret=s.ami.secret.get_secret_value(),
                ping_interval=s.ami.ping_interval,
                ping_timeout=s.ami.ping_timeout,
                reconnect_delay=s.ami.reconnect_delay,
                action_timeout=s.ami.action_timeout,
            ),
            on_event=translator,
            wanted_events=WANTED_EVENTS,
            on_connected=lambda: self.dialer.pbx_connected(),
        )
        pbx = AsteriskPbx(
            self.ami,
            translator,
            AsteriskPbxSettings(
                client_channel=s.pbx.client_channel_for,
                manager_channel=s.pbx.manager_channel_parts,
                hold_context=s.pbx.hold_context,
                connect_context=s.pbx.connect_context,
                apology_context=s.pbx.apology_context,
                caller_id=s.pbx.caller_id,
                originate_timeout=s.pbx.originate_timeout,
                hold_max=s.pbx.hold_max,
            ),
        )
        self.dialer = Dialer(
            uow=uow,
            pbx=pbx,
            clock=self.clock,
            routing=lambda: self.routing.plan,
            board=self.board,
            recordings=RecordingNamer(s.recordings.file_template, s.recordings.url_template),
            settings=DialerSettings(
                channel_id_prefix=s.pbx.channel_id_prefix,
                max_channels=s.pbx.max_channels,
                dial_deadline=s.pbx.originate_timeout + DIAL_DEADLINE_MARGIN,
            ),
        )
        self.intake = LeadIntake(
            uow=uow, clock=self.clock, default_region=s.phones.default_region, on_new_lead=self.dialer.leads_added
        )

        # Stopped in reverse: the API first (no new leads), then the AMI session, then the
        # dialer (it stores what it was told); rows still in the outbox leave at the next start.
        # Everything made so far (libraries, app, config) lives as long as the process. Taking
        # it out of the collector's sight keeps full collections short: one took 65 ms here,
        # close to the ~100 ms stall after which Asterisk drops an AMI client.
        gc.freeze()
        if self.publisher is not None:
            await stack.enter_async_context(_running(self.publisher.run(), "publisher"))
        await stack.enter_async_context(_running(self.dialer.run(), "dialer"))
        await stack.enter_async_context(self.ami)
        if s.http.token is not None:
            api = ApiServer(
                create_app(
                    ApiDeps(
                        intake=self.intake,
                        queries=self.queries,
                        stats=self.manager_stats,
                        health=self.health,
                        token=s.http.token.get_secret_value(),
                        max_body_bytes=s.http.max_body_bytes,
                    )
                ),
                s.http.host,
                s.http.port,
            )
            await stack.enter_async_context(api)
            self.http_port = api.port
            log.info("http.listening", host=s.http.host, port=self.http_port)
        else:
            log.warning("http.disabled", reason="http.token is not set")

    async def manager_stats(self, start: datetime, end: datetime) -> list[ManagerStats]:
        return with_every_manager(self.routing.plan.managers, await self.queries.manager_stats(start, end))

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.ami.connected else "degraded",
            "ami_connected": self.ami.connected,
            "mqtt_connected": self.publisher.connected if self.publisher else None,
            "live_calls": self.dialer.live_calls,
            "managers": len(self.board),
            "managers_free": self.board.free_count,
        }

    def reload_routing(self) -> bool:
        """SIGHUP: take a fixed routing.yaml, or keep the running one and say why not."""
        problems = self.routing.reload()
        if problems:
            for problem in problems:
                log.error("routing.reload_refused", problem=str(problem))
            return False
        self.board.replace(self.routing.plan.managers)
        self.dialer.leads_added()  # the new plan may free capacity
        log.info("routing.reloaded", managers=len(self.routing.plan.managers))
        return True


@contextlib.asynccontextmanager
async def _running(coro: Any, name: str) -> Any:
    """Run a background loop for the lifetime of the block; a crash in it is logged loudly."""
    task = asyncio.create_task(coro, name=name)

    def crashed(t: asyncio.Task[None]) -> None:
        if not t.cancelled() and t.exception() is not None:
            log.error("task.crashed", task=name, error=repr(t.exception()))

    task.add_done_callback(crashed)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
