"""Expression indexes on record fields that collections declare under ``indexes``.

One index per field name, shared by every collection that declares it, on
``(tenant_id, collection, <the field's value>)``: an equality on tenant and collection followed
by the field's comparison is a plain range scan. A partial index per (tenant, collection) would
be smaller, but SQLite cannot use a partial index whose condition is a bound parameter, and
many tenants declaring the same field would multiply the indexes every write maintains.

The indexed expression is exactly the one :mod:`homeport.records.repository` filters and sorts
on (``json_extract(data, '$.f')`` on SQLite, ``data -> 'f'`` on PostgreSQL), so the planner
matches them.
"""

from __future__ import annotations

import hashlib
import re

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# Field names are validated by the collection schemas; this is a second guard, since the name
# ends up in DDL as a literal.
_SAFE_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
INDEX_PREFIX = "ix_sync_records_field_"


def index_name(field: str) -> str:
    """A stable name within PostgreSQL's 63 characters, whatever the field's length."""
    digest = hashlib.sha256(field.encode()).hexdigest()[:12]
    return f"{INDEX_PREFIX}{digest}"


def field_path(field: str) -> str:
    """The field as a literal safe to embed in SQL (it is checked against a strict pattern)."""
    if not _SAFE_FIELD.match(field):
        raise ValueError(f"not a field name: {field!r}")
    return field


class FieldIndexRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def ensure(self, fields: list[str]) -> None:
        """Create the index of each field unless it exists (in the caller's transaction)."""
        if not fields:
            return
        postgres = self.session.get_bind().dialect.name == "postgresql"
        existing = await self._existing(postgres)
        missing = [field for field in fields if index_name(field_path(field)) not in existing]
        for field in missing:
            name = field_path(field)
            value = f"(data -> '{name}')" if postgres else f"json_extract(data, '$.{name}')"
            await self.session.execute(
                text(
                    f"CREATE INDEX IF NOT EXISTS {index_name(name)} "
                    f"ON sync_records (tenant_id, collection, {value})"
                )
            )

    async def _existing(self, postgres: bool) -> set[str]:
        query = (
            "SELECT indexname FROM pg_indexes WHERE tablename = 'sync_records'"
            if postgres
            else "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'sync_records'"
        )
        return set((await self.session.execute(text(query))).scalars())
