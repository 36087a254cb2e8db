"""field indexes: one partial index per tenant, collection and field, instead of one per field

Revision ID: 0007_field_indexes
Revises: 0006_search
Create Date: 2026-12-03 00:10:00.000000

Until now a collection's ``indexes`` built one index per field name over every row of
``sync_records``, shared by all tenants and collections. On PostgreSQL, a value too large for a
btree entry (2704 bytes) then failed any write of it, by any tenant, as soon as one tenant had
declared an index on that field name, and a declaration failed over large values already
stored. This revision drops those shared indexes and builds, for every declared collection, the
indexes :mod:`homeport.records.indexes` defines: partial to that tenant and collection, bounded
so that no value can overflow an entry. The application keeps them in line with the
declarations from then on (on every declaration), so this is the same reconciliation, run once
at upgrade rather than at the first declaration after it.

Downgrade drops the per-tenant indexes; the code of before rebuilds its shared ones on its next
declaration of each field (until then filters read without them). Both directions read the
database, so offline SQL (``--sql``) leaves the indexes as they are; the application reconciles
them on its next declaration.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

from homeport.records.indexes import (
    INDEX_PREFIX,
    existing_query,
    reconcile_statements,
    wanted_indexes,
)

revision: str = "0007_field_indexes"
down_revision: str | None = "0006_search"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLLECTIONS = sa.table(
    "sync_collections",
    sa.column("tenant_id", sa.String()),
    sa.column("name", sa.String()),
    sa.column("indexes", sa.JSON()),
)


def _existing(connection: sa.Connection, dialect: str) -> list[str]:
    return list(connection.execute(sa.text(existing_query(dialect))).scalars())


def upgrade() -> None:
    if context.is_offline_mode():
        return
    connection = op.get_bind()
    dialect = connection.dialect.name
    existing = _existing(connection, dialect)
    declarations = connection.execute(
        sa.select(_COLLECTIONS.c.tenant_id, _COLLECTIONS.c.name, _COLLECTIONS.c.indexes)
    ).all()
    wanted = wanted_indexes(dialect, [(t, n, list(f or ())) for t, n, f in declarations])
    for statement in reconcile_statements(existing, wanted):
        op.execute(statement)


def downgrade() -> None:
    if context.is_offline_mode():
        return
    connection = op.get_bind()
    for name in _existing(connection, connection.dialect.name):
        if name.startswith(INDEX_PREFIX):
            op.execute(f"DROP INDEX IF EXISTS {name}")
