"""All SQL of sync: collections, records and the feed, idempotency, conflicts, events.

The hot paths are batched: a push loads every record it touches in one query and writes them in
one ``INSERT ... ON CONFLICT DO UPDATE`` (executemany); a pull is one indexed range query whose
JSON documents come back as text and are passed through without decoding.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    Table,
    Text,
    and_,
    bindparam,
    cast,
    exists,
    false,
    func,
    literal,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from homeport.kit.db import one_of
from homeport.kit.tenancy import (
    tenant_delete,
    tenant_select,
    tenant_select_columns,
    tenant_update,
    unscoped_delete,
    unscoped_select,
)
from homeport.models.sync import (
    Collection,
    IdempotentPush,
    SchemaChange,
    SyncConflict,
    SyncEvent,
    SyncRecord,
    SyncState,
)
from homeport.sync.cursor import START, FeedPoint

# A feed row: collection, record_id, version, deleted, updated_at, xid, position, data_json,
# owner_id, previous_owner_id.
FeedRow = Row[Any]


_FEED_COLUMNS = (
    SyncRecord.collection,
    SyncRecord.record_id,
    SyncRecord.version,
    SyncRecord.deleted,
    SyncRecord.updated_at,
    SyncRecord.xid,
    SyncRecord.position,
    cast(SyncRecord.data, Text).label("data_json"),
    SyncRecord.owner_id,
    SyncRecord.previous_owner_id,
)


# Built upsert statements by (PostgreSQL?, column names); a handful at most.
_UPSERTS: dict[tuple[bool, tuple[str, ...]], Any] = {}


# Statements of the write path built once (constructing them on each write cost more than
# running them for a one-record write; py-spy, W3).
_RECORDS_BY_ID = {
    dialect: tenant_select(SyncRecord, bindparam("tenant_id")).where(
        SyncRecord.collection == bindparam("collection"), ids_match
    )
    for dialect, ids_match in one_of(SyncRecord.record_id, "ids").items()
}
_SYNC_STATE = typing.cast(Table, SyncState.__table__)
# One statement: create the tenant's feed counter or bump it (Core, on the table: the ORM's
# bulk-insert machinery adds only time here).
_BUMP_FEED_COUNTER_SQLITE = (
    sqlite_insert(_SYNC_STATE)
    .values(
        tenant_id=bindparam("tenant_id"),
        last_position=bindparam("count"),
        compacted_xid=0,
        compacted_position=0,
    )
    .on_conflict_do_update(
        index_elements=["tenant_id"],
        set_={"last_position": _SYNC_STATE.c.last_position + bindparam("count")},
    )
    .returning(_SYNC_STATE.c.last_position)
)


class SyncRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def is_postgres(self) -> bool:
        return self.session.get_bind().dialect.name == "postgresql"

    def _insert(self) -> Any:
        return pg_insert if self.is_postgres else sqlite_insert

    # Collections

    async def list_collections(self, tenant_id: str) -> Sequence[Collection]:
        result = await self.session.execute(
            tenant_select(Collection, tenant_id).order_by(Collection.name)
        )
        return result.scalars().all()

    async def read_rules(self, tenant_id: str) -> dict[str, str]:
        """Each collection's read rule (the live fan-out checks scopes with it)."""
        result = await self.session.execute(
            tenant_select_columns(Collection, tenant_id, Collection.name, Collection.read_rule)
        )
        return {name: rule for name, rule in result.all()}

    async def get_collection(self, tenant_id: str, name: str) -> Collection | None:
        result = await self.session.execute(
            tenant_select(Collection, tenant_id).where(Collection.name == name)
        )
        return result.scalar_one_or_none()

    def add(self, row: object) -> None:
        self.session.add(row)

    async def flush(self) -> None:
        await self.session.flush()

    async def delete_collection(self, tenant_id: str, name: str) -> None:
        await self.session.execute(
            tenant_delete(SyncRecord, tenant_id).where(SyncRecord.collection == name)
        )
        await self.session.execute(
            tenant_delete(Collection, tenant_id).where(Collection.name == name)
        )

    async def count_records(self, tenant_id: str, collection: str) -> int:
        result = await self.session.execute(
            tenant_select_columns(SyncRecord, tenant_id, func.count()).where(
                SyncRecord.collection == collection
            )
        )
        return int(result.scalar_one())

    async def records_holding(
        self, tenant_id: str, collection: str, names: Sequence[str], after: str, limit: int
    ) -> Sequence[tuple[str, dict[str, Any]]]:
        """(id, data) of live records of ``collection`` whose data has one of ``names`` as a
        top-level field, by id after ``after``. The names are bound parameters, whatever they
        hold."""
        holds = [self._has_field(name) for name in names]
        result = await self.session.execute(
            tenant_select_columns(SyncRecord, tenant_id, SyncRecord.record_id, SyncRecord.data)
            .where(
                SyncRecord.collection == collection,
                SyncRecord.deleted == false(),
                SyncRecord.record_id > after,
                or_(*holds),
            )
            .order_by(SyncRecord.record_id)
            .limit(limit)
        )
        return [(row.record_id, row.data or {}) for row in result]

    def _has_field(self, name: str) -> ColumnElement[bool]:
        if self.is_postgres:
            return SyncRecord.data.op("?", return_type=Boolean)(bindparam(None, name, Text))
        keys = func.json_each(SyncRecord.data).table_valued("key")
        return exists(select(literal(1)).select_from(keys).where(keys.c.key == name))

    async def list_schema_changes(self, tenant_id: str, collection: str) -> Sequence[SchemaChange]:
        result = await self.session.execute(
            tenant_select(SchemaChange, tenant_id)
            .where(SchemaChange.collection == collection)
            .order_by(SchemaChange.created_at)
        )
        return result.scalars().all()

    # Records

    async def lock_records(self, tenant_id: str, keys: Iterable[tuple[str, str]]) -> None:
        """PostgreSQL: serialise concurrent writers of the same records until commit.

        Pushes decide on versions read under READ COMMITTED; without this, two pushes of one
        record could both be answered "applied" at the same version. Advisory locks also cover
        records that do not exist yet (nothing to row-lock). Taken in one statement, in key
        order, so two batches never wait on each other crosswise. SQLite has one writer.
        """
        if not self.is_postgres:
            return
        names = sorted({f"{tenant_id}/{collection}/{record_id}" for collection, record_id in keys})
        if names:
            await self.session.execute(
                text(
                    # Volatile target-list calls run after the sort: locks in key order.
                    "SELECT pg_advisory_xact_lock(key) FROM "
                    "(SELECT DISTINCT hashtextextended(name, 0) AS key "
                    "FROM unnest(CAST(:names AS text[])) AS name) AS keys ORDER BY key"
                ),
                {"names": names},
            )

    async def load_records(
        self, tenant_id: str, keys: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], SyncRecord]:
        """The current rows of the given (collection, id) pairs: one primary-key range query
        per collection and chunk of ids."""
        by_collection: dict[str, set[str]] = {}
        for collection, record_id in keys:
            by_collection.setdefault(collection, set()).add(record_id)
        found: dict[tuple[str, str], SyncRecord] = {}
        for collection, id_set in by_collection.items():
            ids = sorted(id_set)
            # Bounded IN lists keep every statement under the drivers' parameter limits.
            for start in range(0, len(ids), 900):
                chunk = ids[start : start + 900]
                result = await self.session.execute(
                    _RECORDS_BY_ID[self.session.get_bind().dialect.name],
                    {"tenant_id": tenant_id, "collection": collection, "ids": chunk},
                )
                for row in result.scalars():
                    found[(row.collection, row.record_id)] = row
        return found

    async def allocate_feed_points(self, tenant_id: str, count: int) -> tuple[int, list[int]]:
        """``count`` feed positions for this transaction, and its xid (0 on SQLite).

        SQLite has one writer, so a per-tenant counter bumped inside the write transaction gives
        positions in commit order. PostgreSQL uses the transaction id for order and a sequence
        for uniqueness.
        """
        if self.is_postgres:
            xid = (
                await self.session.execute(text("SELECT pg_current_xact_id()::text::bigint"))
            ).scalar_one()
            positions = (
                await self.session.execute(
                    text("SELECT nextval('sync_feed_position') FROM generate_series(1, :n)"),
                    {"n": count},
                )
            ).scalars()
            return int(xid), sorted(int(position) for position in positions)
        last = (
            await self.session.execute(
                _BUMP_FEED_COUNTER_SQLITE, {"tenant_id": tenant_id, "count": count}
            )
        ).scalar_one()
        return 0, list(range(int(last) - count + 1, int(last) + 1))

    async def write_records(self, rows: list[dict[str, Any]]) -> None:
        """Insert or replace whole records (one executemany)."""
        if not rows:
            return
        await self.session.execute(self._upsert_records(tuple(rows[0])), rows)

    def _upsert_records(self, names: tuple[str, ...]) -> Any:
        """The records upsert, built once per dialect and column list: building ``excluded``
        costs more than running the statement for a write of one record."""
        key = (self.is_postgres, names)
        statement = _UPSERTS.get(key)
        if statement is None:
            # Core insert on the table: the ORM's bulk machinery adds nothing here but time.
            insert = self._insert()(SyncRecord.__table__)
            columns = [
                name for name in names if name not in ("tenant_id", "collection", "record_id")
            ]
            statement = insert.on_conflict_do_update(
                index_elements=["tenant_id", "collection", "record_id"],
                set_={name: insert.excluded[name] for name in columns},
            )
            _UPSERTS[key] = statement
        return statement

    async def latest_point(self, tenant_id: str) -> FeedPoint:
        result = await self.session.execute(
            tenant_select_columns(SyncRecord, tenant_id, SyncRecord.xid, SyncRecord.position)
            .order_by(SyncRecord.xid.desc(), SyncRecord.position.desc())
            .limit(1)
        )
        row = result.first()
        return START if row is None else FeedPoint(int(row[0]), int(row[1]))

    async def compacted_point(self, tenant_id: str) -> FeedPoint:
        result = await self.session.execute(
            tenant_select_columns(
                SyncState, tenant_id, SyncState.compacted_xid, SyncState.compacted_position
            )
        )
        row = result.first()
        return START if row is None else FeedPoint(int(row[0]), int(row[1]))

    async def read_feed(
        self,
        tenant_id: str,
        after: FeedPoint,
        limit: int,
        all_of: Sequence[str],
        own_of: Sequence[str],
        user_id: str | None,
    ) -> Sequence[FeedRow]:
        """Changes after ``after`` in feed order, only in the caller's scope."""
        scope: list[ColumnElement[bool]] = []
        if all_of:
            scope.append(SyncRecord.collection.in_(all_of))
        if own_of and user_id is not None:
            # Records the user owns, and those taken away from them (served as deletions).
            mine = or_(SyncRecord.owner_id == user_id, SyncRecord.previous_owner_id == user_id)
            scope.append(and_(SyncRecord.collection.in_(own_of), mine))
        query = (
            tenant_select_columns(SyncRecord, tenant_id, *_FEED_COLUMNS)
            .where(
                tuple_(SyncRecord.xid, SyncRecord.position) > tuple_(after.xid, after.position),
                or_(*scope) if scope else false(),
            )
            .order_by(SyncRecord.xid, SyncRecord.position)
            .limit(limit)
        )
        if self.is_postgres:
            # Only transactions that can no longer commit below this point (gapless feed).
            horizon = cast(
                cast(func.pg_snapshot_xmin(func.pg_current_snapshot()), Text), BigInteger
            )
            query = query.where(SyncRecord.xid < horizon)
        # Core execution: column rows, none of the ORM's per-row work (a page is thousands).
        connection = await self.session.connection()
        rows: Sequence[FeedRow] = (await connection.execute(query)).all()
        return rows

    async def live_records_until(
        self, tenant_id: str, collection: str, until: FeedPoint
    ) -> Sequence[FeedRow]:
        """The collection's live records at or before ``until`` (what a device holding that
        cursor may have), as feed rows."""
        connection = await self.session.connection()
        query = tenant_select_columns(SyncRecord, tenant_id, *_FEED_COLUMNS).where(
            SyncRecord.collection == collection,
            SyncRecord.deleted.is_(False),
            tuple_(SyncRecord.xid, SyncRecord.position) <= tuple_(until.xid, until.position),
        )
        rows: Sequence[FeedRow] = (await connection.execute(query)).all()
        return rows

    # Tombstone compaction

    async def compact_tombstones(self, before: datetime) -> int:
        """Remove tombstones older than ``before`` and move each tenant's horizon past them."""
        horizons = await self.session.execute(
            unscoped_select(SyncRecord, reason="maintenance over every tenant")
            .with_only_columns(SyncRecord.tenant_id, func.max(SyncRecord.xid), func.count())
            .where(SyncRecord.deleted.is_(True), SyncRecord.updated_at < before)
            .group_by(SyncRecord.tenant_id)
        )
        removed = 0
        for tenant_id, max_xid, count in horizons.all():
            position = (
                await self.session.execute(
                    tenant_select_columns(
                        SyncRecord, tenant_id, func.max(SyncRecord.position)
                    ).where(
                        SyncRecord.deleted.is_(True),
                        SyncRecord.updated_at < before,
                        SyncRecord.xid == max_xid,
                    )
                )
            ).scalar_one()
            await self.session.execute(
                self._insert()(SyncState)
                .values(tenant_id=tenant_id, last_position=0, compacted_xid=0, compacted_position=0)
                .on_conflict_do_nothing()
            )
            current = await self.compacted_point(tenant_id)
            point = max(current, FeedPoint(int(max_xid), int(position)))
            await self.session.execute(
                tenant_update(SyncState, tenant_id).values(
                    compacted_xid=point.xid, compacted_position=point.position
                )
            )
            await self.session.execute(
                tenant_delete(SyncRecord, tenant_id).where(
                    SyncRecord.deleted.is_(True), SyncRecord.updated_at < before
                )
            )
            removed += int(count)
        return removed

    # Idempotency

    async def claim_idempotency_key(
        self,
        tenant_id: str,
        device_id: str,
        key: str,
        request_hash: str,
        now: datetime,
        expires_at: datetime,
    ) -> bool:
        """Reserve the key for this push; False when another push holds it (the caller then
        reads it). On PostgreSQL a concurrent push with the same key waits here until the
        first one commits."""
        statement = (
            self._insert()(IdempotentPush)
            .values(
                tenant_id=tenant_id,
                device_id=device_id,
                idempotency_key=key,
                request_hash=request_hash,
                response="",
                created_at=now,
                expires_at=expires_at,
            )
            .on_conflict_do_nothing()
        )
        result = await self.session.execute(statement)
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def get_idempotent_push(
        self, tenant_id: str, device_id: str, key: str
    ) -> IdempotentPush | None:
        result = await self.session.execute(
            tenant_select(IdempotentPush, tenant_id).where(
                IdempotentPush.device_id == device_id, IdempotentPush.idempotency_key == key
            )
        )
        return result.scalar_one_or_none()

    async def reset_idempotency_key(
        self,
        tenant_id: str,
        device_id: str,
        key: str,
        request_hash: str,
        now: datetime,
        expires_at: datetime,
    ) -> None:
        await self.session.execute(
            tenant_update(IdempotentPush, tenant_id)
            .where(IdempotentPush.device_id == device_id, IdempotentPush.idempotency_key == key)
            .values(request_hash=request_hash, response="", created_at=now, expires_at=expires_at)
        )

    async def store_idempotent_answer(
        self, tenant_id: str, device_id: str, key: str, response: str
    ) -> None:
        await self.session.execute(
            tenant_update(IdempotentPush, tenant_id)
            .where(IdempotentPush.device_id == device_id, IdempotentPush.idempotency_key == key)
            .values(response=response)
        )

    async def delete_expired_idempotency(self, now: datetime) -> int:
        result = await self.session.execute(
            unscoped_delete(IdempotentPush, reason="expiry over every tenant").where(
                IdempotentPush.expires_at < now
            )
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    # Conflicts

    async def add_conflicts(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            await self.session.execute(self._insert()(SyncConflict), rows)

    async def get_conflict(self, tenant_id: str, conflict_id: str) -> SyncConflict | None:
        result = await self.session.execute(
            tenant_select(SyncConflict, tenant_id).where(SyncConflict.id == conflict_id)
        )
        return result.scalar_one_or_none()

    async def list_conflicts(
        self, tenant_id: str, collection: str | None, since: datetime | None, limit: int
    ) -> tuple[Sequence[SyncConflict], int]:
        query = tenant_select(SyncConflict, tenant_id)
        count = tenant_select_columns(SyncConflict, tenant_id, func.count())
        if collection is not None:
            query = query.where(SyncConflict.collection == collection)
            count = count.where(SyncConflict.collection == collection)
        if since is not None:
            query = query.where(SyncConflict.created_at >= since)
            count = count.where(SyncConflict.created_at >= since)
        rows = await self.session.execute(
            query.order_by(SyncConflict.created_at.desc()).limit(limit)
        )
        total = (await self.session.execute(count)).scalar_one()
        return rows.scalars().all(), int(total)

    # Events

    def add_event(self, event: SyncEvent) -> None:
        self.session.add(event)

    async def pushed_items(
        self, tenant_id: str, since: datetime | None, collection: str | None = None
    ) -> int:
        """Items pushed in the period (the denominator of the conflict rate)."""
        query = tenant_select_columns(
            SyncEvent, tenant_id, func.coalesce(func.sum(SyncEvent.items), 0)
        ).where(SyncEvent.kind == "push")
        if collection is not None:
            query = query.where(SyncEvent.collection == collection)
        if since is not None:
            query = query.where(SyncEvent.created_at >= since)
        return int((await self.session.execute(query)).scalar_one())
