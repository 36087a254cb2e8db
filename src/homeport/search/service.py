"""Search across a tenant's searchable collections, in the caller's read scope.

Read rules apply exactly as for a sync pull: ``tenant`` and a sufficient ``role:`` reach every
record, ``owner`` only the caller's own records, anything else none. An API key needs the
``collections:read`` scope and then reads every record, as in the records API. Hits, totals,
facets and suggestions are all computed from the same scoped matches, so no record outside the
caller's scope contributes to any of them.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from homeport.auth.principal import Permission, Principal
from homeport.kit.errors import invalid_parameter
from homeport.search.query import MIN_PREFIX_LENGTH, SearchQuery, parse_query
from homeport.search.repository import SearchRepository
from homeport.search.schemas import (
    CollectionResult,
    FacetValue,
    SearchHit,
    SearchResponse,
    Suggestion,
)
from homeport.sync.rules import Reach, read_reach

# Suggestions complete the last word from the bodies of at most this many best-matching
# records per collection: bounded work per keystroke, counts relative to that sample.
SUGGESTION_SAMPLE = 200
_WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class SearchLimits:
    hits: int = 20
    facet_values: int = 10
    suggestions: int = 5


@dataclass(frozen=True)
class _Scope:
    collection: str
    own_only: bool
    facets: list[str]


class SearchService:
    def __init__(self, session: AsyncSession) -> None:
        self.repository = SearchRepository(session)

    async def _scopes(self, principal: Principal, names: list[str] | None) -> list[_Scope]:
        api_key = principal.kind == "api_key"
        if api_key:
            principal.require(Permission.COLLECTIONS_READ)
        available = await self.repository.searchable_collections(principal.tenant_id)
        known = {name for name, _rule, _facets in available}
        unknown = [name for name in names or () if name not in known]
        if unknown:
            raise invalid_parameter(
                "collections",
                f"collections: {', '.join(sorted(unknown))} is not a searchable collection "
                "(declare searchable fields on it)",
            )
        scopes = []
        for name, rule, facets in available:
            if names is not None and name not in names:
                continue
            # API keys are servers: with collections:read they read every record (as in the
            # records API); users get what the collection's read rule gives their role.
            reach = Reach.ALL if api_key else read_reach(rule, principal.role)
            if reach is Reach.NONE or (reach is Reach.OWN and principal.user_id is None):
                continue
            scopes.append(_Scope(name, reach is Reach.OWN, facets))
        return scopes

    async def search(
        self,
        principal: Principal,
        text: str,
        names: list[str] | None,
        limits: SearchLimits,
    ) -> SearchResponse:
        query = parse_query(text)
        tenant_id, user_id = principal.tenant_id, principal.user_id
        ranked: list[tuple[float, str, SearchHit]] = []
        results: dict[str, CollectionResult] = {}
        scopes = await self._scopes(principal, names)
        for scope in scopes:
            rows = await self.repository.hits(
                tenant_id, scope.collection, query, user_id, scope.own_only, limits.hits
            )
            ranked.extend(
                (
                    float(row.rank),
                    scope.collection,
                    SearchHit(
                        collection=scope.collection,
                        id=row.record_id,
                        version=row.version,
                        data=json.loads(row.data_json),
                    ),
                )
                for row in rows
            )
            total, counts = await self.repository.facet_summary(
                tenant_id, scope.collection, query, user_id, scope.own_only, scope.facets
            )
            facets = {
                field: [
                    FacetValue(value=json.loads(value), count=count)
                    for value, count in sorted(
                        values.items(), key=lambda item: (-item[1], item[0])
                    )[: limits.facet_values]
                ]
                for field, values in counts.items()
            }
            results[scope.collection] = CollectionResult(total=total, facets=facets)
        ranked.sort(key=lambda item: (item[0], item[1], item[2].id))
        suggestions = await self._suggest(principal, query, scopes, limits.suggestions)
        return SearchResponse(
            terms=list(query.terms),
            hits=[hit for _rank, _name, hit in ranked[: limits.hits]],
            collections=results,
            suggestions=suggestions,
        )

    async def _suggest(
        self,
        principal: Principal,
        query: SearchQuery,
        scopes: list[_Scope],
        limit: int,
    ) -> list[Suggestion]:
        """Words of readable records that start with the last term, most frequent first."""
        prefix = query.last
        if limit == 0 or len(prefix) < MIN_PREFIX_LENGTH:
            return []
        prefix_query = SearchQuery((prefix,), prefix=True)
        counts: Counter[str] = Counter()
        for scope in scopes:
            bodies = await self.repository.suggestion_bodies(
                principal.tenant_id,
                scope.collection,
                prefix_query,
                principal.user_id,
                scope.own_only,
                SUGGESTION_SAMPLE,
            )
            for body in bodies:
                counts.update(
                    {word for word in _WORD.findall(body.lower()) if word.startswith(prefix)}
                )
        best = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        return [Suggestion(term=term, count=n) for term, n in best[:limit]]
