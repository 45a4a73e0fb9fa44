"""uvicorn inside the daemon's own event loop, leaving signals to the daemon."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Generator
from types import TracebackType
from typing import Self

import uvicorn
from fastapi import FastAPI


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn would take SIGINT/SIGTERM for itself; the daemon owns shutdown and
        # decides when the API stops (first, so no lead is accepted while it winds down).
        yield


class ApiServer:
    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="off")
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def task(self) -> asyncio.Task[None]:
        """The server's task, for the daemon to watch: it is not meant to end before __aexit__."""
        assert self._task is not None, "enter the server first"
        return self._task

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self._server.servers[0].sockets[0].getsockname()[1])

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._server.serve(), name="http")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # re-raise why it could not start (port in use...)
                raise RuntimeError("HTTP server stopped while starting")
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task
