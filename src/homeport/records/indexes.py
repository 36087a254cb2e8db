"""Expression indexes on record fields that collections declare under ``indexes``.

Each index belongs to one (tenant, collection, field): a partial index on the field's value
whose condition names the tenant and the collection as literals,
``WHERE tenant_id = '<tenant>' AND collection = '<name>'``. Rows of other tenants and of other
collections are not in it, so one tenant's declaration never costs (or fails) another's write.
The list query of :mod:`homeport.records.repository` names the tenant and collection as the
same literals when it filters on an indexed field, which is what lets the planner prove the
condition (with bound parameters PostgreSQL may settle on a generic plan that cannot).

The indexed expression is the one the list query filters on: ``json_extract(data, '$.f')`` on
SQLite; on PostgreSQL ``data -> 'f'`` bounded by :data:`INDEXED_BYTES`: a btree entry holds at
most 2704 bytes, so a value whose text (``data ->> 'f'``: a string's own, another value's JSON)
is longer is indexed under the one key :data:`OVERSIZED_KEY` instead. A filter then reads the
index for its own keys and for that one (see ``_Postgres.index_key`` in the repository) and
compares the full value as well, so answers stay exact and no value, however large, makes a
write or a declaration fail. (512 bytes of JSON text are at most about 2 kB as JSONB, nested
arrays of small numbers being the densest case.)

**A budget for the whole database.** Every write to ``sync_records`` pays for every partial
index of the table, whoever declared it: the database checks each index's condition for each
row (and PostgreSQL opens and locks each one per statement). Measured per inserted row (500 a
statement): SQLite 8 µs with none, 14 µs with 32, 46 µs with 128, 2.1 ms with 1,000;
PostgreSQL 20, 54, 161 µs and 1.4 ms. So at most ``budget`` field indexes exist
(``HOMEPORT_RECORDS_MAX_FIELD_INDEXES``): those that exist stay, then the oldest declarations
get theirs. A declaration beyond it is kept and its filters and sorts answer the same, by
reading the collection (its rows are contiguous in the primary key) instead of an index.

Reconciling, not creating: :meth:`FieldIndexRepository.ensure` compares the field indexes that
exist with those the declarations in ``sync_collections`` call for (this transaction's own
changes included), drops the ones no declaration wants (a field taken out of ``indexes``, a
deleted or re-declared collection, the shared indexes of before migration 0007) and creates the
missing ones. It reads every tenant's declarations (one deliberate unscoped query): the indexes
are DDL objects of one shared table, and any leftover (a declaration of before migration 0007,
or one removed by an older version) is seen only against all of them. In steady state it
finds nothing to do.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from homeport.kit.logging import get_logger
from homeport.kit.tenancy import unscoped_select
from homeport.models.sync import Collection

log = get_logger("homeport.records")

# Field names are validated by the collection schemas; this is a second guard, since the name
# ends up in DDL as a literal.
_SAFE_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# What this module creates; and the one index per field name, shared by every tenant and
# collection, that it created before (migration 0007 drops those).
INDEX_PREFIX = "ix_sync_records_f_"
LEGACY_PREFIX = "ix_sync_records_field_"
_OUR_NAME = re.compile(r"^ix_sync_records_(f|field)_[0-9a-f]{12,40}$")
# Part of every name: a change to what an index holds gets new names, so existing databases
# drop the old indexes and build the new ones on the next declaration.
_DEFINITION = "v1"
# PostgreSQL: values whose JSON text is longer are indexed under OVERSIZED_KEY.
INDEXED_BYTES = 512
OVERSIZED_KEY = '{"homeport:oversized": true}'


def index_name(tenant_id: str, collection: str, field: str) -> str:
    """A stable name within PostgreSQL's 63 bytes (42 characters), whatever the lengths."""
    key = "\x00".join((_DEFINITION, tenant_id, collection, field))
    return f"{INDEX_PREFIX}{hashlib.sha256(key.encode()).hexdigest()[:24]}"


def field_path(field: str) -> str:
    """The field as a literal safe to embed in SQL (it is checked against a strict pattern)."""
    if not _SAFE_FIELD.match(field):
        raise ValueError(f"not a field name: {field!r}")
    return field


def sql_literal(value: str) -> str:
    """``value`` as a SQL string literal (standard quoting, the same on both databases)."""
    if "\x00" in value:
        raise ValueError("a SQL literal cannot hold NUL")
    return "'" + value.replace("'", "''") + "'"


def scope_condition(tenant_id: str, collection: str) -> str:
    """The condition of the partial indexes of one tenant's collection."""
    return f"tenant_id = {sql_literal(tenant_id)} AND collection = {sql_literal(collection)}"


