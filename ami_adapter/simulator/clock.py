"""The time source the simulator runs on, injected so tests can compress time."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class SimClock(Protocol):
    """Simulated time: ``leadrouter.clock.ScaledClock`` satisfies this structurally."""

    def now(self) -> datetime:
        """Aware UTC wall time of the simulated world."""
        ...

    def monotonic(self) -> float:
        """Simulated seconds, for durations."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep for simulated seconds."""
        ...
