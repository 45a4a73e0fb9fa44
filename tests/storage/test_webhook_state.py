"""storage.webhooks: a subscriber's cursor, per-lead order, dead events and retries, on SQLite."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert

from storage.engine import Database
from storage.schema import outbox
from storage.webhooks import BEHIND_DEAD, SqlWebhooks

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Failed:
    seq: int
    attempts: int
    error: str
    first_failed_at: datetime
    next_attempt_at: datetime
    dead: bool


async def _commit(db: Database, *events: tuple[str, str, int], seqs: list[int] | None = None) -> None:
    async with db.write() as conn:
        rows = [
            {"id": event_id, "type": kind, "lead_id": lead, "payload": "{}", "created_at": NOW}
            for event_id, kind, lead in events
        ]
        for row, seq in zip(rows, seqs or [], strict=False):
            row["seq"] = seq  # as PostgreSQL's sequence handed it out
        await conn.execute(insert(outbox), rows)
        await conn.commit()


async def _due(state: SqlWebhooks, at: datetime = NOW) -> list[str]:
    return [delivery.id for delivery in await state.due("crm", at, max_leads=10, limit=100)]


async def test_a_new_subscriber_starts_at_the_end_and_takes_only_what_it_wants(db: Database) -> None:
    state = SqlWebhooks(db)
    await _commit(db, ("old", "lead.created", 1))
    await state.enroll("crm", NOW)
    await _commit(db, ("a", "lead.created", 2), ("b", "call.dialing", 2), ("c", "lead.assigned", 2))
    assert await state.fan_out("crm", {"lead.created", "lead.assigned"}, NOW, 100) == 3  # rows read
    assert await state.fan_out("crm", None, NOW, 100) == 0  # the cursor moved past them
    assert await _due(state) == ["a", "c"]


async def test_a_failed_event_holds_back_its_lead_only_until_it_is_due(db: Database) -> None:
    state = SqlWebhooks(db)
    await state.enroll("crm", NOW)
    await _commit(db, ("a1", "lead.created", 1), ("a2", "call.dialing", 1), ("b1", "lead.created", 2))
    await state.fan_out("crm", None, NOW, 100)
    later = NOW + timedelta(seconds=30)
    await state.record("crm", [3], [Failed(1, 1, "HTTP 500", NOW, later, dead=False)], NOW)
    assert await _due(state) == []  # lead 1 waits for a1's retry; lead 2's b1 was delivered
    assert await state.next_due_at("crm") == later
    assert await _due(state, later) == ["a1", "a2"]


async def test_dead_events_hold_their_lead_and_a_retry_brings_the_whole_lead_back_in_order(db: Database) -> None:
    state = SqlWebhooks(db)
    await state.enroll("crm", NOW)
    await _commit(db, ("a1", "lead.created", 1), ("a2", "call.dialing", 1), ("b1", "lead.created", 2))
    await state.fan_out("crm", None, NOW, 100)
    await state.record("crm", [], [Failed(1, 9, "HTTP 500", NOW, NOW, dead=True)], NOW)
    await _commit(db, ("a3", "call.ended", 1))  # committed after a1 died
    await state.fan_out("crm", None, NOW, 100)
    dead = await state.dead(None, 100)
    assert [(entry["id"], entry["last_error"]) for entry in dead] == [
        ("a1", "HTTP 500"),
        ("a2", BEHIND_DEAD),
        ("a3", BEHIND_DEAD),
    ]
    assert await _due(state) == ["b1"]
    (overview,) = await state.overview()
    assert (overview["pending"], overview["dead"]) == (1, 3)

    assert await state.retry("crm", ["a2"], NOW) == 3  # a2's lead, from its first dead event
    assert await _due(state) == ["a1", "a2", "b1", "a3"]  # in outbox order
    assert await state.retry("crm", ["a2"], NOW) == 0  # nothing dead any more
    assert await state.retry("other", [], NOW) == 0


async def test_the_cursor_waits_at_a_gap_a_slower_transaction_may_still_fill(db: Database) -> None:
    state = SqlWebhooks(db)
    await state.enroll("crm", NOW)
    await _commit(db, ("a", "lead.created", 1), ("c", "lead.created", 3), seqs=[1, 3])
    assert await state.fan_out("crm", None, NOW, 100) == 1  # seq 2 may be committing
    assert await state.fan_out("crm", None, NOW + timedelta(seconds=5), 100) == 0
    await _commit(db, ("b", "lead.created", 2), seqs=[2])
    assert await state.fan_out("crm", None, NOW + timedelta(seconds=5), 100) == 2
    assert await _due(state, NOW + timedelta(seconds=5)) == ["a", "b", "c"]
    # A gap nobody fills (a rolled-back transaction) is passed once the row after it is old.
    await _commit(db, ("e", "lead.created", 5), seqs=[5])
    assert await state.fan_out("crm", None, NOW + timedelta(seconds=5), 100) == 0
    assert await state.fan_out("crm", None, NOW + timedelta(seconds=11), 100) == 1
    assert await _due(state, NOW + timedelta(seconds=11)) == ["a", "b", "c", "e"]
