"""Prometheus metrics, served at /metrics: every name starts with ``leadrouter_``.

Two kinds. Gauges are read at scrape time from the part that knows them (``Readings``):
nothing is counted twice and no hot path pays for them; the database ones (leads by state,
the outbox backlog) are one indexed query each per scrape. Histograms are observed where the
daemon hands things over: the lead intake and the PBX port are wrapped here (``TimedIntake``,
``TimedPbx``), so the dialer itself knows nothing of metrics.

The README's "Metrics" section lists every name with its meaning.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ami_adapter.client import AmiClient
from ami_adapter.pbx import AsteriskPbx, AsteriskPbxSettings
from ami_adapter.translate import EventTranslator
from dialer.intake import DryRun, LeadInput, LeadIntake, Submitted
from dialer.ports import Clock, PreparedDial
from router.breaker import BreakerState
from router.model import Lead, LeadStatus
from router.pbx_events import DeviceState
from storage.engine import StorageUnavailable

# Seconds from a lead's arrival to its first Originate: seconds when all goes well, hours
# for a lead that came in at night and waited for working hours.
SPEED_TO_DIAL_BUCKETS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600)
# Seconds from sending Originate to the PBX's answer that it is queued.
ORIGINATE_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# How late the event loop runs a timer: the AMI reader must never wait ~100 ms.
LOOP_LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 5)
EARLY_KEPT = 10_000  # Originates remembered until their lead's arrival is told (DialTimings)
LOOP_LAG_EVERY = 0.05  # seconds between two lag samples

MANAGER_STATES = ("free", "busy", "unavailable", "unknown")


def manager_state(device: object, on_our_call: bool) -> str:
    """free, busy (on our call, or the phone rings or is in use), unavailable, or unknown."""
    if on_our_call or device in (DeviceState.IN_USE, DeviceState.RINGING):
        return "busy"
    if device == DeviceState.FREE:
        return "free"
    if device == DeviceState.UNAVAILABLE:
        return "unavailable"
    return "unknown"  # no device state heard yet; the board offers calls to them as if free


@dataclass(frozen=True)
class PbxReadings:
    """What each PBX's gauges come from (one AMI link, board and dialer per PBX)."""

    live_calls: Callable[[], int]
    managers: Callable[[], Iterable[Mapping[str, object]]]  # ManagerBoard.snapshot()
    ami_connected: Callable[[], bool]
    breaker_state: Callable[[], str]  # the dialer's circuit breaker on the PBX: a BreakerState value
    pbx_failures: Callable[[], int]  # calls the PBX failed (refused, not placed, lost) since the start


@dataclass(frozen=True)
class Readings:
    """Where each gauge comes from; read at every scrape."""

    lead_counts: Callable[[], Awaitable[Mapping[str, int]]]
    outbox_backlog: Callable[[], Awaitable[tuple[int, datetime | None]]]
    now: Callable[[], datetime]  # the clock outbox rows are stamped with
    pbxes: Mapping[str, PbxReadings]  # by the PBX's name (the `pbx` label)
    database_writable: Callable[[], bool]
    tasks: Callable[[], Mapping[str, str]]  # name -> running | died
    mqtt_connected: Callable[[], bool] | None = None  # None: MQTT is disabled
    published: Callable[[], int] | None = None
    # Per webhook subscriber: its events pending and dead (the database), and since the start
    # the events it took and the attempts that failed (subscriber -> (delivered, failures)).
    webhook_backlog: Callable[[], Awaitable[Iterable[Mapping[str, Any]]]] | None = None
    webhook_sent: Callable[[], Mapping[str, tuple[int, int]]] | None = None


@dataclass
class _Stored:
    leads: Mapping[str, int]
    backlog: int
    oldest: datetime | None
    webhooks: list[Mapping[str, Any]]


