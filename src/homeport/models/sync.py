"""Sync: collections, records (which are also the change feed), idempotency, conflicts.

The feed is the ``sync_records`` table itself: every write re-stamps the record with a new
``(xid, position)``, so a pull reads each changed record once, in its latest state.
- SQLite: ``xid`` is 0 and ``position`` comes from the tenant's counter in ``sync_state``,
  assigned inside the (single) write transaction, so commit order is feed order.
- PostgreSQL: ``xid`` is ``pg_current_xact_id()`` of the writing transaction and ``position``
  comes from a sequence; readers serve only ``xid < pg_snapshot_xmin(pg_current_snapshot())``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from homeport.kit.db import Base, UTCDateTime

JSONDocument = JSON().with_variant(JSONB(), "postgresql")
# A feed position; SQLite only auto-increments INTEGER, so keep BigInteger a plain integer there.
FeedNumber = BigInteger().with_variant(Integer(), "sqlite")


class Collection(Base):
    __tablename__ = "sync_collections"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    name: Mapped[str] = mapped_column(String(63))
    id_field: Mapped[str] = mapped_column(String(63), default="id")
    owner_field: Mapped[str | None] = mapped_column(String(63), nullable=True)
    json_schema: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    read_rule: Mapped[str] = mapped_column(String(40), default="owner")
    write_rule: Mapped[str] = mapped_column(String(40), default="owner")
    conflict_policy: Mapped[str] = mapped_column(String(20), default="server_wins")
    auto_resolve: Mapped[bool] = mapped_column(Boolean, default=True)
    notify_on_conflict: Mapped[bool] = mapped_column(Boolean, default=False)
    schema_version: Mapped[int] = mapped_column(Integer, default=1)
    # Records REST API options: lists of top-level field names of the schema.
    sortable: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    indexes: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    searchable: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    facets: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SchemaChange(Base):
    """A collection schema change that was not additive and was forced (the audit trail)."""

    __tablename__ = "sync_schema_changes"
    __table_args__ = (Index("ix_sync_schema_changes_tenant", "tenant_id", "collection"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    collection: Mapped[str] = mapped_column(String(63))
    from_version: Mapped[int] = mapped_column(Integer)
    to_version: Mapped[int] = mapped_column(Integer)
    breaking: Mapped[list[str]] = mapped_column(JSON)
    old_schema: Mapped[dict[str, Any]] = mapped_column(JSON)
    new_schema: Mapped[dict[str, Any]] = mapped_column(JSON)
    actor: Mapped[str | None] = mapped_column(String(254), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SyncRecord(Base):
    __tablename__ = "sync_records"
    __table_args__ = (
        Index("ix_sync_records_feed", "tenant_id", "xid", "position"),
        Index("ix_sync_records_tombstones", "deleted", "updated_at"),
    )

    tenant_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    collection: Mapped[str] = mapped_column(String(63), primary_key=True)
    record_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    owner_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    # The owner before the last change of owner: their devices learn the record left them.
    previous_owner_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument, nullable=True)
    version: Mapped[int] = mapped_column(Integer)
    field_hlc: Mapped[dict[str, str]] = mapped_column(JSON)
    hlc: Mapped[str] = mapped_column(String(300))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    content_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    xid: Mapped[int] = mapped_column(FeedNumber)
    position: Mapped[int] = mapped_column(FeedNumber)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SyncState(Base):
    """Per tenant: the SQLite feed counter and how far tombstones were compacted."""

    __tablename__ = "sync_state"

    tenant_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    last_position: Mapped[int] = mapped_column(FeedNumber, default=0)
    compacted_xid: Mapped[int] = mapped_column(FeedNumber, default=0)
    compacted_position: Mapped[int] = mapped_column(FeedNumber, default=0)


class IdempotentPush(Base):
    """The stored answer of a push, per device and key (a replay gets it back)."""

    __tablename__ = "sync_idempotency"
    __table_args__ = (Index("ix_sync_idempotency_expires", "expires_at"),)

    tenant_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    response: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SyncConflict(Base):
    __tablename__ = "sync_conflicts"
    __table_args__ = (Index("ix_sync_conflicts_tenant", "tenant_id", "collection", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    collection: Mapped[str] = mapped_column(String(63))
    record_id: Mapped[str] = mapped_column(String(200))
    device_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    user_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    op: Mapped[str] = mapped_column(String(10))
    server_side: Mapped[dict[str, Any]] = mapped_column(JSON)
    client_side: Mapped[dict[str, Any]] = mapped_column(JSON)
    strategy: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(12))
    winner: Mapped[str | None] = mapped_column(String(10), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    resolved_by: Mapped[str | None] = mapped_column(String(36), nullable=True)


class SyncEvent(Base):
    """One push or pull of one device (for the sync health endpoints)."""

    __tablename__ = "sync_events"
    __table_args__ = (Index("ix_sync_events_tenant_time", "tenant_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    device_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    user_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    kind: Mapped[str] = mapped_column(String(10))
    # A push is recorded once per collection it touched (same duration on each row).
    collection: Mapped[str | None] = mapped_column(String(63), nullable=True)
    duration_ms: Mapped[float] = mapped_column()
    items: Mapped[int] = mapped_column(Integer)
    conflicts: Mapped[int] = mapped_column(Integer)
    failures: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
