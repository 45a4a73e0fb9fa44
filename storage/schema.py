"""The tables. Alembic migrations in storage/migrations create exactly these.

A table's columns carry the names of the attributes of the record it stores (router.model),
so storage.uow maps records to rows by these column lists and no other.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Dialect,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)

from router.model import CallState, Disposition, HistoryKind, LeadStatus, LegResult, Outcome


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, whatever the database keeps."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        value = value.astimezone(UTC)
        # SQLite has no time zones: keep UTC wall time, re-attach UTC on the way out.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    # The same two conversions on SQLite in one step each, for statements run on the sqlite3
    # connection itself (storage.uow._Direct): SQLAlchemy's path is this type's, then its SQLite
    # DATETIME's (the storage format below in, fromisoformat out), 3.4 µs a value against ~1.7 in
    # and ~0.3 out. tests/storage pins that both write the same text and read the same values.

    @staticmethod
    def to_sqlite(value: datetime | None) -> str | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        utc = value.astimezone(UTC)
        return _SQLITE_DATETIME % (utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond)

    @staticmethod
    def from_sqlite(value: str | None) -> datetime | None:
        if value is None:
            return None
        if len(value) == 26 and value[-6:].isdigit():  # that format: UTC wall time, no offset
            return datetime.fromisoformat(value + "+00:00")  # replace(tzinfo=UTC) costs 1.6 µs
        parsed = datetime.fromisoformat(value)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


# SQLAlchemy's storage format of a SQLite DATETIME (sqlalchemy.dialects.sqlite.DATETIME).
_SQLITE_DATETIME = "%04d-%02d-%02d %02d:%02d:%02d.%06d"


def _stored_as_value(members: type[enum.StrEnum]) -> Enum:
    """A domain enum kept as its value in a VARCHAR(16) and read back as the member."""
    return Enum(members, native_enum=False, length=16, values_callable=lambda kind: [member.value for member in kind])


# Integer ids autoincrement on both SQLite (INTEGER PRIMARY KEY) and PostgreSQL (BIGSERIAL).
_Id = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

leads = Table(
    "leads",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("phone", String(16), nullable=False),
    Column("name", String(200), nullable=False),
    Column("source", String(100), nullable=False),
    Column("external_id", String(200), nullable=True, unique=True),
    Column("payload", JSON, nullable=False),
    Column("status", _stored_as_value(LeadStatus), nullable=False),
    Column("owner_id", String(64), nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UtcDateTime, nullable=True),
    Column("last_disposition", _stored_as_value(Disposition), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=True),
    Column("outcome", _stored_as_value(Outcome), nullable=True),  # written by SqlOutcomes only
    Column("pbx_failures", Integer, nullable=False, server_default="0"),
    Column("backlog_rank", Float, nullable=False, server_default="0"),
    Column("sla_due_at", UtcDateTime, nullable=True),
    Column("final_state", String(64), nullable=True),
    Column("pbx", String(64), nullable=True),  # routing.yaml's scenario PBX: only its dialer claims the lead
    Index("ix_leads_due", "status", "next_attempt_at"),
    Index("ix_leads_phone", "phone"),
    # Each manager's open leads (capacity) are counted at start.
    Index("ix_leads_owner", "owner_id", "outcome"),
    # Supervisors' stats: the leads created in a period, whom they went to and how they ended.
    Index("ix_leads_created", "created_at", "owner_id", "outcome"),
    Index("ix_leads_sla", "sla_due_at"),
)

calls = Table(
    "calls",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("lead_id", _Id, ForeignKey("leads.id"), nullable=False, index=True),
    Column("attempt", Integer, nullable=False),
    Column("scenario", String(64), nullable=False),
    Column("channel_id", String(64), nullable=False, unique=True),
    Column("phone", String(16), nullable=False),
    Column("state", _stored_as_value(CallState), nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("answered_at", UtcDateTime, nullable=True),
    Column("bridged_at", UtcDateTime, nullable=True),
    Column("ended_at", UtcDateTime, nullable=True),
    Column("manager_id", String(64), nullable=True),
    Column("disposition", _stored_as_value(Disposition), nullable=True),
    Column("hangup_cause", Integer, nullable=True),
    Column("ring_seconds", Float, nullable=True),
    Column("hold_seconds", Float, nullable=True),
    Column("talk_seconds", Float, nullable=True),
    Column("total_seconds", Float, nullable=True),
    Column("recording_file", String(255), nullable=True),
    Column("recording_url", Text, nullable=True),
    Column("recording_deleted_at", UtcDateTime, nullable=True),  # by the retention job
    Column("pbx_billable_seconds", Integer, nullable=True),
    Column("pbx_failure", String(200), nullable=True),
    # The daemon steering the call (storage.cluster), not the domain's: no record attribute fills it.
    Column("daemon_id", String(64), nullable=True),
    Column("pbx", String(64), nullable=True),  # the PBX's name in leadrouter.yaml (several PBXes)
    # Supervisors' stats read talk time per manager over a period: keep it in the index.
    Index("ix_calls_stats", "started_at", "manager_id", "talk_seconds"),
    # ...and by when the talk began (storage.stats), with all the per-manager query reads.
    Index("ix_calls_talk", "bridged_at", "manager_id", "ended_at", "talk_seconds"),
)

call_legs = Table(
    "call_legs",
    metadata,
    Column("call_id", _Id, ForeignKey("calls.id"), primary_key=True),
    Column("leg_no", Integer, primary_key=True, autoincrement=False),  # 1, 2...: managers in the order tried
    Column("manager_id", String(64), nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("answered_at", UtcDateTime, nullable=True),
    Column("ended_at", UtcDateTime, nullable=True),
    Column("result", _stored_as_value(LegResult), nullable=True),
    # Offers per manager in a period (storage.stats).
    Index("ix_call_legs_offers", "started_at", "manager_id", "result"),
)

# Every outcome a CRM reported, as router.model.OutcomeReport; the latest per lead is in force.
lead_outcomes = Table(
    "lead_outcomes",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("lead_id", _Id, ForeignKey("leads.id"), nullable=False, index=True),
    Column("outcome", _stored_as_value(Outcome), nullable=False),
    Column("previous", _stored_as_value(Outcome), nullable=True),
    Column("reason", String(500), nullable=False),
    Column("author", String(200), nullable=False),
    Column("manager_id", String(64), nullable=True),
    Column("scenario", String(64), nullable=True),
    Column("at", UtcDateTime, nullable=False),
)

# What happened to a lead outside its calls (router.model.HistoryEntry): merged duplicates, SLA releases.
lead_history = Table(
    "lead_history",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("lead_id", _Id, ForeignKey("leads.id"), nullable=False, index=True),
    Column("kind", _stored_as_value(HistoryKind), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("details", JSON, nullable=False),
    Column("external_id", String(200), nullable=True, unique=True),
)

# Every change of a manager's state (router.events.ManagerStateChanged), for stats and so that a
# pause outlives a restart.
manager_states = Table(
    "manager_states",
    metadata,
    Column("seq", _Id, primary_key=True, autoincrement=True),
    Column("manager_id", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("previous_state", String(16), nullable=False),
    Column("reason", String(200), nullable=True),
    Column("paused", String(200), nullable=True),  # his pause's reason, also while a call shows over it
    Column("at", UtcDateTime, nullable=False),
    Index("ix_manager_states_manager", "manager_id", "seq"),
    Index("ix_manager_states_at", "at"),
    Index("ix_manager_states_manager_at", "manager_id", "at", "state"),
)

# What one daemon decided that every daemon on the database applies (storage.cluster.SharedChanges):
# managers paused and resumed, sessions logged out, routing.yaml edited. Written one at a time, so
# seq order is commit order and a daemon reads on from the last seq it applied.
cluster_changes = Table(
    "cluster_changes",
    metadata,
    Column("seq", _Id, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),  # pause, resume, logout, routing
    Column("subject", String(64), nullable=False),  # the manager's id, the session's nonce, the file
    Column("reason", String(200), nullable=True),  # a pause's
    Column("until", UtcDateTime, nullable=True),  # a logout's: the session's expiry
    Column("daemon_id", String(64), nullable=False),
    Column("at", UtcDateTime, nullable=False),
)

# A manager promised to a call before his phone rings, by the daemon steering it (storage.cluster).
manager_reservations = Table(
    "manager_reservations",
    metadata,
    Column("manager_id", String(64), primary_key=True),
    Column("call_id", _Id, nullable=False),
    Column("daemon_id", String(64), nullable=False),
    Column("reserved_at", UtcDateTime, nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("seq", _Id, primary_key=True, autoincrement=True),
    Column("id", String(36), nullable=False, unique=True),
    Column("type", String(32), nullable=False),
    Column("lead_id", _Id, nullable=True),  # null: an event about no lead (manager.changed)
    Column("payload", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("published_at", UtcDateTime, nullable=True),
    # A lead's timeline lists the events published about it.
    Index("ix_outbox_lead", "lead_id", "seq"),
)

# The live board reads the calls not ended yet: a handful among millions.
Index(
    "ix_calls_live",
    calls.c.id,
    sqlite_where=calls.c.ended_at.is_(None),
    postgresql_where=calls.c.ended_at.is_(None),
)

# The recordings' retention job reads ended calls whose recording is still kept, oldest first.
Index(
    "ix_calls_recordings_kept",
    calls.c.ended_at,
    sqlite_where=calls.c.recording_file.is_not(None) & calls.c.recording_deleted_at.is_(None),
    postgresql_where=calls.c.recording_file.is_not(None) & calls.c.recording_deleted_at.is_(None),
)

Index(
    "ix_outbox_pending",
    outbox.c.seq,
    sqlite_where=outbox.c.published_at.is_(None),
    postgresql_where=outbox.c.published_at.is_(None),
)

# Outgoing webhooks (events.webhooks): each subscriber's place in the outbox, and its events
# not delivered yet. A delivered event's row is deleted; the outbox keeps the event itself.
webhook_subscribers = Table(
    "webhook_subscribers",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("cursor", BigInteger, nullable=False),  # the last outbox seq taken into webhook_deliveries
    Column("created_at", UtcDateTime, nullable=False),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("subscriber", String(64), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),  # the outbox row's
    Column("lead_id", _Id, nullable=False),
    Column("state", String(16), nullable=False),  # pending or dead
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("first_failed_at", UtcDateTime, nullable=True),  # dead_after counts from here
    Column("last_error", String(500), nullable=True),
    Column("dead_at", UtcDateTime, nullable=True),
    # A lead's events in order: only the first one not delivered may be sent.
    Index("ix_webhook_deliveries_lead", "subscriber", "lead_id", "seq"),
)
