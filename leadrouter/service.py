"""``leadrouter run``: the daemon as a systemd service (``Type=notify``, see deploy/systemd).

- ``READY=1`` once the database, the API and the PBX link are up. While the PBX is away at
  start the daemon already takes leads, and keeps pushing systemd's start timeout back
  (``EXTEND_TIMEOUT_USEC``) with a status saying what it waits for: a hung start-up still
  times out, a missing PBX does not restart the daemon in a loop.
- ``WATCHDOG=1`` from the event loop while every background task lives (leadrouter.systemd).
- SIGTERM or SIGINT: ``STOPPING=1``, then ``Daemon.drain`` (no new leads or dials, live
  calls end within the grace period, the outbox is flushed), then exit 0. A second one cuts
  the waiting short.
- SIGHUP: re-read routing.yaml, and leadrouter.yaml's webhook subscribers; a broken file is
  refused and the running rules (or subscribers) stay.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import structlog

from config.problems import ConfigError
from config.routing import RoutingSource
from config.settings import Settings, load_settings
from dialer.ports import Clock
from events.webhooks import WebhookSettings
from leadrouter.daemon import Daemon
from leadrouter.systemd import Notifier

log = structlog.get_logger("daemon")

PBX_WAIT_REPORT = 10.0  # seconds between "still waiting for the PBX" notices at start
START_EXTENSION = 30.0  # each notice gives the start this much more time


async def serve(
    settings: Settings, routing: RoutingSource, clock: Clock, notifier: Notifier, config_file: Path | None = None
) -> int:
    """``config_file``: leadrouter.yaml, read again on SIGHUP for its webhook subscribers."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    daemon: Daemon | None = None

    def on_stop_signal() -> None:
        if stop.is_set() and daemon is not None:
            daemon.hurry()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_stop_signal)
    try:
        async with Daemon(settings, routing, clock, notifier) as daemon:
            running = daemon

            reloading: asyncio.Task[None] | None = None

            async def apply_reload() -> None:
                if config_file is not None:
                    await reload_webhooks_from(running, config_file)
                if await running.reload_routing():
                    notifier.status(_ready_status(running))
                else:
                    notifier.status("routing.yaml refused (see the log); the previous rules run on")

            def reload() -> None:
                nonlocal reloading
                if reloading is not None and not reloading.done():
                    log.warning("routing.reload_busy", hint="a reload is still being checked; send SIGHUP again after")
                    return
                reloading = asyncio.create_task(apply_reload(), name="routing-reload")

            loop.add_signal_handler(signal.SIGHUP, reload)
            if await _pbx_up(daemon, notifier, stop):
                notifier.ready(_ready_status(daemon))
                log.info("daemon.ready", http_port=daemon.http_port)
            await stop.wait()
            grace = settings.shutdown.grace_period
            notifier.stopping(f"stopping: {daemon.live_calls} live calls get up to {grace:g}s to end")
            await daemon.drain()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        notifier.close()
    log.info("daemon.stopped")
    return 0


async def reload_webhooks_from(daemon: Daemon, config_file: Path) -> bool:
    """SIGHUP: the webhook subscribers from leadrouter.yaml (the rest of it needs a restart); a
    refused file leaves the running subscribers as they are."""

    def read() -> WebhookSettings:
        return load_settings(config_file).webhooks.webhook_settings()

    try:
        webhooks = await asyncio.to_thread(read)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("webhooks.reload_refused", problem=str(problem))
        return False
    daemon.reload_webhooks(webhooks)
    return True


async def _pbx_up(daemon: Daemon, notifier: Notifier, stop: asyncio.Event) -> bool:
    """Wait for an AMI login (of any PBX: one down stops only its own dialling), telling systemd why
    the start takes long; False if told to stop first."""
    where = ", ".join(f"AMI {ami.host}:{ami.port}" for _, ami, _ in daemon.settings.links())
    waiting = f"waiting for the PBX ({where}); leads are taken meanwhile"
    links = daemon.pbxes.values()
    while not any(link.ami.connected for link in links):
        notifier.extend_start(START_EXTENSION, waiting)
        logins = {asyncio.ensure_future(link.ami.wait_connected()) for link in links}
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({*logins, stopped}, timeout=PBX_WAIT_REPORT, return_when=asyncio.FIRST_COMPLETED)
        for login in logins:
            login.cancel()
        stopped.cancel()
        if stop.is_set():
            return False
    return True


def _ready_status(daemon: Daemon) -> str:
    http = f"API on port {daemon.http_port}" if daemon.http_port is not None else "API off (no http.token)"
    return f"ready: PBX linked, database up, {http}, {sum(len(link.board) for link in daemon.pbxes.values())} managers"
