"""All SQL of the records API: one record, and list pages with filters, sort and keyset.

Filters and sort keys read the JSON data as ``json_extract(data, '$.f')`` on SQLite and
``data -> 'f'`` (JSONB) on PostgreSQL. A filter on a field the collection indexes (see
:mod:`homeport.records.indexes`) also names the tenant and the collection as literals, the
condition of that field's partial index, and on PostgreSQL compares the index's bounded key
too. Field names reach the SQL text only after the query parser checked them against the
collection schema and :func:`field_path` against a strict pattern; every value of a filter is a
bound parameter.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Select,
    String,
    Subquery,
    Text,
    and_,
    bindparam,
    cast,
    exists,
    false,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from homeport.kit.tenancy import tenant_select, tenant_select_columns
from homeport.models.sync import Collection, SyncRecord
from homeport.records.cursor import Position
from homeport.records.indexes import OVERSIZED_KEY, field_path, indexed_value
from homeport.records.query import Filter, ListQuery, Sort

# id, version, owner_id, created_at, updated_at, data_json (, sort_key on list pages)
RecordRow = Row[Any]

_RECORD_COLUMNS = (
    SyncRecord.record_id,
    SyncRecord.version,
    SyncRecord.owner_id,
    SyncRecord.created_at,
    SyncRecord.updated_at,
    cast(SyncRecord.data, Text).label("data_json"),
)
# json_type (SQLite) / jsonb_typeof (PostgreSQL) names of the values a filter compares with.
_SQLITE_TYPES = {bool: ("true", "false"), int: ("integer", "real"), str: ("text",)}
_PG_TYPES = {bool: ("boolean",), int: ("number",), str: ("string",)}


def _type_of(value: Any) -> type:
    if isinstance(value, bool):
        return bool
    return int if isinstance(value, int | float) else str


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# Every request on a collection looks it up: built once (see sync/repository.py).
_COLLECTION_BY_NAME = tenant_select(Collection, bindparam("tenant_id")).where(
    Collection.name == bindparam("name")
)


class _Dialect(ABC):
    """The JSON expressions of one database."""

    @abstractmethod
    def value(self, field: str) -> ColumnElement[Any]: ...

    @abstractmethod
    def json_type(self, field: str) -> ColumnElement[Any]: ...

    @abstractmethod
    def bind(self, value: Any) -> ColumnElement[Any]: ...

    @abstractmethod
    def types(self, value: Any) -> tuple[str, ...]: ...

    @abstractmethod
    def is_null(self, field: str) -> ColumnElement[bool]: ...

    @abstractmethod
    def contains_text(self, field: str, text: str) -> ColumnElement[bool]: ...

    @abstractmethod
    def contains_element(self, field: str, element: Any) -> ColumnElement[bool]: ...

    def index_key(
        self, field: str, op: str, bounds: list[ColumnElement[Any]]
    ) -> ColumnElement[bool] | None:
        """What the field's index must match for ``value <op> bound`` (implied by it, so
        adding it changes no answer), when the index key is not the value itself."""
        return None

    def compare(self, flt: Filter, *, indexed: bool = False) -> ColumnElement[bool]:
        """The filter as a condition that is never NULL. ``indexed``: the field has an index."""
        if flt.op == "ne":  # no index serves a negation: no index key to compare
            return not_(func.coalesce(self._positive(flt, "eq", False), false()))
        return self._positive(flt, flt.op, indexed)

    def _positive(self, flt: Filter, op: str, indexed: bool) -> ColumnElement[bool]:
        field, value = flt.field, flt.value
        if op == "contains":
            if flt.kind.value == "array":
                return self.contains_element(field, value)
            return self.contains_text(field, str(value))
        if op == "eq" and value is None:
            return self.is_null(field)
        values = value if op == "in" else (value,)
        alternatives = []
        for each_type in dict.fromkeys(_type_of(v) for v in values if v is not None):
            typed = [v for v in values if v is not None and _type_of(v) is each_type]
            names = sorted({name for v in typed for name in self.types(v)})
            guard = self.json_type(field).in_(names)
            expression = self.value(field)
            bounds = [self.bind(v) for v in typed] if op == "in" else [self.bind(value)]
            condition = _compared(expression, op, bounds)
            key = self.index_key(field, op, bounds) if indexed else None
            alternatives.append(
                and_(guard, condition) if key is None else and_(guard, key, condition)
            )
        if op == "in" and None in values:
            alternatives.append(self.is_null(field))
        return or_(*alternatives) if alternatives else false()


def _compared(
    expression: ColumnElement[Any], op: str, bounds: list[ColumnElement[Any]]
) -> ColumnElement[bool]:
    if op == "in":
        return expression.in_(bounds)
    (bound,) = bounds
    comparisons: dict[str, ColumnElement[bool]] = {
        "eq": expression == bound,
        "lt": expression < bound,
        "lte": expression <= bound,
        "gt": expression > bound,
        "gte": expression >= bound,
    }
    return comparisons[op]


class _SQLite(_Dialect):
    def _path(self, field: str) -> Any:
        return literal_column(f"'$.{field_path(field)}'")

    def value(self, field: str) -> ColumnElement[Any]:
        return func.json_extract(SyncRecord.data, self._path(field))

    def json_type(self, field: str) -> ColumnElement[Any]:
        return func.json_type(SyncRecord.data, self._path(field))

    def bind(self, value: Any) -> ColumnElement[Any]:
        # json_extract gives JSON booleans as 1 and 0.
        return literal(int(value) if isinstance(value, bool) else value)

    def types(self, value: Any) -> tuple[str, ...]:
        if isinstance(value, bool):
            return ("true",) if value else ("false",)
        return _SQLITE_TYPES[_type_of(value)]

    def is_null(self, field: str) -> ColumnElement[bool]:
        return self.value(field).is_(None)

    def contains_text(self, field: str, text: str) -> ColumnElement[bool]:
        # LIKE is case-insensitive for ASCII in SQLite (ILIKE on PostgreSQL).
        return and_(
            self.json_type(field) == "text",
            self.value(field).like(_like_pattern(text), escape="\\"),
        )

    def contains_element(self, field: str, element: Any) -> ColumnElement[bool]:
        elements = func.json_each(SyncRecord.data, self._path(field)).table_valued("value", "type")
        wanted = elements.c.type.in_(self.types(element))
        return exists(
            select(literal(1))
            .select_from(elements)
            .where(wanted, elements.c.value == self.bind(element))
        )


class _Postgres(_Dialect):
    def _key(self, field: str) -> Any:
        return literal_column(f"'{field_path(field)}'")

    def value(self, field: str) -> ColumnElement[Any]:
        return SyncRecord.data.op("->", return_type=JSONB)(self._key(field))

    def json_type(self, field: str) -> ColumnElement[Any]:
        return func.jsonb_typeof(self.value(field))

    def bind(self, value: Any) -> ColumnElement[Any]:
        return cast(literal(json.dumps(value), Text), JSONB)

    def index_key(
        self, field: str, op: str, bounds: list[ColumnElement[Any]]
    ) -> ColumnElement[bool] | None:
        # The index holds the value, or OVERSIZED_KEY for a long one: a value matching the
        # filter has a key matching it too, or that one. The text is the index's own
        # expression, constants inlined, so the planner recognises it.
        key = literal_column(indexed_value(field, "postgresql", "sync_records.data"), JSONB)
        oversized = literal_column(f"'{OVERSIZED_KEY}'::jsonb", JSONB)
        if op in ("eq", "in"):
            return key.in_([*bounds, oversized])
        if op in ("gt", "gte"):
            # A JSON object sorts after every scalar (and the bounds are scalars): the range
            # holds OVERSIZED_KEY already.
            return _compared(key, op, bounds)
        return or_(_compared(key, op, bounds), key == oversized)

    def types(self, value: Any) -> tuple[str, ...]:
        return _PG_TYPES[_type_of(value)]

    def is_null(self, field: str) -> ColumnElement[bool]:
        return func.coalesce(self.json_type(field), "null") == "null"

    def contains_text(self, field: str, text: str) -> ColumnElement[bool]:
        as_text = SyncRecord.data.op("->>", return_type=Text)(self._key(field))
        return and_(
            self.json_type(field) == "string",
            as_text.ilike(_like_pattern(text), escape="\\"),
        )

    def contains_element(self, field: str, element: Any) -> ColumnElement[bool]:
        return and_(
            self.json_type(field) == "array",
            self.value(field).op("@>", return_type=JSONB)(self.bind([element])),
        )


class RecordRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        postgres = session.get_bind().dialect.name == "postgresql"
        self._dialect: _Dialect = _Postgres() if postgres else _SQLite()

    async def get_collection(self, tenant_id: str, name: str) -> Collection | None:
        result = await self.session.execute(
            _COLLECTION_BY_NAME, {"tenant_id": tenant_id, "name": name}
        )
        return result.scalar_one_or_none()

    async def get_record(self, tenant_id: str, collection: str, record_id: str) -> RecordRow | None:
        """The live record (not a tombstone), with its data as JSON text."""
        connection = await self.session.connection()
        query = tenant_select_columns(SyncRecord, tenant_id, *_RECORD_COLUMNS).where(
            SyncRecord.collection == collection,
            SyncRecord.record_id == record_id,
            SyncRecord.deleted.is_(False),
        )
        row: RecordRow | None = (await connection.execute(query)).first()
        return row

    def _sort_expression(self, sort: Sort, ranked: Subquery | None) -> Any:
        if sort.key == "rank":
            assert ranked is not None
            return ranked.c.rank
        if sort.key == "id":
            return SyncRecord.record_id
        if sort.key == "created_at":
            return SyncRecord.created_at
        if sort.key == "updated_at":
            return SyncRecord.updated_at
        return self._dialect.value(sort.key)

    def _after(
        self, sort: Sort, key: ColumnElement[Any], position: Position
    ) -> ColumnElement[bool]:
        """Rows after ``position`` in the order ``key`` (NULLs first) then id, or its reverse."""
        record_id = SyncRecord.record_id
        if sort.key == "id":
            return (
                record_id < position.record_id
                if sort.descending
                else record_id > position.record_id
            )
        if position.null_key:
            if sort.descending:
                return and_(key.is_(None), record_id < position.record_id)
            return or_(and_(key.is_(None), record_id > position.record_id), key.is_not(None))
        bound = self._bind_key(sort, position.key)
        if sort.descending:
            return or_(
                key < bound, and_(key == bound, record_id < position.record_id), key.is_(None)
            )
        return or_(key > bound, and_(key == bound, record_id > position.record_id))

    def _bind_key(self, sort: Sort, value: Any) -> ColumnElement[Any]:
        if sort.key in ("created_at", "updated_at"):
            column = SyncRecord.created_at if sort.key == "created_at" else SyncRecord.updated_at
            return literal(datetime.fromisoformat(str(value)), column.type)
        if sort.key == "rank":
            return literal(float(value))
        return self._dialect.bind(value)

    def list_query(
        self,
        tenant_id: str,
        collection: str,
        query: ListQuery,
        *,
        owner_id: str | None,
        after: Position | None,
        ranked: Subquery | None,
        indexed: Sequence[str] = (),
    ) -> Select[Any]:
        """The page's query. ``indexed``: the fields the collection declares indexes on."""
        key = self._sort_expression(query.sort, ranked)
        uses_index = any(f.field in indexed for f in query.filters)
        # A field's index is partial to this tenant and collection: the query names them as
        # literals, as its condition does, so that the planner can prove it (a bound
        # parameter may be planned for any value).
        tenant: str | BindParameter[str] = tenant_id
        name: str | BindParameter[str] = collection
        if uses_index:
            tenant = literal(tenant_id, String, literal_execute=True)
            name = literal(collection, String, literal_execute=True)
        statement = tenant_select_columns(
            SyncRecord,
            tenant,
            *_RECORD_COLUMNS,
            key.label("sort_key"),
            key.is_(None).label("sort_null"),
        ).where(SyncRecord.collection == name, SyncRecord.deleted.is_(False))
        if ranked is not None:
            statement = statement.join(ranked, ranked.c.record_id == SyncRecord.record_id)
        if owner_id is not None:
            statement = statement.where(SyncRecord.owner_id == owner_id)
        for flt in query.filters:
            statement = statement.where(self._dialect.compare(flt, indexed=flt.field in indexed))
        if after is not None:
            statement = statement.where(self._after(query.sort, key, after))
        if query.sort.descending:
            order = [key.desc().nulls_last(), SyncRecord.record_id.desc()]
        else:
            order = [key.asc().nulls_first(), SyncRecord.record_id.asc()]
        if query.sort.key == "id":
            order = order[1:]
            if isinstance(self._dialect, _SQLite) and uses_index:
                # Without statistics SQLite walks the primary key in id order (no sort) rather
                # than use a field index; a unary + keeps the key from serving the ORDER BY, so
                # the (selective) field index is used and the page is sorted.
                direction = "DESC" if query.sort.descending else "ASC"
                order = [literal_column(f"+sync_records.record_id {direction}")]
        return statement.order_by(*order).limit(query.limit + 1)

    async def list_records(self, statement: Select[Any]) -> Sequence[RecordRow]:
        # Core execution: a page is up to a thousand rows, the ORM adds only time.
        connection = await self.session.connection()
        rows: Sequence[RecordRow] = (await connection.execute(statement)).all()
        return rows