def indexed_value(field: str, dialect: str, data: str = "data") -> str:
    """The indexed expression of ``field`` (``data``: how the query names the column).

    PostgreSQL: ``data -> 'f'``, or :data:`OVERSIZED_KEY` when the value's text is longer than
    :data:`INDEXED_BYTES` (a missing field stays NULL). The list query uses this very text, so
    the planner matches it with the index.
    """
    name = field_path(field)
    if dialect == "postgresql":
        return (
            f"CASE WHEN octet_length({data} ->> '{name}') > {INDEXED_BYTES} "
            f"THEN '{OVERSIZED_KEY}'::jsonb ELSE {data} -> '{name}' END"
        )
    return f"json_extract({data}, '$.{name}')"


def create_statement(dialect: str, tenant_id: str, collection: str, field: str) -> str:
    value = indexed_value(field, dialect)
    if dialect == "postgresql":
        value = f"({value})"  # an expression other than a function call needs parentheses
    return (
        f"CREATE INDEX IF NOT EXISTS {index_name(tenant_id, collection, field)} "
        f"ON sync_records ({value}) WHERE {scope_condition(tenant_id, collection)}"
    )


def wanted_indexes(
    dialect: str, declarations: Iterable[tuple[str, str, Sequence[str] | None]]
) -> dict[str, str]:
    """Name -> CREATE statement of the index of every (tenant, collection, indexed field)."""
    return {
        index_name(tenant_id, collection, field): create_statement(
            dialect, tenant_id, collection, field
        )
        for tenant_id, collection, fields in declarations
        for field in fields or ()
    }


def within_budget(existing: Iterable[str], wanted: dict[str, str], budget: int) -> dict[str, str]:
    """The ``budget`` indexes of ``wanted`` (in declaration order) to keep: the ones that
    exist first (no index is dropped for another), then the oldest declarations'."""
    present = set(existing)
    names = [name for name in wanted if name in present] + [
        name for name in wanted if name not in present
    ]
    return {name: wanted[name] for name in names[: max(budget, 0)]}


def is_field_index(name: str) -> bool:
    """Whether an index of sync_records is one of this module's (or the legacy shared one)."""
    return bool(_OUR_NAME.match(name))


def reconcile_statements(existing: Iterable[str], wanted: dict[str, str]) -> list[str]:
    """The DDL that turns the ``existing`` indexes of sync_records into the ``wanted`` ones:
    drops first (on PostgreSQL DROP INDEX takes the strongest table lock; taking it before
    CREATE INDEX's weaker one means never upgrading a lock that another declaration may be
    queued behind, a deadlock), then the creations, each in name order."""
    present = {name for name in existing if is_field_index(name)}
    drops = [f"DROP INDEX IF EXISTS {name}" for name in sorted(present - wanted.keys())]
    return drops + [wanted[name] for name in sorted(wanted.keys() - present)]


def existing_query(dialect: str) -> str:
    if dialect == "postgresql":
        return (
            "SELECT indexname FROM pg_indexes "
            "WHERE tablename = 'sync_records' AND schemaname = current_schema()"
        )
    return "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'sync_records'"


class FieldIndexRepository:
    def __init__(self, session: AsyncSession, budget: int) -> None:
        self.session = session
        self.budget = budget

    async def ensure(self, fields: Sequence[str] = ()) -> None:
        """Make every field index follow the declarations, in the caller's transaction: what
        declaring a collection calls once it is written (``fields``: its ``indexes``, checked
        here). Anything else that changes ``sync_collections`` may call it too."""
        for field in fields:
            field_path(field)
        dialect = self.session.get_bind().dialect.name
        # The catalog first: an index seen there was committed with its declaration, which the
        # next statement (a newer snapshot) then sees too. The other order could drop the
        # index of a declaration committed in between.
        existing = (await self.session.execute(text(existing_query(dialect)))).scalars().all()
        declared = wanted_indexes(dialect, await self._declarations())
        wanted = within_budget(existing, declared, self.budget)
        if len(wanted) < len(declared):
            log.warning(
                "field_index_budget_reached",
                declared=len(declared),
                built=len(wanted),
                budget=self.budget,
            )
        for statement in reconcile_statements(existing, wanted):
            await self.session.execute(text(statement))

    async def _declarations(self) -> list[tuple[str, str, list[str]]]:
        query = unscoped_select(
            Collection,
            reason="the field indexes of every tenant are one set of DDL objects of one table",
        ).with_only_columns(Collection.tenant_id, Collection.name, Collection.indexes)
        # Oldest first: the order in which declarations get what the budget allows.
        query = query.order_by(Collection.created_at, Collection.tenant_id, Collection.name)
        rows = (await self.session.execute(query)).all()
        return [(tenant_id, name, list(fields or ())) for tenant_id, name, fields in rows]
