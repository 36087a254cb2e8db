"""search: full-text index of records (SQLite FTS5, PostgreSQL tsvector)

Revision ID: 0006_search
Revises: 0005_records
Create Date: 2026-12-02 00:10:00.000000

``search_documents`` holds, per record of a collection with ``searchable`` fields, the text of
those fields. Triggers keep it current whatever writes ``sync_records`` or ``sync_collections``
(every sync and REST path, conflict resolutions, tombstones, compaction, a changed
``searchable`` list, a deleted collection), so no application code path can forget it.
- SQLite: the FTS5 table ``search_fts`` indexes ``body`` (external content, rowid = ``id``),
  Porter stemming over unicode61 tokens, diacritics kept (as on PostgreSQL).
- PostgreSQL: the generated tsvector ``document`` with a GIN index, text search configuration
  ``homeport_search``: English Snowball stemming without a stop-word list (as on SQLite).
The view ``search_sources`` is the one definition of a record's body: string and number values
of the searchable fields (inside arrays and objects too; empty strings left out), in the order
the fields are listed.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_search"
down_revision: str | None = "0005_records"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SAME_RECORD = (
    "tenant_id = NEW.tenant_id AND collection = NEW.collection AND record_id = NEW.record_id"
)
_DOCUMENT_COLUMNS = "tenant_id, collection, record_id, body"

_SQLITE_SOURCES = """
CREATE VIEW search_sources AS
SELECT r.tenant_id AS tenant_id, r.collection AS collection, r.record_id AS record_id,
       (SELECT group_concat(j.value, ' ')
          FROM json_each(c.searchable) AS f, json_tree(r.data, '$."' || f.value || '"') AS j
         WHERE j.type IN ('text', 'integer', 'real') AND j.value <> '') AS body
  FROM sync_records AS r
  JOIN sync_collections AS c ON c.tenant_id = r.tenant_id AND c.name = r.collection
 WHERE r.deleted = 0 AND json_array_length(c.searchable) > 0
"""

_SQLITE_INDEX_RECORD = f"""
    INSERT INTO search_documents ({_DOCUMENT_COLUMNS})
    SELECT {_DOCUMENT_COLUMNS} FROM search_sources WHERE {_SAME_RECORD} AND body <> ''
    ON CONFLICT (tenant_id, collection, record_id) DO UPDATE SET body = excluded.body
    WHERE search_documents.body IS NOT excluded.body;
"""  # noqa: S608 (module constants only, never input)

_SQLITE_STATEMENTS = [
    "CREATE VIRTUAL TABLE search_fts USING fts5(body, content='search_documents', "
    "content_rowid='id', tokenize='porter unicode61 remove_diacritics 0')",
    # The FTS5 index follows search_documents (the external-content pattern of the FTS5 docs).
    """CREATE TRIGGER search_documents_fts_insert AFTER INSERT ON search_documents BEGIN
    INSERT INTO search_fts (rowid, body) VALUES (NEW.id, NEW.body);
END""",
    """CREATE TRIGGER search_documents_fts_delete AFTER DELETE ON search_documents BEGIN
    INSERT INTO search_fts (search_fts, rowid, body) VALUES ('delete', OLD.id, OLD.body);
END""",
    """CREATE TRIGGER search_documents_fts_update AFTER UPDATE ON search_documents BEGIN
    INSERT INTO search_fts (search_fts, rowid, body) VALUES ('delete', OLD.id, OLD.body);
    INSERT INTO search_fts (rowid, body) VALUES (NEW.id, NEW.body);
END""",
    _SQLITE_SOURCES,
    # search_documents follows the records and the collections' searchable lists.
    f"""CREATE TRIGGER search_records_insert AFTER INSERT ON sync_records
WHEN NEW.deleted = 0 BEGIN {_SQLITE_INDEX_RECORD}
END""",
    f"""CREATE TRIGGER search_records_update AFTER UPDATE OF data, deleted ON sync_records
WHEN OLD.data IS NOT NEW.data OR OLD.deleted IS NOT NEW.deleted BEGIN
    DELETE FROM search_documents WHERE {_SAME_RECORD} AND NOT EXISTS (
        SELECT 1 FROM search_sources WHERE {_SAME_RECORD} AND body <> '');
    {_SQLITE_INDEX_RECORD}
