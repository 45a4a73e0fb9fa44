"""The composition root: the one place that knows every room and wires them together.

Follow a lead: api.app (POST /leads) -> dialer.intake (commit + lead.created in the outbox)
-> dialer.engine (claim, Originate through ami_adapter.pbx) -> ami_adapter.translate
(AMI events -> router.pbx_events) -> dialer.engine (redirect to a manager, owner, call
record) -> storage.uow (one transaction with its outbox rows) -> events.publisher (MQTT).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import UTC, date, datetime, tzinfo
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog

from ami_adapter.client import AmiClient, AmiSettings
from ami_adapter.translate import WANTED_EVENTS, EventTranslator
from api.app import ApiDeps, create_app
from api.auth import Sessions
from api.server import ApiServer
from config.managers import ManagerExists, NoSuchManager, checked_write, edited, field_of
from config.routing import RoutingSource
from config.settings import PbxSection, Settings
from dialer.engine import Dialer, DialerStopped
from dialer.intake import LeadIntake
from dialer.outcomes import LeadOutcomes
from dialer.ports import Clock
from dialer.requests import LeadRequests, Refused
from events.contract import served_documents
from events.outbox_retention import run_hourly
from events.webhooks import WebhookDispatcher, WebhookSettings
from leadrouter.health import Check, Severity, assess
from leadrouter.live import LiveBoard
from leadrouter.metrics import DialTimings, Metrics, PbxReadings, Readings, TimedAsteriskPbx, TimedIntake
from leadrouter.systemd import Notifier, Watchdog
from leadrouter.tasks import BackgroundTasks
from recordings.access import RecordingLinks, signing_key
from recordings.naming import RecordingNamer
from recordings.retention import run_daily
from router.board import ManagerBoard
from router.breaker import BreakerState
from router.events import ManagerChanged
from router.matching import region_geocoder
from router.model import OutcomeReport
from router.routing import RoutingPlan, manager_json
from router.stats import (
    ManagerFigures,
    ManagerStats,
    Period,
    StatsReport,
    build_report,
    hours_of_day,
    manager_figures,
    state_rows,
    with_every_manager,
)
from storage.cluster import Cluster, SharedChange, SharedChanges, new_daemon_id
from storage.engine import Database, StorageUnavailable
from storage.queries import SqlQueries
from storage.recordings import SqlRecordings
from storage.stats import SqlStats
from storage.uow import SqlUnitOfWork
from storage.webhooks import SqlWebhooks

if TYPE_CHECKING:  # MQTT's parts (and aiomqtt) are imported only when mqtt.enabled
    from events.publisher import OutboxPublisher
    from events.subscriber import CommandSubscriber

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
    """Supervisors' figures in the company's time zone, idle managers with zeros.

    The API and the dashboard serve them, ``leadrouter stats`` and the demo print them.
    """

    def __init__(self, db: Database, routing: RoutingSource, clock: Clock) -> None:
        self._queries = SqlQueries(db)
        self.sql = SqlStats(db)
        self._routing = routing
        self._clock = clock

    def company_zone(self) -> tzinfo:
        """routing.yaml's ``timezone:`` (version 2 files), else the server's own zone."""
        # Version 2 plans always carry a ZoneInfo; version 1 ones keep the plan's UTC default.
        zone = self._routing.plan.timezone
        return zone if isinstance(zone, ZoneInfo) else server_zone()

    def period(
        self,
        *,
        first: date | None = None,
        last: date | None = None,
        named: str | None = None,
        zone: tzinfo | None = None,
    ) -> Period:
        """``first``..``last`` (either alone: that one day), or a named one; by default today."""
        zone = zone or self.company_zone()
        # "Today" by the clock the calls were stamped with: the demo's runs faster than the wall's.
        today = self._clock.now().astimezone(zone).date()
        if first is not None or last is not None:
            return Period.of_days(first or last or today, last or first or today, zone)
        return Period.named(named or "today", today, zone)

    async def between(self, start: datetime, end: datetime) -> list[ManagerStats]:
        return with_every_manager(self._routing.plan.managers, await self._queries.manager_stats(start, end))

    async def managers(self, period: Period, manager_id: str | None = None) -> list[ManagerFigures]:
        managers = self._routing.plan.managers
        if manager_id is not None:
            managers = tuple(m for m in managers if m.id == manager_id)
        return manager_figures(managers, *await self.sql.manager_rows(period, manager_id))

    async def states(self, period: Period, manager_id: str | None = None) -> list[dict[str, object]]:
        """Per manager, seconds in each state within the period (up to now for today's)."""
        managers = self._routing.plan.managers
        if manager_id is not None:
            managers = tuple(m for m in managers if m.id == manager_id)
        spans = await self.sql.state_seconds(period, self._clock.now(), [m.id for m in managers])
        return state_rows(managers, spans)

    async def lead_events(self, lead_id: int) -> list[dict[str, Any]]:
        return await self.sql.lead_events(lead_id)

    async def recording_in_progress(self, name: str) -> bool:
        return await self.sql.recording_in_progress(name)

    async def today(self) -> tuple[Period, list[ManagerFigures]]:
        period = self.period()
        return period, await self.managers(period)

    async def report(self, period: Period, manager_id: str | None = None) -> StatsReport:
        journeys = await self.sql.journeys(period)
        hours = hours_of_day(await self.sql.quarters(period), period.zone)
        return build_report(period, await self.managers(period, manager_id), journeys, hours)


def server_zone() -> tzinfo:
    """The server's zone with its DST rules when it can be named (TZ, /etc/localtime), else its offset now."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    with contextlib.suppress(OSError):
        candidates.append(os.path.realpath("/etc/localtime").partition("zoneinfo/")[2])
    for name in candidates:
        if name:
            with contextlib.suppress(ZoneInfoNotFoundError, ValueError):
                return ZoneInfo(name)
    zone = datetime.now().astimezone().tzinfo
    assert zone is not None  # astimezone() always gives an aware time
    return zone


class WebhookAdmin:
    """What admins see of webhook delivery and what they can do (the API, ``leadrouter webhooks``):
    the database's state joined with the subscribers configured now."""

    def __init__(
        self, state: SqlWebhooks, configured: Callable[[], WebhookSettings], clock: Clock, wake: Callable[[], None]
    ) -> None:
        self._state = state
        self._configured = configured
        self._clock = clock
        self._wake = wake

    async def overview(self) -> list[dict[str, Any]]:
        stored = {entry["name"]: entry for entry in await self._state.overview()}
        listed = []
        for subscriber in self._configured().subscribers:
            entry = stored.pop(subscriber.name, {"cursor": None, "pending": 0, "dead": 0, "failing_since": None})
            events = sorted(subscriber.events) if subscriber.events is not None else None
            listed.append(
                {**entry, "name": subscriber.name, "url": subscriber.url, "events": events, "configured": True}
            )
        # Removed from leadrouter.yaml: kept in the database, sent again if the name comes back.
        listed.extend({**entry, "url": None, "events": None, "configured": False} for entry in stored.values())
        return listed

    async def dead(self, subscriber: str | None, limit: int) -> list[dict[str, Any]]:
        return await self._state.dead(subscriber, limit)

    async def retry(self, subscriber: str | None, event_ids: list[str]) -> int:
        count = await self._state.retry(subscriber, event_ids, self._clock.now())
        self._wake()
        return count


TAKEOVER_POLL = 1.0  # seconds between a standby's tries for a singleton job: taken over within about this


class PbxLink:
    """One PBX the daemon speaks to: its AMI session, the board of the managers whose phones are on
    it, and the dialer that dials its leads (made in this order: each needs the one before)."""

    ami: AmiClient
    translator: EventTranslator
    dialer: Dialer

    def __init__(self, name: str, board: ManagerBoard) -> None:
        self.name = name
        self.board = board

    def readings(self) -> PbxReadings:
        dialer = self.dialer
        return PbxReadings(
            live_calls=lambda: dialer.live_calls,
            managers=self.board.snapshot,
            ami_connected=lambda: self.ami.connected,
            breaker_state=lambda: dialer.breaker_state,
            pbx_failures=lambda: dialer.pbx_failures,
        )


def _link_of(links: list[PbxLink], manager_id: str) -> PbxLink | None:
    """The PBX whose board has the manager (routing.yaml's pbx: for him)."""
    return next((link for link in links if link.board.state(manager_id) is not None), None)


def _across(name: str, checks: dict[str, Check]) -> Check:
    """One PBX's check as it is; several PBXes' as one check: the worst severity, the state they
    share (else ``partial``), and each PBX's under ``pbxes``."""
    if len(checks) == 1:
        return next(iter(checks.values()))
    states = {check.state for check in checks.values()}
    return Check(
        name,
        states.pop() if len(states) == 1 else "partial",
        max(check.severity for check in checks.values()),
        {"pbxes": {pbx: {"state": check.state, **check.detail} for pbx, check in checks.items()}},
    )


class Daemon:
    """``async with Daemon(...)`` starts every part; leaving the block stops them in order.

    ``drain`` first (what SIGTERM does) lets live calls end and the outbox empty before that.
    """

    def __init__(
        self,
        settings: Settings,
        routing: RoutingSource,
        clock: Clock,
        notifier: Notifier | None = None,
        rng: random.Random | None = None,  # the strategies' draws; the demo seeds it to repeat a run
    ) -> None:
        self.settings = settings
        self._rng = rng
        self.routing = routing
        self.clock = clock
        self.notifier = notifier or Notifier({})  # by default systemd is not told anything
        self.tasks = BackgroundTasks()
        self.stopping = False  # set by drain: no new leads, no new dials
        self._hurry = asyncio.Event()
        self._routing_lock = asyncio.Lock()  # a SIGHUP reload and a change from the API, one at a time
        # A pause or resume is stored and applied here with no other daemon's change applied between.
        self._changes_lock = asyncio.Lock()
        self._sessions: Sessions | None = None  # the API's, once it serves
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
        database = self.database = await stack.enter_async_context(Database(settings.database.url))
        await database.migrate()
        links = settings.links()
        if self.routing.pbxes != settings.pbx_names:
            raise ValueError(f"routing.yaml was checked against PBXes {self.routing.pbxes}, not {settings.pbx_names}")
        # A fresh id per run and PBX: a call steered by any other id is a past run's or another daemon's.
        ids = {name: new_daemon_id(f"{ami.host}:{ami.port}") for name, ami, _ in links}
        daemon_id, *siblings = ids.values()
        self.cluster = await stack.enter_async_context(Cluster(database, daemon_id, self.clock.now, siblings=siblings))
        # Pauses, logouts and routing edits made through any daemon, applied by each from here on.
        self.shared = SharedChanges(database, daemon_id, self.clock.now)
        self._applied = await self.shared.last_seq()
        self.queries = SqlQueries(database)
        self.stats = SupervisorStats(database, self.routing, self.clock)
        self.publisher: OutboxPublisher | None = None
        if settings.mqtt.enabled:
            from events.publisher import OutboxPublisher

            self.publisher = OutboxPublisher(
                self.queries,
                settings.mqtt.publisher_settings(),
                now=self.clock.now,
                feed_outages=(StorageUnavailable,),
            )
        self.webhook_state = SqlWebhooks(database)
        # Always running, with no subscriber too: a SIGHUP may add the first one.
        self.webhooks = WebhookDispatcher(
            self.webhook_state,
            settings.webhooks.webhook_settings(),
            self.clock,
            wall=time.time,
            feed_outages=(StorageUnavailable,),
        )
        publisher, webhooks = self.publisher, self.webhooks

        def events_committed() -> None:
            if publisher is not None:
                publisher.wake()
            webhooks.wake()

        def unit_of_work(steering: str = daemon_id) -> SqlUnitOfWork:
            return SqlUnitOfWork(database, on_events_committed=events_committed, daemon_id=steering)

        self._unit_of_work = unit_of_work

        # One AMI link, board and dialer per PBX; each sees only the managers whose phones are on it.
        self.pbxes: dict[str, PbxLink] = {}
        self._pbx_readings: dict[str, PbxReadings] = {}
        self._plans = self._plans_per_pbx(self.routing.plan)
        if self.routing.plan.reads_regions:
            region_geocoder()  # now, not on the loop at the first lead a `regions:` rule looks at
        self.metrics = Metrics(self._readings())
        timings = DialTimings(self.metrics, self.clock)
        others = frozenset(ids) if len(ids) > 1 else frozenset()
        now = self.clock.now()
        for name, ami, channels in links:
            board = ManagerBoard(self._plans[name], self._rng)
            board.restore(await self.queries.board_history(self._plans[name], now), now)
            link = self._link(name, ami.client_settings(), channels, board, timings)
            link.dialer = Dialer(
                uow=functools.partial(unit_of_work, ids[name]),
                pbx=TimedAsteriskPbx(link.ami, link.translator, channels.asterisk_settings(), timings),
                clock=self.clock,
                routing=functools.partial(self._plans.__getitem__, name),
                board=board,
                recordings=RecordingNamer(settings.recordings.file_template, settings.recordings.url_template),
                settings=replace(
                    channels.dialer_settings(),
                    default_region=settings.phones.default_region,
                    pbx=name,
                    other_pbxes=others - {name},
                ),
                peers=self.cluster.on_pbx(ids[name]),
                everyone=lambda: self.routing.plan,
            )
            self.pbxes[name] = link
            self._pbx_readings[name] = link.readings()
        # The first PBX's, as before there were several (tests and the service wait on its login).
        first = next(iter(self.pbxes.values()))
        self.ami, self.board, self.dialer = first.ami, first.board, first.dialer
        self.intake = LeadIntake(
            uow=unit_of_work,
            clock=self.clock,
            routing=lambda: self.routing.plan,
            default_region=settings.phones.default_region,
            policy=settings.phones.policy(),
            per_number=settings.phones.per_number(),
            on_new_lead=self._leads_added,
            # A new lead is claimed in the transaction that stores it; with several PBXes each
            # dialer's own pass claims it (the calls it adds are steered under that PBX's id).
            claim=None if others else self.dialer.claim_new,
        )
        self.live = LiveBoard(
            self._snapshot,
            lambda: self.routing.plan,
            self.clock,
            live_calls=self.stats.sql.live_calls,
            lead_counts=self.queries.lead_status_counts,
            today=self.stats.today,
        )
        self.outcomes = LeadOutcomes(uow=unit_of_work, clock=self.clock, on_reported=self._outcome_reported)
        # Leads and outcomes from HTTP, MQTT commands and CSV imports: one validation, one set of answers.
        self.timed_intake = TimedIntake(self.intake, timings)
        self.requests = LeadRequests(
            self.timed_intake,
            self.outcomes,
            is_open=lambda: not self.stopping,
            unavailable=(StorageUnavailable,),
        )
        self.commands: CommandSubscriber | None = None
        if settings.mqtt.enabled and settings.mqtt.commands:
            from events.subscriber import CommandSubscriber

            self.commands = CommandSubscriber(self.requests, settings.mqtt.command_settings())

        # Stopped in reverse: the API first (no new leads), then the AMI session, then the
        # dialer (it stores what it was told), then the publisher. Without a drain first (a
        # crash, tests), rows still in the outbox leave at the next start.
        # Everything made so far (libraries, app, config) lives as long as the process. Taking
        # it out of the collector's sight keeps full collections short: one took 65 ms here,
        # close to the ~100 ms stall after which Asterisk drops an AMI client.
        gc.freeze()
        gc.enable()  # `leadrouter run` starts with it off (cli._run)
        await self._run("database-recovery", database.recover(settings.database.probe_interval))
        if self.publisher is not None:
            # One publisher per database keeps each lead's events in order: the others stand by.
            await self._run("publisher", self.cluster.elected("publisher", self.publisher.run, TAKEOVER_POLL))
        # The same for each webhook subscriber's order: one sender per database.
        await self._run("webhooks", self.cluster.elected("webhooks", self.webhooks.run, TAKEOVER_POLL))
        for name, link in self.pbxes.items():
            await self._run("dialer" if name == first.name else f"dialer:{name}", link.dialer.run())
        # One daemon per database releases overdue leads (the first PBX's dialer, over the whole
        # plan): two would give a lead two new owners.
        await self._run("sla", self.cluster.elected("sla", self.dialer.release_overdue_leads, TAKEOVER_POLL))
        if self.commands is not None:  # after the dialer, so stopped before it
            # One subscriber per database: every daemon's own session would act on each command.
            await self._run("mqtt-commands", self.cluster.elected("commands", self.commands.run, TAKEOVER_POLL))
        if settings.database.outbox_retention_days is not None:
            outbox_days = settings.database.outbox_retention_days

            def outbox_retention() -> Coroutine[Any, Any, None]:
                return run_hourly(
                    self.queries,
                    outbox_days,
                    self.clock.now,
                    self.clock.sleep,
                    published_only=settings.mqtt.enabled,
                    subscribers=lambda: [subscriber.name for subscriber in self.webhooks.settings.subscribers],
                    unavailable=(StorageUnavailable,),
                )

            await self._run(
                "outbox-retention", self.cluster.elected("outbox-retention", outbox_retention, TAKEOVER_POLL)
            )
        if self.cluster.postgres:  # several daemons possible: what the others decide is applied here too
            await self._run("cluster-changes", self._follow_changes())
        await self._run("loop-lag", self.metrics.watch_loop_lag())
        if self.notifier.watchdog_interval is not None:
            watchdog = Watchdog(self.notifier, self.notifier.watchdog_interval, healthy=lambda: self.tasks.all_alive)
            await self._run("watchdog", watchdog.run())
        folder, days = settings.recordings.directory, settings.recordings.retention_days
        if folder is not None and days is not None:
            store = SqlRecordings(database)

            def retention() -> Coroutine[Any, Any, None]:
                return run_daily(store, folder, days, self.clock.now, self.clock.sleep, (StorageUnavailable,))

            # One sweeper per database (a shared recordings folder is swept once, not raced over).
            await self._run(
                "recordings-retention", self.cluster.elected("recordings-retention", retention, TAKEOVER_POLL)
            )
        for link in self.pbxes.values():
            await stack.enter_async_context(link.ami)
        tokens = settings.http.tokens_by_scope()
        if not tokens:
            log.warning("http.disabled", reason="no http.token, http.tokens or http.token_files")
            return
        # Links to recordings are signed with recordings.signing_key, else with a key derived from
        # every token: a rotation voids them (they live minutes). Either way the key is derived, so a
        # leaked signature says nothing of the secret behind it.
        configured = settings.recordings.signing_key
        link_key = (
            configured.get_secret_value()
            if configured is not None
            else "\n".join(sorted(token for scoped in tokens.values() for token in scoped))
        )
        api = ApiDeps(
            requests=self.requests,
            queries=self.queries,
            managers=self,
            stats=self.stats,
            live=self.live.stream,
            recordings=settings.recordings.directory,
            recording_redirect=settings.recordings.redirect_template,
            recording_links=RecordingLinks(signing_key(link_key), settings.recordings.link_ttl),
            now=time.time,
            health=self.health,
            metrics=self.metrics.exposition,
            intake_open=lambda: not self.stopping,
            manager_states=ManagerStates(list(self.pbxes.values()), self.shared, self._changes_lock),
            unavailable=(StorageUnavailable,),
            tokens=tokens,
            max_body_bytes=settings.http.max_body_bytes,
            importer=self.timed_intake,
            max_import_bytes=settings.http.max_import_bytes,
            session_ttl=settings.http.session_ttl,
            auth_limits=settings.http.auth_limits(),
            leads_per_address=settings.http.leads_per_address(),
            webhooks=WebhookAdmin(
                self.webhook_state, lambda: self.webhooks.settings, self.clock, wake=self.webhooks.wake
            ),
            schemas=served_documents(settings.mqtt.topic_prefix),
            logouts=self._logged_out,
        )
        app = create_app(api)
        sessions: Sessions = app.state.sessions
        # Logged out before this start (through this daemon or another): refused still.
        for nonce, until in await self.shared.logged_out(datetime.now(UTC)):
            sessions.revoke(nonce, int(until.timestamp()))
        self._sessions = sessions
        server = await stack.enter_async_context(
            ApiServer(app, settings.http.host, settings.http.port, settings.http.connection_limits())
        )
        self.tasks.watch("http", server.task)
        stack.callback(self.tasks.stopping, "http")  # runs before the server stops: that end is no death
        stack.callback(self.live.close)  # the server waits for open responses; dashboards' streams end now
        self.http_port = server.port
        log.info("http.listening", host=settings.http.host, port=self.http_port)

    async def _run(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        await self._stack.enter_async_context(self.tasks.running(name, coro))

    def _link(
        self, name: str, ami: AmiSettings, channels: PbxSection, board: ManagerBoard, timings: DialTimings
    ) -> PbxLink:
        """PBX ``name``'s AMI session and translator, feeding its dialer (set on the link next)."""
        link = PbxLink(name, board)
        link.translator = EventTranslator(
            channels.translator_settings(), sink=lambda event: link.dialer.pbx_event(event)
        )
        link.ami = AmiClient(
            ami,
            on_event=link.translator,
            wanted_events=WANTED_EVENTS,
            on_connected=lambda: link.dialer.pbx_connected(),
            on_disconnected=lambda: link.dialer.pbx_disconnected(),
        )
        return link

    def _plans_per_pbx(self, plan: RoutingPlan) -> dict[str, RoutingPlan]:
        if len(self.settings.pbx_names) < 2:
            return {name: plan for name, _, _ in self.settings.links()}  # one PBX: every manager is on it
        return {name: plan.on_pbx(name) for name in self.settings.pbx_names}

    def _leads_added(self) -> None:
        for link in self.pbxes.values():
            link.dialer.leads_added()

    def _snapshot(self) -> list[dict[str, object]]:
        return [slot for link in self.pbxes.values() for slot in link.board.snapshot()]

    @property
    def live_calls(self) -> int:
        return sum(link.dialer.live_calls for link in self.pbxes.values())

    def _readings(self) -> Readings:
        publisher = self.publisher
        return Readings(
            lead_counts=self.queries.lead_status_counts,
            outbox_backlog=self.queries.outbox_backlog,
            now=self.clock.now,
            pbxes=self._pbx_readings,  # filled as the links are made
            database_writable=lambda: self.database.writable,
            tasks=self.tasks.states,
            mqtt_connected=(lambda: publisher.connected) if publisher else None,
            published=(lambda: publisher.published) if publisher else None,
            webhook_backlog=self.webhook_state.overview,
            webhook_sent=lambda: {
                name: (sender.delivered, sender.failures) for name, sender in self.webhooks.senders.items()
            },
        )

    async def _logged_out(self, nonce: str, expires: int) -> None:
        await self.shared.record("logout", nonce, until=datetime.fromtimestamp(expires, UTC))

    async def _follow_changes(self) -> None:
        """Apply what the daemons on this database decided, within a second or so of it."""
        while True:
            await asyncio.sleep(TAKEOVER_POLL)  # real seconds, as the takeovers': other daemons act in real time
            try:
                async with self._changes_lock:
                    changes = await self.shared.since(self._applied)
                    if changes:
                        await self._apply_changes(changes)
                        self._applied = changes[-1].seq
            except Exception as exc:  # the database cannot be read now: the next look catches up
                log.warning("cluster.changes_unreadable", error=repr(exc))

    async def _apply_changes(self, changes: list[SharedChange]) -> None:
        mine = self.cluster.daemon_id
        if any(change.kind == "routing" and change.daemon_id != mine for change in changes):
            # Another daemon edited routing.yaml: this one sees the edit if it reads the same file.
            await self.reload_routing()
        decided: dict[str, SharedChange] = {}  # of each manager's pauses and resumes, the last
        for change in changes:
            if change.kind in ("pause", "resume"):
                decided[change.subject] = change
            elif change.kind == "logout" and change.until is not None and self._sessions is not None:
                self._sessions.revoke(change.subject, int(change.until.timestamp()))
        for manager_id, change in decided.items():
            if change.daemon_id == mine:
                continue  # applied when it was made, and nothing decided elsewhere came after it
            link = _link_of(list(self.pbxes.values()), manager_id)
            if link is None:  # not in this daemon's routing.yaml (another office's, or not reloaded yet)
                continue
            if change.kind == "pause":
                link.dialer.pause_manager(manager_id, change.reason or "")
            else:
                link.dialer.resume_manager(manager_id)
            log.info("cluster.manager_" + change.kind, manager_id=manager_id, by=change.daemon_id)

    async def drain(self) -> None:
        """What SIGTERM does before the daemon stops: nothing new starts, what runs may finish.

        New leads are refused (503, Retry-After) and nothing new is dialled; live calls get
        ``shutdown.grace_period`` to end on their own, then the outbox ``shutdown.outbox_flush``
        to reach the broker. A second SIGTERM (``hurry``) cuts both waits short.
        """
        shutdown = self.settings.shutdown
        self.stopping = True
        for link in self.pbxes.values():
            link.dialer.stop_dialing()
        log.info("daemon.stopping", live_calls=self.live_calls, grace_period=shutdown.grace_period)
        if not await self._within(shutdown.grace_period, self._calls_ended()):
            log.warning(
                "daemon.calls_left_up",
                live_calls=self.live_calls,
                hint="they stay up in Asterisk; the next start takes them over",
            )
        # The calls' last changes are committed with their events before the outbox is flushed.
        flushed = await self._within(shutdown.outbox_flush, self._flush_outbox())
        if not flushed:
            log.warning("daemon.outbox_left", hint="the events are published after the next start")
        log.info("daemon.drained", live_calls=self.live_calls, outbox_flushed=flushed)

    def hurry(self) -> None:
        """A second SIGTERM while draining: stop waiting."""
        self._hurry.set()

    async def _calls_ended(self) -> None:
        # The dialer has no event for "the last call ended"; a tenth of a second is nothing at shutdown.
        while self.live_calls:  # noqa: ASYNC110
            await asyncio.sleep(0.1)

    async def _flush_outbox(self) -> None:
        # A dialer that died stored what it could on its way out (Dialer.run); the outbox still goes.
        for link in self.pbxes.values():
            with contextlib.suppress(DialerStopped):
                await link.dialer.idle()
        if self.publisher is not None and "publisher" in self.cluster.jobs:
            await self.publisher.flush()  # (a standby's events are the elected publisher's to send)

    async def _within(self, seconds: float, coro: Coroutine[Any, Any, None]) -> bool:
        """Whether ``coro`` finished within ``seconds`` and before a hurry; it is cancelled if not."""
        work = asyncio.ensure_future(coro)
        hurry = asyncio.ensure_future(self._hurry.wait())
        done, _ = await asyncio.wait({work, hurry}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        work.cancel()
        hurry.cancel()
        return work in done

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Whether the daemon serves (HTTP 200) and what /health shows; see leadrouter.health."""
        per_pbx = {name: (self._ami_check(link), self._dialer_check(link)) for name, link in self.pbxes.items()}
        checks = [
            _across("ami", {name: ami for name, (ami, _) in per_pbx.items()}),
            self._database_check(),
            *self._mqtt_checks(),
            _across("dialer", {name: dialer for name, (_, dialer) in per_pbx.items()}),
        ]
        tasks = self.tasks
        if tasks.all_alive:
            checks.append(Check("tasks", "running", detail={"tasks": tasks.states()}))
        else:
            checks.append(Check("tasks", "died", Severity.UNHEALTHY, {"tasks": tasks.states(), "died": tasks.died}))
        serving, body = assess(checks, stopping=self.stopping)
        links = self.pbxes.values()
        body.update(
            live_calls=self.live_calls,
            managers=sum(len(link.board) for link in links),
            managers_free=sum(link.board.free_count for link in links),
            # Each PBX's own: one down stops only the dialling that needs it.
            pbxes={
                name: {
                    "ami": ami.state,
                    "dialer": dialer.state,
                    "breaker": link.dialer.breaker_state,
                    "live_calls": link.dialer.live_calls,
                    "managers": len(link.board),
                    "managers_free": link.board.free_count,
                }
                for (name, link), (ami, dialer) in zip(self.pbxes.items(), per_pbx.values(), strict=True)
            },
        )
        return serving, body

    def _ami_check(self, link: PbxLink) -> Check:
        return Check("ami", "up") if link.ami.connected else Check("ami", "down", Severity.DEGRADED)

    def _database_check(self) -> Check:
        database = self.database
        if database.failing_since is None:
            return Check("database", "up")
        detail = {"error": database.last_error, "since": database.failing_since.isoformat()}
        return Check("database", "failing", Severity.UNHEALTHY, detail)

    def _dialer_check(self, link: PbxLink) -> Check:
        dialer = link.dialer
        detail: dict[str, object] = {
            "live_calls": dialer.live_calls,
            "breaker": dialer.breaker_state,
            "pbx_failures": dialer.pbx_failures,
            # Over routing.yaml's pacing window: what predictive pacing dials by, and answers to.
            "answer_rate": dialer.pacing.answer_rate,
            "abandon_rate": dialer.pacing.abandon_rate,
        }
        if {"dialer", f"dialer:{link.name}"} & set(self.tasks.died):
            return Check("dialer", "died", Severity.UNHEALTHY, detail)
        if self.stopping:
            return Check("dialer", "stopped_dialing", detail=detail)
        if dialer.breaker_state != BreakerState.CLOSED:
            # Leads are taken and wait; the PBX is not dialled until the breaker closes.
            detail["reason"] = dialer.breaker_reason
            return Check("dialer", "pbx_paused", Severity.DEGRADED, detail)
        return Check("dialer", "running", detail=detail)

    def _mqtt_checks(self) -> list[Check]:
        publisher = self.publisher
        if publisher is None:
            return [Check("mqtt", "disabled"), Check("publisher", "disabled")]
        if "publisher" in self.tasks.died:
            publishing = Check("publisher", "died", Severity.UNHEALTHY)
        elif "publisher" not in self.cluster.jobs:
            return [Check("mqtt", "standby"), Check("publisher", "standby")]  # another daemon publishes
        else:
            from events.publisher import PublisherState  # imported with the publisher

            # In these states it has no broker to publish to, or no outbox to read, right now.
            waiting = publisher.state in {
                PublisherState.BROKER_UNAVAILABLE,
                PublisherState.DATABASE_FAILING,
                PublisherState.STARTING,
            }
            publishing = Check(
                "publisher",
                publisher.state.value,
                Severity.DEGRADED if waiting else Severity.OK,
                {"published": publisher.published},
            )
        broker = Check("mqtt", "up") if publisher.connected else Check("mqtt", "down", Severity.DEGRADED)
        return [broker, publishing]

    def _outcome_reported(self, report: OutcomeReport) -> None:
        for link in self.pbxes.values():
            link.board.outcome(report)  # (a board without the owner lets it pass)
        self._leads_added()  # a decided lead may bring its owner back under his max_open_leads

    def reload_webhooks(self, webhooks: WebhookSettings) -> None:
        """SIGHUP: the subscriber list from leadrouter.yaml read again."""
        self.webhooks.apply(webhooks)
        log.info("webhooks.reloaded", subscribers=[subscriber.name for subscriber in webhooks.subscribers])

    async def reload_routing(self) -> bool:
        """SIGHUP: take a fixed routing.yaml, or keep the running one and say why not."""
        async with self._routing_lock:
            return await self._reload_routing()

    def managers(self) -> list[dict[str, Any]]:
        """The managers in force, as GET /managers shows them."""
        return [manager_json(manager) for manager in self.routing.plan.managers]

    async def change_manager(
        self, manager_id: str, changes: dict[str, Any] | None, *, create: bool = False
    ) -> dict[str, Any] | Refused:
        """Add (``create``), change or remove (``changes`` None) a manager: routing.yaml edited, checked
        as a reload checks it, written, reloaded as on SIGHUP, and published as ``manager.changed``."""
        settings = self.settings
        path = self.routing.path
        async with self._routing_lock:
            try:
                text = await asyncio.to_thread(path.read_text, encoding="utf-8")
                candidate, change = edited(text, manager_id, changes, create=create)
            except NoSuchManager:
                return Refused("not_found", [("manager_id", f"no manager {manager_id!r} in {path}")])
            except ManagerExists:
                return Refused("manager_exists", [("id", f"{manager_id!r} is in {path} already")])
            except OSError as exc:
                return Refused("routing_file_unavailable", [("routing_file", f"cannot read {path}: {exc.strerror}")])
            except ValueError as exc:
                return Refused("invalid_manager", [("routing_file", f"{path} cannot be edited: {exc}")])
            try:
                checked = await checked_write(
                    self.routing,
                    candidate,
                    max_bytes=settings.routing_max_bytes,
                    time_cap=settings.routing_reload_timeout,
                )
            except OSError as exc:
                reason = f"cannot write beside {path}: {exc.strerror} (see README, Managers from outside)"
                return Refused("routing_file_unavailable", [("routing_file", reason)])
            if isinstance(checked, list):
                return Refused("invalid_manager", [(field_of(problem), problem.message) for problem in checked])
            # What a SIGHUP reload does once the file passed its check (this one was checked as it).
            await self._apply_routing(checked)
            found = [m for m in self.routing.plan.managers if m.id == manager_id]
            manager = manager_json(found[0]) if found else None
            now = self.clock.now()
            async with self._unit_of_work() as uow:
                uow.outbox.add([ManagerChanged(manager_id=manager_id, change=change.value, manager=manager)], now)
                await uow.commit()
            await self.shared.record("routing", manager_id)  # the other daemons reload their routing.yaml
        log.info("managers.changed", manager_id=manager_id, change=change.value)
        return {"change": change.value, "manager": manager}

    async def _reload_routing(self) -> bool:
        settings = self.settings
        checked = await self.routing.check_off_loop(
            max_bytes=settings.routing_max_bytes, time_cap=settings.routing_reload_timeout
        )
        if isinstance(checked, list):
            for problem in checked:
                log.error("routing.reload_refused", problem=str(problem))
            return False
        if checked.reads_regions:
            await asyncio.to_thread(region_geocoder)  # loaded once; a thread leaves the loop its turns
        await self._apply_routing(checked)
        # The new plan and board live until the next reload, as what start made does (see gc.freeze
        # there): out of the collector's sight, or the next full collection walks all of them in
        # one go (100-370 ms at 10,000 managers). What they replace holds no cycles and is freed
        # now. The young garbage is collected first (a millisecond): cyclic garbage frozen with them
        # would never be freed, which is also why only SIGHUP, ops' rare act, freezes, and not
        # each change through the managers API.
        gc.collect(1)
        gc.freeze()
        return True

    async def _apply_routing(self, plan: RoutingPlan) -> None:
        """Put a checked plan in force: each PBX's board takes its part, and it may free capacity."""
        # A step at a time (~60 ms in all at 10,000 managers): the AMI reader and the API run
        # between, under the old plan; each PBX's board and the plan its dialer reads change in one turn.
        plans = self._plans_per_pbx(plan)
        for name, link in self.pbxes.items():
            for _ in link.board.rebuild(plans[name]):
                await asyncio.sleep(0)
            self._plans[name] = plans[name]
        self.routing.adopt(plan)
        self._leads_added()
        log.info("routing.reloaded", managers=len(self.routing.plan.managers))


@contextlib.asynccontextmanager
async def webhook_admin(settings: Settings) -> AsyncIterator[WebhookAdmin]:
    """``leadrouter webhooks``: the delivery state, from a database opened for it alone. A retry
    is picked up by the running daemon within its poll interval."""
    configured = settings.webhooks.webhook_settings()
    async with Database(settings.database.url) as database:
        yield WebhookAdmin(SqlWebhooks(database), lambda: configured, SystemClock(), wake=lambda: None)


class ManagerStates:
    """The API's view of managers' states: read from the boards, changed through the dialer of the
    manager's PBX (which stores and publishes every change); a pause or resume is stored first for
    every daemon on the database to apply (Daemon._follow_changes)."""

    def __init__(self, links: list[PbxLink], shared: SharedChanges, lock: asyncio.Lock) -> None:
        self._links = links
        self._shared = shared
        self._lock = lock

    def states(self) -> list[dict[str, Any]]:
        return [
            {"id": slot["id"], "extension": slot["extension"], "state": slot["state"], "reason": slot["reason"]}
            for link in self._links
            for slot in link.board.snapshot()
        ]

    def _one(self, link: PbxLink, manager_id: str) -> dict[str, Any]:
        state = link.board.state(manager_id)
        assert state is not None
        return {"id": manager_id, "state": state[0].value, "reason": state[1]}

    async def pause(self, manager_id: str, reason: str) -> dict[str, Any] | None:
        link = _link_of(self._links, manager_id)
        if link is None:
            return None
        async with self._lock:
            await self._shared.record("pause", manager_id, reason=reason)
            try:
                link.dialer.pause_manager(manager_id, reason)
            except KeyError:  # a reload took him out meanwhile
                return None
        return self._one(link, manager_id)

    async def resume(self, manager_id: str) -> dict[str, Any] | None:
        link = _link_of(self._links, manager_id)
        if link is None:
            return None
        async with self._lock:
            await self._shared.record("resume", manager_id)
            try:
                link.dialer.resume_manager(manager_id)
            except KeyError:
                return None
        return self._one(link, manager_id)


@contextlib.asynccontextmanager
async def supervisor_stats(settings: Settings, routing: RoutingSource) -> AsyncIterator[SupervisorStats]:
    """The figures the daemon serves at /stats/managers, from a database opened for them alone."""
    async with Database(settings.database.url) as database:
        yield SupervisorStats(database, routing, SystemClock())


async def upgrade_database(settings: Settings) -> None:
    """What the daemon does at every start, for ops who migrate before starting it."""
    async with Database(settings.database.url) as database:
        await database.migrate()
