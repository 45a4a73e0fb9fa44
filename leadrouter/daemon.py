"""The composition root: the one place that knows every room and wires them together.

Follow a lead: api.app (POST /leads) -> dialer.intake (commit + lead.created in the outbox)
-> dialer.engine (claim, Originate through ami_adapter.pbx) -> ami_adapter.translate
(AMI events -> router.pbx_events) -> dialer.engine (redirect to a manager, owner, call
record) -> storage.uow (one transaction with its outbox rows) -> events.publisher (MQTT).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from datetime import UTC, date, datetime, tzinfo
from types import TracebackType
from typing import Any, Self

import structlog

from ami_adapter.client import AmiClient
from ami_adapter.pbx import AsteriskPbx
from ami_adapter.translate import WANTED_EVENTS, EventTranslator
from api.app import ApiDeps, create_app
from api.server import ApiServer
from config.routing import RoutingSource
from config.settings import Settings
from dialer.engine import Dialer
from dialer.intake import LeadIntake
from dialer.ports import Clock
from events.publisher import OutboxPublisher
from recordings.naming import RecordingNamer
from router.board import ManagerBoard
from router.stats import DayStats, ManagerStats, day_bounds, with_every_manager
from storage.engine import Database
from storage.queries import SqlQueries
from storage.uow import SqlUnitOfWork

log = structlog.get_logger("daemon")


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


class SupervisorStats:
    """Calls and talk time per manager as supervisors read them, idle managers with zeros.

    The API serves it, ``leadrouter stats`` and the demo print it.
    """

    def __init__(self, queries: SqlQueries, routing: RoutingSource, clock: Clock) -> None:
        self._queries = queries
        self._routing = routing
        self._clock = clock

    async def between(self, start: datetime, end: datetime) -> list[ManagerStats]:
        return with_every_manager(self._routing.plan.managers, await self._queries.manager_stats(start, end))

    async def of_day(self, day: date | None, zone: tzinfo | None) -> DayStats:
        """One calendar day in ``zone``; by default today, in the server's time zone."""
        # "Today" by the clock the calls were stamped with: the demo's runs faster than the wall's.
        now = self._clock.now().astimezone(zone)
        zone = now.tzinfo if zone is None else zone
        assert zone is not None  # astimezone() always gives an aware time
        day = now.date() if day is None else day
        start, end = day_bounds(day, zone)
        return DayStats(day, zone, start, end, await self.between(start, end))


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
        settings, stack = self.settings, self._stack
        database = await stack.enter_async_context(Database(settings.database.url))
        await database.migrate()
        self.queries = SqlQueries(database)
        self.stats = SupervisorStats(self.queries, self.routing, self.clock)
        self.publisher = (
            OutboxPublisher(self.queries, settings.mqtt.publisher_settings(), now=self.clock.now)
            if settings.mqtt.enabled
            else None
        )
        wake_publisher = self.publisher.wake if self.publisher else None

        def unit_of_work() -> SqlUnitOfWork:
            return SqlUnitOfWork(database, on_events_committed=wake_publisher)

        self.board = ManagerBoard(self.routing.plan.managers)
        translator = EventTranslator(
            channel_id_prefix=settings.pbx.channel_id_prefix,
            manager_device=settings.pbx.manager_device_parts,
            sink=lambda event: self.dialer.pbx_event(event),
        )
        self.ami = AmiClient(
            settings.ami.client_settings(),
            on_event=translator,
            wanted_events=WANTED_EVENTS,
            on_connected=lambda: self.dialer.pbx_connected(),
            on_disconnected=lambda: self.dialer.pbx_disconnected(),
        )
        self.dialer = Dialer(
            uow=unit_of_work,
            pbx=AsteriskPbx(self.ami, translator, settings.pbx.asterisk_settings()),
            clock=self.clock,
            routing=lambda: self.routing.plan,
            board=self.board,
            recordings=RecordingNamer(settings.recordings.file_template, settings.recordings.url_template),
            settings=settings.pbx.dialer_settings(),
        )
        self.intake = LeadIntake(
            uow=unit_of_work,
            clock=self.clock,
            default_region=settings.phones.default_region,
            on_new_lead=self.dialer.leads_added,
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
        if settings.http.token is None:
            log.warning("http.disabled", reason="http.token is not set")
            return
        api = ApiDeps(
            intake=self.intake,
            queries=self.queries,
            stats=self.stats.of_day,
            health=self.health,
            token=settings.http.token.get_secret_value(),
            max_body_bytes=settings.http.max_body_bytes,
        )
        server = await stack.enter_async_context(ApiServer(create_app(api), settings.http.host, settings.http.port))
        self.http_port = server.port
        log.info("http.listening", host=settings.http.host, port=self.http_port)

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
async def supervisor_stats(settings: Settings, routing: RoutingSource) -> AsyncIterator[SupervisorStats]:
    """The figures the daemon serves at /stats/managers, from a database opened for them alone."""
    async with Database(settings.database.url) as database:
        yield SupervisorStats(SqlQueries(database), routing, SystemClock())


async def upgrade_database(settings: Settings) -> None:
    """What the daemon does at every start, for ops who migrate before starting it."""
    async with Database(settings.database.url) as database:
        await database.migrate()


@contextlib.asynccontextmanager
async def _running(coro: Any, name: str) -> Any:
    """Run a background loop for the lifetime of the block; a crash in it is logged loudly."""
    task = asyncio.create_task(coro, name=name)

    def crashed(finished: asyncio.Task[None]) -> None:
        if not finished.cancelled() and finished.exception() is not None:
            log.error("task.crashed", task=name, error=repr(finished.exception()))

    task.add_done_callback(crashed)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
