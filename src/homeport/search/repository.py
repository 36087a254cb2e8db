"""All SQL of search: ranked matches, hits in the caller's scope, facet counts, suggestions.

The index is kept by database triggers (migration 0006_search); this module only reads it.
- SQLite: FTS5 ``search_fts`` over ``search_documents.body``; rank is FTS5's ``bm25()``
  (lower is better; term statistics are those of the whole index).
- PostgreSQL: ``search_documents.document`` (tsvector, GIN); rank is minus the sum over the
  query's terms of ``ts_rank`` weighted by the term's BM25 inverse document frequency in the
  tenant's collection (so rarer terms weigh more, as with bm25 on SQLite).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Float,
    Select,
    Text,
    and_,
    bindparam,
    case,
    cast,
    column,
    false,
    func,
    literal_column,
    select,
    table,
    type_coerce,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.selectable import Join, Subquery

from homeport.kit.tenancy import tenant_select_columns
from homeport.models.search import SearchDocument
from homeport.models.sync import Collection, SyncRecord
from homeport.search.query import SearchQuery, fts5_match, parse_query, tsquery_lexemes

MATCHES_NAME = "search_matches"
TS_CONFIG = "homeport_search"

_fts = table("search_fts", column("rowid"))
_fts_table: ColumnElement[Any] = literal_column("search_fts")


class _PerDialectSubquery(Subquery):
    """A subquery whose SQL depends on the dialect it is compiled for (FTS5 or tsvector).

    Its columns (``record_id``, ``rank``) are the same on both; ranked_matches() needs no
    session to know the dialect, so the choice is made at compile time.
    """

    inherit_cache = False  # the two variants carry different parameters: never cache it
    postgresql: Subquery


@compiles(_PerDialectSubquery)
def _compile_per_dialect(element: _PerDialectSubquery, compiler: SQLCompiler, **kw: Any) -> str:
    if compiler.dialect.name == "postgresql":
        sql = str(compiler.process(element.postgresql, **kw))
        # Join conditions name this subquery's columns: the cartesian-product lint must see
        # this subquery, not the variant rendered in its place.
        linter = kw.get("from_linter")
        if linter is not None and element.postgresql in linter.froms:
            linter.froms[element] = linter.froms.pop(element.postgresql)
        return sql
    return str(compiler.visit_subquery(element, **kw))  # type: ignore[no-untyped-call]


class _MatchesFirst(Join):
    """``search_fts CROSS JOIN search_documents``: SQLite then reads the FTS5 matches first and
    looks each document up by its primary key. Left to itself, the planner prefers the
    (tenant, collection) index of the documents and runs the whole MATCH once per document."""

    inherit_cache = True


@compiles(_MatchesFirst, "sqlite")
def _compile_matches_first(join: _MatchesFirst, compiler: SQLCompiler, **kw: Any) -> str:
    kw["asfrom"] = True
    return (
        f"{compiler.process(join.left, **kw)} CROSS JOIN {compiler.process(join.right, **kw)}"
        f" ON {compiler.process(join.onclause, **kw)}"  # type: ignore[arg-type]
    )


def _sqlite_matches(
    tenant_id: str, collection: str, query: SearchQuery, ranked: bool
) -> Select[Any]:
    documents = SearchDocument.__table__
    rank = func.bm25(_fts_table) if ranked else literal_column("0.0")
    return (
        tenant_select_columns(
            SearchDocument,
            tenant_id,
            SearchDocument.record_id.label("record_id"),
            type_coerce(rank, Float).label("rank"),
        )
        .select_from(_MatchesFirst(_fts, documents, _fts.c.rowid == SearchDocument.id))
        .where(
            SearchDocument.collection == collection,
            _fts_table.match(bindparam("search_match", fts5_match(query), type_=Text)),
        )
        # A LIMIT (-1: none) keeps SQLite from flattening this subquery into the query that
        # joins it, where the planner would again loop over the records before the matches.
        .limit(-1)
    )


def _tsquery(lexeme: str, name: str) -> ColumnElement[Any]:
    return func.to_tsquery(
        literal_column(f"'{TS_CONFIG}'::regconfig"), bindparam(name, lexeme, type_=Text)
    )


def _postgres_matches(
    tenant_id: str, collection: str, query: SearchQuery, ranked: bool
) -> Select[Any]:
    document: ColumnElement[Any] = literal_column("search_documents.document")
    term_queries = [
        _tsquery(lexeme, f"search_term_{index}")
        for index, lexeme in enumerate(tsquery_lexemes(query))
    ]
    any_term = term_queries[0]
    for term_query in term_queries[1:]:
        any_term = any_term.op("||")(term_query)

    def in_collection(*columns: Any) -> Select[Any]:
        return tenant_select_columns(SearchDocument, tenant_id, *columns).where(
            SearchDocument.collection == collection
        )

    matching = document.op("@@", return_type=Boolean)(any_term)
    if not ranked:
        return in_collection(
            SearchDocument.record_id.label("record_id"),
            type_coerce(literal_column("0.0"), Float).label("rank"),
        ).where(matching)
    total = cast(in_collection(func.count()).scalar_subquery(), Float)
    score: ColumnElement[Any] | None = None
    for term_query in term_queries:
        # BM25 inverse document frequency, one uncorrelated subquery (computed once) per term.
        having = (
            in_collection(cast(func.count(), Float).label("n"))
            .where(document.op("@@", return_type=Boolean)(term_query))
            .subquery()
        )
        idf = (
            select(func.ln(1.0 + (total - having.c.n + 0.5) / (having.c.n + 0.5)))
            .select_from(having)
            .scalar_subquery()
        )
        weighted = idf * func.ts_rank(document, term_query)
        score = weighted if score is None else score + weighted
    assert score is not None
    return in_collection(
        SearchDocument.record_id.label("record_id"), type_coerce(-score, Float).label("rank")
    ).where(matching)


def ranked_matches(tenant_id: str, collection: str, query: str) -> Subquery:
    """The records of ``collection`` matching the user's search text, with ``rank`` (lower is a
    better match). Join it on ``record_id``; order by ``rank``. Raises the 400 VALIDATION_004
    ProblemError (naming ``q``) for text with no word to search for or too long.

    The subquery is always named ``search_matches`` (its SQL is chosen per dialect when the
    statement compiles), so one statement joins it once. Ranks move as the collection's
    documents change (term statistics), like any relevance score."""
    return matches_subquery(tenant_id, collection, parse_query(query))


def matches_subquery(
    tenant_id: str, collection: str, query: SearchQuery, *, ranked: bool = True
) -> Subquery:
    """``ranked=False``: every rank is 0 (cheaper, for counting)."""
    subquery = _PerDialectSubquery._construct(
        _sqlite_matches(tenant_id, collection, query, ranked), name=MATCHES_NAME
    )
    postgresql = _postgres_matches(tenant_id, collection, query, ranked)
    subquery.postgresql = postgresql.subquery(MATCHES_NAME)
    return subquery


def _readable(user_id: str | None, own_only: bool) -> ColumnElement[bool]:
    live = SyncRecord.deleted.is_(False)
    if not own_only:
        return live
    return and_(live, SyncRecord.owner_id == user_id) if user_id is not None else false()


class SearchRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def is_postgres(self) -> bool:
        return self.session.get_bind().dialect.name == "postgresql"

    async def searchable_collections(self, tenant_id: str) -> list[tuple[str, str, list[str]]]:
        """(name, read rule, facet fields) of the tenant's collections with searchable fields."""
        result = await self.session.execute(
            tenant_select_columns(
                Collection,
                tenant_id,
                Collection.name,
                Collection.read_rule,
                Collection.searchable,
                Collection.facets,
            ).order_by(Collection.name)
        )
        return [
            (name, rule, list(facets or []))
            for name, rule, searchable, facets in result.all()
            if searchable
        ]

    def _scoped(
        self,
        tenant_id: str,
        collection: str,
        matches: Subquery,
        user_id: str | None,
        own_only: bool,
        *columns: Any,
    ) -> Select[Any]:
        return (
            tenant_select_columns(SyncRecord, tenant_id, *columns)
            .join(matches, matches.c.record_id == SyncRecord.record_id)
            .where(SyncRecord.collection == collection, _readable(user_id, own_only))
        )

    async def hits(
        self,
        tenant_id: str,
        collection: str,
        query: SearchQuery,
        user_id: str | None,
        own_only: bool,
        limit: int,
    ) -> Sequence[Any]:
        """The best ``limit`` readable matches: record_id, rank, version, data as JSON text."""
        matches = matches_subquery(tenant_id, collection, query)
        statement = (
            self._scoped(
                tenant_id,
                collection,
                matches,
                user_id,
                own_only,
                SyncRecord.record_id,
                matches.c.rank,
                SyncRecord.version,
                cast(SyncRecord.data, Text).label("data_json"),
            )
            .order_by(matches.c.rank, SyncRecord.record_id)
            .limit(limit)
        )
        rows: Sequence[Any] = (await self.session.execute(statement)).all()
        return rows

    def _json_value(self, field: str) -> ColumnElement[Any]:
        """A top-level scalar field as JSON text (NULL when missing, null, array or object)."""
        if self.is_postgres:
            value = SyncRecord.data.op("->")(bindparam(f"facet_{field}", field, type_=Text))
            return case(
                (func.jsonb_typeof(value).in_(["string", "number", "boolean"]), cast(value, Text)),
                else_=None,
            )
        path = bindparam(f"facet_{field}", f'$."{field}"', type_=Text)
        return case(
            (
                func.json_type(SyncRecord.data, path).in_(
                    ["text", "integer", "real", "true", "false"]
                ),
                func.json_quote(func.json_extract(SyncRecord.data, path)),
            ),
            else_=None,
        )

    async def facet_summary(
        self,
        tenant_id: str,
        collection: str,
        query: SearchQuery,
        user_id: str | None,
        own_only: bool,
        fields: Sequence[str],
    ) -> tuple[int, dict[str, Counter[str]]]:
        """The number of readable matches, and per field the count of each value (JSON text):
        one grouped query over every facet field at once."""
        matches = matches_subquery(tenant_id, collection, query, ranked=False)
        values = [
            self._json_value(field).label(f"facet_{index}") for index, field in enumerate(fields)
        ]
        statement = self._scoped(
            tenant_id, collection, matches, user_id, own_only, *values, func.count()
        )
        if values:
            statement = statement.group_by(*values)
        total = 0
        counts: dict[str, Counter[str]] = {field: Counter() for field in fields}
        for row in (await self.session.execute(statement)).all():
            *group, number = row
            total += int(number)
            for field, value in zip(fields, group, strict=True):
                if value is not None:
                    counts[field][str(value)] += int(number)
        return total, counts

    async def suggestion_bodies(
        self,
        tenant_id: str,
        collection: str,
        prefix: SearchQuery,
        user_id: str | None,
        own_only: bool,
        sample: int,
    ) -> list[str]:
        """The bodies of up to ``sample`` readable records with a word starting like the
        prefix query's term, to complete the word from."""
        matches = matches_subquery(tenant_id, collection, prefix, ranked=False)
        statement = (
            self._scoped(tenant_id, collection, matches, user_id, own_only, SearchDocument.body)
            .join(
                SearchDocument,
                and_(
                    SearchDocument.tenant_id == SyncRecord.tenant_id,
                    SearchDocument.collection == SyncRecord.collection,
                    SearchDocument.record_id == SyncRecord.record_id,
                ),
            )
            .limit(sample)
        )
        return [str(body) for body in (await self.session.execute(statement)).scalars()]