class _Gauges(Collector):
    def __init__(self, readings: Readings) -> None:
        self._readings = readings
        self.stored: _Stored | None = None  # None: the database could not be read for this scrape

    async def refresh(self) -> None:
        readings = self._readings
        try:
            leads = await readings.lead_counts()
            backlog, oldest = await readings.outbox_backlog()
            webhooks = list(await readings.webhook_backlog()) if readings.webhook_backlog else []
        except StorageUnavailable:
            # The database is failing (its own log line and leadrouter_database_writable say so):
            # leave these series out rather than report stale or made-up values.
            self.stored = None
            return
        self.stored = _Stored(leads, backlog, oldest, webhooks)

    def collect(self) -> Iterator[Metric]:
        readings = self._readings
        yield from _per_pbx(readings.pbxes)
        writable = readings.database_writable()
        yield _gauge("leadrouter_database_writable", "0 while writes fail (disk full, read-only, gone)", writable)
        tasks = {name: int(state == "running") for name, state in readings.tasks().items()}
        yield _labelled("leadrouter_task_up", "1 while the background task runs, 0 once it died", "task", tasks)
        if readings.mqtt_connected is not None:
            yield _gauge("leadrouter_mqtt_connected", "1 while connected to the MQTT broker", readings.mqtt_connected())
        if readings.published is not None:
            published = readings.published()
            yield CounterMetricFamily("leadrouter_events_published", "Events the broker acknowledged", value=published)
        if readings.webhook_sent is not None:
            sent = readings.webhook_sent()
            delivered = CounterMetricFamily(
                "leadrouter_webhook_delivered", "Events a webhook receiver took (2xx)", labels=["subscriber"]
            )
            failed = CounterMetricFamily(
                "leadrouter_webhook_failures", "Webhook attempts that failed (retried later)", labels=["subscriber"]
            )
            for name, (took, failures) in sent.items():
                delivered.add_metric([name], took)
                failed.add_metric([name], failures)
            yield delivered
            yield failed
        stored = self.stored
        if stored is None:
            return
        if readings.webhook_backlog is not None:
            waiting = GaugeMetricFamily(
                "leadrouter_webhook_events",
                "Webhook events not delivered: pending or dead",
                labels=["subscriber", "state"],
            )
            for entry in stored.webhooks:
                for state in ("pending", "dead"):
                    waiting.add_metric([entry["name"], state], float(entry[state]))
            yield waiting
        leads = {status.value: stored.leads.get(status.value, 0) for status in LeadStatus}
        yield _labelled("leadrouter_leads", "Leads by state", "state", leads)
        yield _gauge("leadrouter_outbox_backlog", "Events committed, not yet acked by the broker", stored.backlog)
        lag = 0.0 if stored.oldest is None else max((readings.now() - stored.oldest).total_seconds(), 0.0)
        yield _gauge("leadrouter_outbox_lag_seconds", "Age of the oldest unpublished event (0: none waits)", lag)


def _per_pbx(pbxes: Mapping[str, PbxReadings]) -> Iterator[Metric]:
    """The gauges each PBX has its own of, labelled ``pbx`` by its name."""
    calls = GaugeMetricFamily(
        "leadrouter_calls_in_progress", "Our calls the PBX is dialling or carrying", labels=["pbx"]
    )
    managers = GaugeMetricFamily("leadrouter_managers", "Managers by phone state", labels=["pbx", "state"])
    ami = GaugeMetricFamily("leadrouter_ami_connected", "1 while logged in to the PBX over AMI", labels=["pbx"])
    breaker = GaugeMetricFamily(
        "leadrouter_breaker_state", "1 for the PBX circuit breaker's current state", labels=["pbx", "state"]
    )
    failures = CounterMetricFamily(
        "leadrouter_pbx_failures", "Calls the PBX failed; none cost the lead an attempt", labels=["pbx"]
    )
    for name, pbx in pbxes.items():
        calls.add_metric([name], float(pbx.live_calls()))
        counts = dict.fromkeys(MANAGER_STATES, 0)
        for slot in pbx.managers():
            counts[manager_state(slot["device"], slot["call_id"] is not None)] += 1
        for state, count in counts.items():
            managers.add_metric([name, state], float(count))
        ami.add_metric([name], float(pbx.ami_connected()))
        current = pbx.breaker_state()
        for breaker_state in BreakerState:
            breaker.add_metric([name, breaker_state.value], float(breaker_state.value == current))
        failures.add_metric([name], pbx.pbx_failures())
    yield from (calls, managers, ami, breaker, failures)


def _labelled(name: str, documentation: str, label: str, values: Mapping[str, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for key, value in values.items():
        family.add_metric([key], float(value))
    return family


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value))


class Metrics:
    """The daemon's registry: its own, so several daemons in one process (tests) never clash."""

    def __init__(self, readings: Readings) -> None:
        self.registry = CollectorRegistry()
        self._gauges = _Gauges(readings)
        self.registry.register(self._gauges)
        self.speed_to_dial = Histogram(
            "leadrouter_speed_to_dial_seconds",
            "From a lead's arrival to its first Originate",
            buckets=SPEED_TO_DIAL_BUCKETS,
            registry=self.registry,
        )
        self.originate_latency = Histogram(
            "leadrouter_originate_latency_seconds",
            "From sending Originate to the PBX's answer that it is queued",
            buckets=ORIGINATE_BUCKETS,
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "leadrouter_event_loop_lag_seconds",
            f"How late the event loop ran a {LOOP_LAG_EVERY} s timer",
            buckets=LOOP_LAG_BUCKETS,
            registry=self.registry,
        )

    async def exposition(self) -> tuple[bytes, str]:
        """The body and content type of a /metrics answer."""
        await self._gauges.refresh()
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    async def watch_loop_lag(self) -> None:
        """Run for good, sampling how late the loop wakes a sleeper."""
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(LOOP_LAG_EVERY)
            self.loop_lag.observe(max(loop.time() - asked - LOOP_LAG_EVERY, 0.0))


