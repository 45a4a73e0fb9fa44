"""sd_notify and the watchdog against a real AF_UNIX datagram socket, as systemd listens on it."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from leadrouter.systemd import Notifier, Watchdog
from leadrouter.tasks import BackgroundTasks
from pbxsim.tests.amitools import wait_until
from tests.conftest import JsonLog
from tests.notify_socket import FakeSystemd, listening


@pytest.fixture(params=["path", "abstract"])
def systemd(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FakeSystemd]:
    with listening(tmp_path, abstract=request.param == "abstract") as fake:
        yield fake


async def test_ready_status_and_stopping_reach_the_socket(systemd: FakeSystemd) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": systemd.address})
    assert notifier.enabled and notifier.watchdog_interval is None
    notifier.extend_start(30, "waiting for the PBX")
    notifier.ready("ready: PBX linked")
    notifier.stopping("stopping: 2 live calls")
    await wait_until(lambda: len(systemd.received) == 3, 2, "three notices")
    assert systemd.messages() == [
        "EXTEND_TIMEOUT_USEC=30000000\nSTATUS=waiting for the PBX",
        "READY=1\nSTATUS=ready: PBX linked",
        "STOPPING=1\nSTATUS=stopping: 2 live calls",
    ]
    notifier.close()


def test_without_systemd_nothing_is_sent_and_the_watchdog_is_off() -> None:
    notifier = Notifier({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    notifier.ready("ready")  # no socket: a no-op, not an error
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "2000000"}).watchdog_interval == 2.0
    # The watchdog settings name the process they are for; a child that inherited them does not ping.
    other = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier(other).watchdog_interval is None


def test_a_vanished_socket_is_reported_once(tmp_path: Path, json_log: JsonLog) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    for _ in range(5):
        notifier.watchdog()
    (failed,) = json_log.events("systemd.notify_failed")
    assert "gone.sock" in failed["socket"]


async def test_a_stuck_event_loop_sends_no_watchdog_ping(systemd: FakeSystemd) -> None:
    interval = 0.2  # WatchdogSec; pings every 0.1 s
    notifier = Notifier({"NOTIFY_SOCKET": systemd.address, "WATCHDOG_USEC": str(int(interval * 1e6))})
    watchdog = Watchdog(notifier, interval, healthy=lambda: True)
    feeding = asyncio.create_task(watchdog.run())
    await wait_until(lambda: len(systemd.arrivals("WATCHDOG=1")) >= 3, 2, "pings while the loop runs")
    stuck_from = time.monotonic()
    time.sleep(1.0)  # noqa: ASYNC251 - the fault itself: something blocks the loop for five watchdog intervals
    stuck_until = time.monotonic()
    await wait_until(lambda: any(at > stuck_until for at in systemd.arrivals("WATCHDOG=1")), 2, "pings again")
    feeding.cancel()
    pings = systemd.arrivals("WATCHDOG=1")
    # Nothing left while the loop was stuck (one datagram sent just before it may land a moment late).
    assert [at for at in pings if stuck_from + 0.05 < at < stuck_until] == []
    gaps = [later - earlier for earlier, later in itertools.pairwise(pings)]
    assert max(gaps) >= 1.0 > interval  # systemd would have restarted the daemon
    notifier.close()


async def test_a_dead_task_stops_the_watchdog(systemd: FakeSystemd, json_log: JsonLog) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": systemd.address, "WATCHDOG_USEC": "100000"})
    tasks = BackgroundTasks()
    watchdog = Watchdog(notifier, 0.1, healthy=lambda: tasks.all_alive)
    doomed = asyncio.Event()

    async def publisher_like() -> None:
        await doomed.wait()
        raise RuntimeError("an error nobody planned for")

    async with tasks.running("publisher", publisher_like()), tasks.running("watchdog", watchdog.run()):
        await wait_until(lambda: watchdog.pings >= 2, 2, "pings while all is well")
        doomed.set()
        await wait_until(lambda: not tasks.all_alive, 2, "the death noticed")
        pings, rounds = watchdog.pings, watchdog.rounds
        await wait_until(lambda: watchdog.rounds >= rounds + 3, 2, "three more watchdog rounds")
        assert watchdog.pings == pings  # withheld: systemd restarts the daemon
    assert tasks.died == {"publisher": "RuntimeError('an error nobody planned for')"}
    (died,) = json_log.events("task.died")
    assert died["task"] == "publisher" and "an error nobody planned for" in died["exception"]
    assert len(json_log.events("systemd.watchdog_withheld")) == 1
    # Stopping the tasks at the end of the block is no death.
    assert tasks.states() == {"publisher": "died", "watchdog": "running"}
    notifier.close()
