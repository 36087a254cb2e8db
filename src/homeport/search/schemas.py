"""Response bodies of ``GET /api/v1/search``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class SearchHit(BaseModel):
    collection: str = Field(description="The collection the record belongs to.")
    id: str
    version: int
    data: dict[str, Any]


class FacetValue(BaseModel):
    value: Any = Field(description="A value of the facet field (string, number or boolean).")
    count: int = Field(description="Matching records the caller may read with this value.")


class CollectionResult(BaseModel):
    total: int = Field(description="Matching records of the collection the caller may read.")
    facets: dict[str, list[FacetValue]] = Field(
        description="Per declared facet field, counts per value, most frequent first."
    )


class Suggestion(BaseModel):
    term: str = Field(description="A word completing the last term of q.")
    count: int = Field(description="Records (of those sampled) holding the word.")


class SearchResponse(BaseModel):
    terms: list[str] = Field(description="The words searched for (after parsing q).")
    hits: list[SearchHit] = Field(description="Best matches first, across the collections.")
    collections: dict[str, CollectionResult] = Field(
        description="Per searched collection the caller may read: total and facets."
    )
    suggestions: list[Suggestion]
