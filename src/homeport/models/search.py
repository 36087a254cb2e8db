"""Search: the full-text document of each record of a collection with ``searchable`` fields.

Database triggers on ``sync_records`` and ``sync_collections`` (migration 0006_search) keep this
table current on every write path: push over REST and WebSocket, REST record writes, conflict
resolutions, tombstones, compaction, a change of a collection's ``searchable`` list, a deleted
collection. ``body`` is the text of the searchable fields, unstemmed (suggestions read it).

The full-text index itself is dialect-specific and not modelled here:
- SQLite: the FTS5 table ``search_fts`` (external content: this table, rowid ``id``).
- PostgreSQL: the generated ``document`` tsvector column of this table and its GIN index.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from homeport.kit.db import Base

# The FTS5 rowid on SQLite (an INTEGER PRIMARY KEY is the rowid); 64-bit on PostgreSQL.
DocumentId = BigInteger().with_variant(Integer(), "sqlite")

# Tables and columns the full-text engines own; the schema comparison with the models skips
# them (they are not expressible as SQLAlchemy tables: FTS5 virtual and shadow tables, a
# generated tsvector column).
SQLITE_FTS_TABLE = "search_fts"
POSTGRES_TSVECTOR_COLUMN = "document"
POSTGRES_TSVECTOR_INDEX = "ix_search_documents_document"


class SearchDocument(Base):
    __tablename__ = "search_documents"
    __table_args__ = (UniqueConstraint("tenant_id", "collection", "record_id"),)

    id: Mapped[int] = mapped_column(DocumentId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    collection: Mapped[str] = mapped_column(String(63))
    record_id: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)


def is_full_text_internal(name: str | None, kind: str, table: str | None = None) -> bool:
    """Whether a reflected table, column or index belongs to a full-text engine."""
    if name is None:
        return False
    if kind == "table":
        return name == SQLITE_FTS_TABLE or name.startswith(SQLITE_FTS_TABLE + "_")
    if kind == "column":
        return table == SearchDocument.__tablename__ and name == POSTGRES_TSVECTOR_COLUMN
    if kind == "index":
        return name == POSTGRES_TSVECTOR_INDEX
    return False


def include_in_comparison(
    item: Any, name: str | None, kind: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic ``include_object`` hook: compare everything but the full-text internals."""
    table = getattr(getattr(item, "table", None), "name", None)
    return not (reflected and is_full_text_internal(name, kind, table))


def include_name_in_comparison(name: str | None, kind: str, parent_names: Any) -> bool:
    """Alembic ``include_name`` hook: the FTS5 tables are not even reflected."""
    return not (kind == "table" and is_full_text_internal(name, kind))
