"""The outbox's retention: events older than ``database.outbox_retention_days`` are deleted once
MQTT has had them (the broker acknowledged them, or we heard them back) and every webhook
subscriber configured now has taken them in and has none of them left to deliver or to retry.

Without it the outbox grows by every event of every lead for good. It runs as one elected job
per database (storage.cluster), at start and then hourly, a batch per transaction, so neither
the loop nor the database's writers wait on one long delete. A lead's timeline (GET /leads/{id})
lists its events from the outbox: the events older than the retention leave it too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from datetime import datetime, timedelta
from typing import Protocol

import structlog

log = structlog.get_logger("outbox")

BATCH = 1000  # rows looked at per transaction


class PrunedOutbox(Protocol):
    async def prune_outbox(
        self, before: datetime, *, after: int, limit: int, published_only: bool, subscribers: Collection[str]
    ) -> tuple[int, int | None]: ...


async def prune(
    store: PrunedOutbox,
    days: float,
    now: datetime,
    *,
    published_only: bool,
    subscribers: Collection[str],
    batch: int = BATCH,
) -> int:
    """One pass over the outbox, oldest first; returns how many events were deleted."""
    before = now - timedelta(days=days)
    after: int | None = 0
    deleted = 0
    while after is not None:
        went, after = await store.prune_outbox(
            before, after=after, limit=batch, published_only=published_only, subscribers=subscribers
        )
        deleted += went
    return deleted


async def run_hourly(
    store: PrunedOutbox,
    days: float,
    now: Callable[[], datetime],
    sleep: Callable[[float], Awaitable[None]],
    *,
    published_only: bool,
    subscribers: Callable[[], Collection[str]],
    unavailable: tuple[type[Exception], ...] = (),
    every: float = 3600.0,
    retry: float = 300.0,
) -> None:
    """Prune at start, then every ``every`` seconds, until cancelled; while the database is
    ``unavailable`` (it logs that itself), again after ``retry`` seconds. ``published_only``: MQTT
    is on, so an event not yet published stays whatever its age."""
    while True:
        try:
            deleted = await prune(store, days, now(), published_only=published_only, subscribers=subscribers())
        except unavailable:
            await sleep(retry)
            continue
        if deleted:
            log.info("outbox.pruned", deleted=deleted, retention_days=days)
        await sleep(every)
