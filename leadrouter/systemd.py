"""systemd's service protocol: readiness and stop notices, and the watchdog.

sd_notify is written here rather than taken from a library: the protocol is one datagram of
``KEY=VALUE`` lines sent to the AF_UNIX socket named by ``NOTIFY_SOCKET`` (a path, or an
abstract name after ``@``), which systemd documents as stable and shows in sd_notify(3) as a
reference to copy. The PyPI ``sdnotify`` has not changed since 2017 and hides send errors;
``systemd-python`` and ``cysystemd`` need libsystemd's headers to build.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Mapping

import structlog

log = structlog.get_logger("systemd")


class Notifier:
    """Tells systemd what the daemon is doing; does nothing when not started by systemd."""

    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        address = env.get("NOTIFY_SOCKET", "")
        # An abstract socket name is written with "@" and has a NUL byte in its place.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._socket: socket.socket | None = None
        self._failed = False
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        # WATCHDOG_PID names the process the watchdog is meant for: not a child that inherited it.
        enabled = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        self.watchdog_interval: float | None = int(usec) / 1_000_000 if enabled else None

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, *assignments: str) -> None:
        if not self._address:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._socket.setblocking(False)  # systemd reads at once; never stall the event loop
            self._socket.sendto("\n".join(assignments).encode(), self._address)
        except OSError as exc:
            if not self._failed:  # systemd gone or the socket unreachable: say so once
                self._failed = True
                log.warning("systemd.notify_failed", error=str(exc), socket=self._address.replace("\0", "@"))
            return
        self._failed = False

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def extend_start(self, seconds: float, status: str) -> None:
        """Still starting, for a reason worth waiting for: push systemd's TimeoutStartSec back."""
        self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}", f"STATUS={status}")

    def stopping(self, status: str) -> None:
        self.notify("STOPPING=1", f"STATUS={status}")

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


class Watchdog:
    """Feeds systemd's watchdog from the event loop itself, and only while the daemon is well.

    A loop that is stuck runs no task, so no ping leaves and systemd restarts the daemon after
    ``WatchdogSec``; a daemon whose ``healthy`` says no (a background task died) stops feeding
    it on purpose, with the same result.
    """

    def __init__(self, notifier: Notifier, interval: float, healthy: Callable[[], bool]) -> None:
        self._notifier = notifier
        self._interval = interval  # systemd's WatchdogSec
        self._healthy = healthy
        self.pings = 0
        self.rounds = 0  # checks made, ping or not

    async def run(self) -> None:
        withheld = False
        while True:
            self.rounds += 1
            if self._healthy():
                self._notifier.watchdog()
                self.pings += 1
                withheld = False
            elif not withheld:
                withheld = True
                log.critical("systemd.watchdog_withheld", hint="the daemon is unhealthy; systemd will restart it")
            # Half the interval, as sd_watchdog_enabled(3) advises: one late ping is not a restart.
            await asyncio.sleep(self._interval / 2)
