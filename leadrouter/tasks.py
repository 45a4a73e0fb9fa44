"""The daemon's long-running tasks, watched: none of them is meant to end while the daemon runs.

Each task retries its own outages (database, broker, PBX); one that ends anyway, with an
exception or without, has died of something nobody planned for. That is logged once with its
traceback, makes /health unhealthy and stops the systemd watchdog, so systemd restarts the
daemon instead of leaving it running without, say, its publisher.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import structlog

log = structlog.get_logger("daemon")


class BackgroundTasks:
    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._stopping: set[str] = set()
        self.died: dict[str, str] = {}  # task name -> what ended it

    @property
    def all_alive(self) -> bool:
        return not self.died

    def states(self) -> dict[str, str]:
        return {name: "died" if name in self.died else "running" for name in self._tasks}

    def watch(self, name: str, task: asyncio.Task[Any]) -> None:
        """Watch a task started elsewhere (uvicorn's server); ``stopping`` it is its owner's to call."""
        self._tasks[name] = task
        task.add_done_callback(lambda finished: self._ended(name, finished))

    def stopping(self, name: str) -> None:
        """The task's owner is about to stop it: its end is not a death."""
        self._stopping.add(name)

    @contextlib.asynccontextmanager
    async def running(self, name: str, coro: Coroutine[Any, Any, Any]) -> AsyncIterator[asyncio.Task[Any]]:
        """Run ``coro`` as a watched task for the lifetime of the block, then cancel it."""
        task = asyncio.create_task(coro, name=name)
        self.watch(name, task)
        try:
            yield task
        finally:
            self.stopping(name)
            task.cancel()
            await asyncio.wait({task})  # a death was logged when it happened: no second report
            if not task.cancelled() and (exc := task.exception()) is not None and name not in self.died:
                log.error("task.stop_failed", task=name, exc_info=exc)

    def _ended(self, name: str, task: asyncio.Task[Any]) -> None:
        if name in self._stopping:
            return
        if task.cancelled():
            reason = "cancelled"
        elif (exc := task.exception()) is not None:
            reason = repr(exc)
        else:
            reason = "returned"
        self.died[name] = reason
        exc_info = None if task.cancelled() else task.exception()
        log.critical("task.died", task=name, reason=reason, exc_info=exc_info, hint="systemd restarts the daemon")