class DialTimings:
    """Speed to dial and Originate latency: when each new lead arrived, until its first Originate.

    Leads that arrived before this process started are not timed (their arrival was not seen).
    """

    def __init__(self, metrics: Metrics, clock: Clock) -> None:
        self._metrics = metrics
        self._clock = clock
        self._arrivals: dict[int, datetime] = {}
        # A new lead is claimed in the transaction that stores it, so its Originate may leave
        # before the intake's caller (TimedIntake) hears back: when, by lead, until it does.
        # Bounded: leads from before this process started never arrive here.
        self._early: OrderedDict[int, datetime] = OrderedDict()

    def arrived(self, lead: Lead) -> None:
        if lead.id is None:
            return
        dialled = self._early.pop(lead.id, None)
        if dialled is None:
            self._arrivals[lead.id] = lead.created_at
        else:
            self._observe(lead.created_at, dialled)

    def originating(self, lead_id: int, ago: float = 0.0) -> None:
        """The lead's first Originate went on the wire ``ago`` seconds ago."""
        now = self._clock.now() - timedelta(seconds=ago)
        arrived = self._arrivals.pop(lead_id, None)
        if arrived is not None:
            self._observe(arrived, now)
            return
        self._early[lead_id] = now
        if len(self._early) > EARLY_KEPT:
            self._early.popitem(last=False)

    def _observe(self, arrived: datetime, dialled: datetime) -> None:
        self._metrics.speed_to_dial.observe(max((dialled - arrived).total_seconds(), 0.0))

    def originate_queued(self, seconds: float) -> None:
        self._metrics.originate_latency.observe(seconds)


class TimedIntake:
    """The lead intake, telling DialTimings of every new lead."""

    def __init__(self, intake: LeadIntake, timings: DialTimings) -> None:
        self._intake = intake
        self._timings = timings

    async def submit(self, data: LeadInput) -> tuple[Lead, bool]:
        lead, created = await self._intake.submit(data)
        if created:
            self._timings.arrived(lead)
        return lead, created

    async def submit_batch(self, batch: Sequence[LeadInput], *, dry_run: DryRun | None = None) -> list[Submitted]:
        results = await self._intake.submit_batch(batch, dry_run=dry_run)
        if dry_run is None:
            for result in results:
                if isinstance(result, tuple) and result[1]:
                    self._timings.arrived(result[0])
        return results


class TimedAsteriskPbx(AsteriskPbx):
    """The dialer's PBX port, timing Originates.

    A subclass rather than a wrapper, so whatever the port gains later is there unchanged.
    """

    def __init__(
        self, client: AmiClient, translator: EventTranslator, settings: AsteriskPbxSettings, timings: DialTimings
    ) -> None:
        super().__init__(client, translator, settings)
        self._timings = timings

    def prepare_client(
        self,
        *,
        channel_id: str,
        phone: str,
        lead_id: int,
        call_id: int,
        ring_timeout: float,
        caller_name: str = "",
        amd: bool = False,
        whisper: str = "",
    ) -> PreparedDial:
        send = super().prepare_client(
            channel_id=channel_id,
            phone=phone,
            lead_id=lead_id,
            call_id=call_id,
            ring_timeout=ring_timeout,
            caller_name=caller_name,
            amd=amd,
            whisper=whisper,
        )
        return _TimedDial(send, self._timings, lead_id)

    async def originate_manager(
        self,
        *,
        channel_id: str,
        extension: str,
        phone: str,
        lead_id: int,
        call_id: int,
        ring_timeout: float,
        client_ring_timeout: float | None,
        caller_name: str = "",
        whisper: str = "",
    ) -> None:
        # Manager first: a lead's first Originate rings a manager; it is timed the same way.
        self._timings.originating(lead_id)
        started = time.perf_counter()
        await super().originate_manager(
            channel_id=channel_id,
            extension=extension,
            phone=phone,
            lead_id=lead_id,
            call_id=call_id,
            ring_timeout=ring_timeout,
            client_ring_timeout=client_ring_timeout,
            caller_name=caller_name,
            whisper=whisper,
        )
        self._timings.originate_queued(time.perf_counter() - started)


@dataclass(eq=False)
class _TimedDial:
    """A client's Originate (PreparedDial) whose sending is timed, from when it went on the wire."""

    send: PreparedDial
    timings: DialTimings
    lead_id: int
    written_at: float | None = None  # perf_counter() when it left from the committing thread

    def __call__(self) -> Awaitable[None]:
        started = time.perf_counter()
        answer = self.send()
        now = time.perf_counter()
        if self.written_at is not None and self.written_at < started:
            started = self.written_at
        # Once it is on the wire: its timing costs the lead nothing.
        self.timings.originating(self.lead_id, ago=now - started)
        return self._answered(answer, started)

    def write_off_loop(self) -> bool:
        written = self.send.write_off_loop()
        if written:
            self.written_at = time.perf_counter()
        return written

    async def _answered(self, answer: Awaitable[None], started: float) -> None:
        await answer
        # Refusals are the dialer's PBX failures to count; this is how long a queued one took.
        self.timings.originate_queued(time.perf_counter() - started)