END""",  # noqa: S608
    """CREATE TRIGGER search_records_delete AFTER DELETE ON sync_records BEGIN
    DELETE FROM search_documents WHERE tenant_id = OLD.tenant_id
        AND collection = OLD.collection AND record_id = OLD.record_id;
END""",
    f"""CREATE TRIGGER search_collections_update AFTER UPDATE OF searchable ON sync_collections
WHEN OLD.searchable IS NOT NEW.searchable BEGIN
    DELETE FROM search_documents WHERE tenant_id = OLD.tenant_id AND collection = OLD.name;
    INSERT INTO search_documents ({_DOCUMENT_COLUMNS})
    SELECT {_DOCUMENT_COLUMNS} FROM search_sources
     WHERE tenant_id = NEW.tenant_id AND collection = NEW.name AND body <> '';
END""",  # noqa: S608
    """CREATE TRIGGER search_collections_delete AFTER DELETE ON sync_collections BEGIN
    DELETE FROM search_documents WHERE tenant_id = OLD.tenant_id AND collection = OLD.name;
END""",
]

_SQLITE_DROPS = [
    "DROP TRIGGER IF EXISTS search_collections_delete",
    "DROP TRIGGER IF EXISTS search_collections_update",
    "DROP TRIGGER IF EXISTS search_records_delete",
    "DROP TRIGGER IF EXISTS search_records_update",
    "DROP TRIGGER IF EXISTS search_records_insert",
    "DROP VIEW IF EXISTS search_sources",
    "DROP TRIGGER IF EXISTS search_documents_fts_update",
    "DROP TRIGGER IF EXISTS search_documents_fts_delete",
    "DROP TRIGGER IF EXISTS search_documents_fts_insert",
    "DROP TABLE IF EXISTS search_fts",
]

_POSTGRES_STATEMENTS = [
    "CREATE TEXT SEARCH DICTIONARY homeport_search_stem (TEMPLATE = snowball, LANGUAGE = english)",
    "CREATE TEXT SEARCH CONFIGURATION homeport_search (COPY = english)",
    "ALTER TEXT SEARCH CONFIGURATION homeport_search "
    "ALTER MAPPING REPLACE english_stem WITH homeport_search_stem",
    "ALTER TABLE search_documents ADD COLUMN document tsvector "
    "GENERATED ALWAYS AS (to_tsvector('homeport_search'::regconfig, body)) STORED",
    "CREATE INDEX ix_search_documents_document ON search_documents USING gin (document)",
    """CREATE VIEW search_sources AS
