"""The live board the dashboard shows: each manager's state and since when, calls in progress,
leads waiting, today's counters; pushed to browsers (``GET /live``, server-sent events).

Manager states come from the board in memory (as the PBX reported them); calls in progress from
the database (the dialer writes them behind within a fraction of a second). A browser hears of
a change within ``interval`` of the board seeing it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

from dialer.ports import Clock
from router.routing import RoutingPlan
from router.stats import ManagerFigures, Period

INTERVAL = 0.25  # seconds between looks at the board: well within the second the issue asks for
COUNTERS_EVERY = 2.0  # the lead counts and today's figures read whole tables: less often
KEEPALIVE = 15.0  # an SSE comment line so proxies keep an idle stream open


class LiveBoard:
    def __init__(
        self,
        board: Callable[[], list[dict[str, object]]],  # ManagerBoard.snapshot, of every PBX's board
        plan: Callable[[], RoutingPlan],
        clock: Clock,
        *,
        live_calls: Callable[[], Awaitable[list[dict[str, object]]]],
        lead_counts: Callable[[], Awaitable[dict[str, int]]],
        today: Callable[[], Awaitable[tuple[Period, list[ManagerFigures]]]],
    ) -> None:
        self._board = board
        self._plan = plan
        self._clock = clock
        self._live_calls = live_calls
        self._lead_counts = lead_counts
        self._today = today
        self._since: dict[str, tuple[str, datetime]] = {}  # manager -> (state, when the board first showed it)
        self._counters: dict[str, Any] = {}
        self._counted_at = -COUNTERS_EVERY
        self._closed = asyncio.Event()

    def close(self) -> None:
        """Ends every open stream: uvicorn waits for open responses before it stops."""
        self._closed.set()

    async def snapshot(self) -> dict[str, Any]:
        now = self._clock.now()
        names = {m.id: m.name for m in self._plan().managers}
        managers = []
        for slot in self._board():
            manager_id = str(slot["id"])
            # The manager's state (router.board.ManagerState), with a pause's reason beside it.
            state = str(slot["state"])
            seen = self._since.get(manager_id)
            if seen is None or seen[0] != state:
                seen = self._since[manager_id] = (state, now)
            managers.append(
                {
                    "id": manager_id,
                    "name": names.get(manager_id, ""),
                    "state": state,
                    "reason": slot["reason"],
                    "since": seen[1].isoformat(),
                }
            )
        if self._clock.monotonic() - self._counted_at >= COUNTERS_EVERY:
            self._counted_at = self._clock.monotonic()
            counts = await self._lead_counts()
            period, figures = await self._today()
            self._counters = {
                "day": period.first.isoformat(),
                "leads": counts,
                "calls": sum(f.calls for f in figures),
                "talk_seconds": round(sum(f.talk_seconds for f in figures), 1),
                "offers": sum(f.offers for f in figures),
                "missed": sum(f.missed for f in figures),
                "per_manager": {f.manager_id: {"calls": f.calls, "talk_seconds": f.talk_seconds} for f in figures},
            }
        calls = [
            {k: v.isoformat() if isinstance(v, datetime) else v for k, v in call.items()}
            for call in await self._live_calls()
        ]
        return {"managers": managers, "calls": calls, "today": self._counters}

    async def stream(self) -> AsyncIterator[str]:
        """Server-sent events: the board whenever it changed, the server's time with each."""
        last = ""
        quiet = 0.0
        while not self._closed.is_set():
            board = json.dumps(await self.snapshot(), ensure_ascii=False, sort_keys=True)
            if board != last:
                last, quiet = board, 0.0
                yield f'event: board\ndata: {board[:-1]}, "now": "{self._clock.now().isoformat()}"}}\n\n'
            elif quiet >= KEEPALIVE:
                quiet = 0.0
                yield ": still here\n\n"
            # A wait on the event, not a sleep: close() ends the stream at once.
            try:
                async with asyncio.timeout(INTERVAL):  # not wait_for, which may lose a cancellation (3.11)
                    await self._closed.wait()
            except TimeoutError:
                quiet += INTERVAL
