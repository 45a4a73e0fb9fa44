"""The outbox's retention (events.outbox_retention over storage.queries): old events go once MQTT
and every configured webhook subscriber have had them, in batches; on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select

from events.outbox_retention import prune
from storage.engine import Database
from storage.queries import SqlQueries
from storage.schema import outbox, webhook_deliveries, webhook_subscribers

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=31)


async def _seed(db: Database) -> None:
    """Seqs 1-6: old and published; old, not published yet; old, published, dead for the CRM's
    webhook; old and published; old, published, past the CRM's cursor; a day old, published."""
    rows = [
        (OLD, NOW),
        (OLD, None),
        (OLD, NOW),
        (OLD, NOW),
        (OLD, NOW),
        (NOW - timedelta(days=1), NOW),
    ]
    async with db.write() as conn:
        await conn.execute(
            insert(outbox),
            [
                {
                    "seq": seq,
                    "id": f"event-{seq}",
                    "type": "lead.created",
                    "lead_id": 7,
                    "payload": "{}",
                    "created_at": created,
                    "published_at": published,
                }
                for seq, (created, published) in enumerate(rows, start=1)
            ],
        )
        await conn.execute(insert(webhook_subscribers).values(name="crm", cursor=4, created_at=OLD))
        await conn.execute(
            insert(webhook_deliveries).values(
                subscriber="crm", seq=3, lead_id=7, state="dead", attempts=9, next_attempt_at=OLD, dead_at=OLD
            )
        )
        await conn.commit()


async def _left(db: Database) -> list[int]:
    async with db.read() as conn:
        return list((await conn.execute(select(outbox.c.seq).order_by(outbox.c.seq))).scalars())


async def test_old_events_go_once_mqtt_and_every_subscriber_had_them(db: Database) -> None:
    await _seed(db)
    queries = SqlQueries(db)
    deleted = await prune(queries, 30, NOW, published_only=True, subscribers=["crm"], batch=2)
    assert deleted == 2
    # Kept: not published yet (2), dead for the CRM to retry (3), not taken in by the CRM yet (5), young (6).
    assert await _left(db) == [2, 3, 5, 6]
    assert await prune(queries, 30, NOW, published_only=True, subscribers=["crm"], batch=2) == 0


async def test_without_mqtt_or_a_configured_subscriber_only_deliveries_and_age_keep_events(db: Database) -> None:
    await _seed(db)
    # MQTT off (nothing is ever published) and the CRM's webhook removed from leadrouter.yaml: its
    # cursor no longer holds events, its dead delivery still does (it can be retried by name).
    assert await prune(SqlQueries(db), 30, NOW, published_only=False, subscribers=[], batch=4) == 4
    assert await _left(db) == [3, 6]


async def test_the_newest_event_stays_so_that_sqlite_never_hands_its_seq_out_again(db: Database) -> None:
    await _seed(db)
    assert await prune(SqlQueries(db), 0.5, NOW, published_only=False, subscribers=[]) == 4
    assert await _left(db) == [3, 6]  # 6 is due as well, but the newest