SELECT r.tenant_id, r.collection, r.record_id,
       (SELECT string_agg(v.value #>> '{}', ' ' ORDER BY f.n)
          FROM json_array_elements_text(c.searchable) WITH ORDINALITY AS f(name, n)
          CROSS JOIN LATERAL jsonb_path_query(
              r.data -> f.name,
              'strict $.** ? (@.type() == "string" || @.type() == "number")') AS v(value)
         WHERE v.value #>> '{}' <> ''
       ) AS body
  FROM sync_records AS r
  JOIN sync_collections AS c ON c.tenant_id = r.tenant_id AND c.name = r.collection
 WHERE NOT r.deleted AND json_array_length(c.searchable) > 0""",
    # Homeport's connections plan every statement for its parameters (plan_cache_mode): the
    # trigger's statements are key lookups, so their cached generic plans are the right ones
    # (planning them for every row made writes three times slower).
    f"""CREATE FUNCTION search_record_changed() RETURNS trigger LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan AS $body$
DECLARE
    has_fields boolean;
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM search_documents WHERE tenant_id = OLD.tenant_id
            AND collection = OLD.collection AND record_id = OLD.record_id;
        RETURN NULL;
    END IF;
    -- A writer and a change of the collection's searchable list wait for each other, so a
    -- record is never indexed with the fields of a list being replaced.
    SELECT json_array_length(searchable) > 0 INTO has_fields FROM sync_collections
      WHERE tenant_id = NEW.tenant_id AND name = NEW.collection FOR SHARE;
    IF NOT coalesce(has_fields, false) THEN
        RETURN NULL;  -- no searchable fields: the collection has no documents at all
    END IF;
    INSERT INTO search_documents ({_DOCUMENT_COLUMNS})
    SELECT {_DOCUMENT_COLUMNS} FROM search_sources WHERE {_SAME_RECORD} AND body <> ''
    ON CONFLICT (tenant_id, collection, record_id) DO UPDATE SET body = excluded.body
    WHERE search_documents.body IS DISTINCT FROM excluded.body;
    IF NOT FOUND AND TG_OP = 'UPDATE' THEN
        DELETE FROM search_documents WHERE {_SAME_RECORD} AND NOT EXISTS (
            SELECT 1 FROM search_sources WHERE {_SAME_RECORD} AND body <> '');
    END IF;
    RETURN NULL;
END
$body$""",  # noqa: S608
    """CREATE TRIGGER search_records_insert AFTER INSERT ON sync_records
FOR EACH ROW WHEN (NOT NEW.deleted) EXECUTE FUNCTION search_record_changed()""",
    """CREATE TRIGGER search_records_update AFTER UPDATE OF data, deleted ON sync_records
FOR EACH ROW WHEN (OLD.data IS DISTINCT FROM NEW.data OR OLD.deleted IS DISTINCT FROM NEW.deleted)
EXECUTE FUNCTION search_record_changed()""",
    """CREATE TRIGGER search_records_delete AFTER DELETE ON sync_records
FOR EACH ROW EXECUTE FUNCTION search_record_changed()""",
    f"""CREATE FUNCTION search_collection_changed() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
    DELETE FROM search_documents WHERE tenant_id = OLD.tenant_id AND collection = OLD.name;
    IF TG_OP = 'UPDATE' THEN
        INSERT INTO search_documents ({_DOCUMENT_COLUMNS})
        SELECT {_DOCUMENT_COLUMNS} FROM search_sources
         WHERE tenant_id = NEW.tenant_id AND collection = NEW.name AND body <> '';
    END IF;
    RETURN NULL;
END
$body$""",  # noqa: S608
    """CREATE TRIGGER search_collections_update AFTER UPDATE OF searchable ON sync_collections
FOR EACH ROW WHEN (OLD.searchable::text IS DISTINCT FROM NEW.searchable::text)
EXECUTE FUNCTION search_collection_changed()""",
    """CREATE TRIGGER search_collections_delete AFTER DELETE ON sync_collections
FOR EACH ROW EXECUTE FUNCTION search_collection_changed()""",
]

_POSTGRES_DROPS = [
    "DROP TRIGGER IF EXISTS search_collections_delete ON sync_collections",
    "DROP TRIGGER IF EXISTS search_collections_update ON sync_collections",
    "DROP FUNCTION IF EXISTS search_collection_changed()",
    "DROP TRIGGER IF EXISTS search_records_delete ON sync_records",
    "DROP TRIGGER IF EXISTS search_records_update ON sync_records",
    "DROP TRIGGER IF EXISTS search_records_insert ON sync_records",
    "DROP FUNCTION IF EXISTS search_record_changed()",
    "DROP VIEW IF EXISTS search_sources",
    "DROP INDEX IF EXISTS ix_search_documents_document",
    "ALTER TABLE search_documents DROP COLUMN IF EXISTS document",
    "DROP TEXT SEARCH CONFIGURATION IF EXISTS homeport_search",
    "DROP TEXT SEARCH DICTIONARY IF EXISTS homeport_search_stem",
]

# Records of collections that already list searchable fields (an upgrade of a live database).
_BACKFILL = (
    "INSERT INTO search_documents (tenant_id, collection, record_id, body) "
    "SELECT tenant_id, collection, record_id, body FROM search_sources WHERE body <> ''"
)


def upgrade() -> None:
    op.create_table(
        "search_documents",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("collection", sa.String(length=63), nullable=False),
        sa.Column("record_id", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_search_documents")),
        sa.UniqueConstraint(
            "tenant_id", "collection", "record_id", name=op.f("uq_search_documents_tenant_id")
        ),
    )
    statements = (
        _POSTGRES_STATEMENTS
        if op.get_context().dialect.name == "postgresql"
        else _SQLITE_STATEMENTS
    )
    for statement in [*statements, _BACKFILL]:
        op.execute(statement)


def downgrade() -> None:
    drops = _POSTGRES_DROPS if op.get_context().dialect.name == "postgresql" else _SQLITE_DROPS
    for statement in drops:
        op.execute(statement)
    op.drop_table("search_documents")
