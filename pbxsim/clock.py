"""Simulated time, optionally running faster than the wall clock.

The simulator runs on it, and a daemon under test or in the demo is handed the same clock.
Tests and the demo compress time (``scale=50``: a 60 s call lasts 1.2 s) so that the
daemon's hold limits and retry delays and the simulator's ringing and talking all run on
one shared, consistent clock without real sleeps or patched time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta


class ScaledClock:
    def __init__(self, scale: float = 1.0, *, start: datetime | None = None) -> None:
        if scale <= 0:
            raise ValueError("scale must be positive")
        self.scale = scale
        self._t0 = time.monotonic()
        self._start = start or datetime.now(UTC)

    def monotonic(self) -> float:
        """Seconds of clock time since this clock was made."""
        return (time.monotonic() - self._t0) * self.scale

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self.monotonic())

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0) / self.scale)

    def call_later(self, seconds: float, callback: Callable[[], object]) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(max(seconds, 0.0) / self.scale, callback)
