"""HTTP face of search: ``GET /api/v1/search``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from homeport.auth.dependencies import PrincipalDep
from homeport.kit.errors import ErrorCode, invalid_parameter
from homeport.kit.problems import responses
from homeport.kit.routing import api_router
from homeport.search.schemas import SearchResponse
from homeport.search.service import SearchLimits, SearchService
from homeport.state import SessionDep

router = api_router(prefix="/api/v1", tags=["search"])


# What GET /search takes; anything else is named back (a misspelt `colections=` would
# otherwise search every collection without a word).
SEARCH_PARAMETERS = frozenset({"q", "collections", "limit", "facet_limit", "suggestions"})


async def search_service(request: Request, session: SessionDep) -> SearchService:
    unknown = [name[:100] for name in request.query_params if name not in SEARCH_PARAMETERS]
    if unknown:
        raise invalid_parameter(unknown[0], f"{unknown[0]}: unknown parameter", "unknown parameter")
    return SearchService(session)


SearchDep = Annotated[SearchService, Depends(search_service)]


@router.get(
    "/search",
    response_model=SearchResponse,
    summary="Full-text search across the tenant's searchable collections",
    description=(
        "Ranked hits (records matching more, and rarer, words first; words are stemmed, the "
        "last one also matches as a prefix while typed), per-collection totals and facet "
        "counts, and completions of the last word. Only records the caller may read (the "
        "collection's read rule, as for sync) are searched."
    ),
    responses=responses(ErrorCode.AUTH_001, ErrorCode.AUTH_006, ErrorCode.VALIDATION_004),
)
async def search(
    principal: PrincipalDep,
    service: SearchDep,
    q: Annotated[
        str,
        Query(
            description="Words to search for (at most 500 characters, 16 words); "
            "punctuation and operators only separate words.",
        ),
    ],
    collections: Annotated[
        str | None,
        Query(max_length=2000, description="Comma-separated collection names (default: all)."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Hits to return.")] = 20,
    facet_limit: Annotated[int, Query(ge=1, le=100, description="Values per facet field.")] = 10,
    suggestions: Annotated[
        int, Query(ge=0, le=20, description="Completions of the last word (0: none).")
    ] = 5,
) -> SearchResponse:
    # An empty list names no collection: all of them, as for a sync pull.
    names = [name.strip() for name in (collections or "").split(",") if name.strip()] or None
    return await service.search(principal, q, names, SearchLimits(limit, facet_limit, suggestions))
