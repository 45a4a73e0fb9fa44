"""Deleting recordings older than ``recordings.retention_days``, once a day.

Only files a call of ours names are touched (the PBX's folder holds others' recordings too),
only once the call has ended, and never a file a call still up records into (MixMonitor may
write one name again). Each deletion is logged (``recordings.deleted``: call, file, when the
call ended) and its call marked with ``recording_deleted_at``, so a supervisor who finds no
player knows why; a file already gone is marked too, and logged as missing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import structlog

from recordings.access import resolve

log = structlog.get_logger("recordings")

BATCH = 500  # calls per round: one read, one write, a thread's worth of unlinks


class RetentionStore(Protocol):
    async def kept_before(self, before: datetime, limit: int) -> list[tuple[int, str, datetime]]: ...

    async def in_use(self, files: Sequence[str]) -> set[str]: ...

    async def mark_deleted(self, call_ids: Sequence[int], at: datetime) -> None: ...


@dataclass(frozen=True)
class Swept:
    deleted: int = 0
    missing: int = 0  # the call named a file that was no longer there (or outside the folder)
    in_use: int = 0  # kept: a call still up records into the same name


def _unlink(folder: Path, names: Sequence[str]) -> list[bool]:
    """Delete each file; True where it existed (inside the folder) and is gone now."""
    gone = []
    for name in names:
        path = resolve(folder, name)
        if path is not None:
            path.unlink(missing_ok=True)
        gone.append(path is not None)
    return gone


async def sweep(store: RetentionStore, folder: Path, days: float, now: datetime) -> Swept:
    """One pass: every recording of a call that ended more than ``days`` ago, deleted and marked."""
    before = now - timedelta(days=days)
    deleted = missing = in_use = 0
    skipped: set[int] = set()
    while True:
        due = [row for row in await store.kept_before(before, BATCH + len(skipped)) if row[0] not in skipped]
        if not due:
            return Swept(deleted, missing, in_use)
        busy = await store.in_use([file for _, file, _ in due])
        ready = [row for row in due if row[1] not in busy]
        skipped.update(call_id for call_id, file, _ in due if file in busy)
        in_use += len(due) - len(ready)
        if not ready:
            return Swept(deleted, missing, in_use)
        # Unlinking is file-system work: off the loop, so neither AMI nor the API waits on a slow disk.
        gone = await asyncio.to_thread(_unlink, folder, [file for _, file, _ in ready])
        for (call_id, file, ended_at), existed in zip(ready, gone, strict=True):
            event = "recordings.deleted" if existed else "recordings.missing"
            log.info(event, call_id=call_id, file=file, call_ended_at=ended_at.isoformat(), retention_days=days)
        deleted += sum(gone)
        missing += len(gone) - sum(gone)
        await store.mark_deleted([call_id for call_id, _, _ in ready], now)


async def run_daily(
    store: RetentionStore,
    folder: Path,
    days: float,
    now: Callable[[], datetime],
    sleep: Callable[[float], Awaitable[None]],
    unavailable: tuple[type[Exception], ...] = (),
    every: float = 86400.0,
    retry: float = 3600.0,
) -> None:
    """Sweep at start, then once every ``every`` seconds, until cancelled; while the database is
    ``unavailable`` (it logs that itself), again after ``retry`` seconds."""
    while True:
        try:
            swept = await sweep(store, folder, days, now())
        except unavailable:
            await sleep(retry)
            continue
        log.info("recordings.retention", deleted=swept.deleted, missing=swept.missing, in_use=swept.in_use, days=days)
        await sleep(every)
