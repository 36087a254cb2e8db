"""Bodies of the records API (documented in OpenAPI; hot answers are written as JSON text)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from homeport.auth.schemas import StrictModel
from homeport.sync.schemas import RecordId


class RecordOut(BaseModel):
    id: str = Field(description="The record id (the collection's id field).")
    version: int = Field(description="+1 on every change; the ETag is derived from it.")
    created_at: datetime
    updated_at: datetime
    data: dict[str, Any] = Field(description="The record; with `fields=`, only those fields.")


class RecordPage(BaseModel):
    data: list[RecordOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")
    has_more: bool


class BatchOperation(StrictModel):
    op: Literal["create", "replace", "patch", "delete"]
    id: RecordId | None = Field(
        default=None, description="Required except for create (generated when left out)."
    )
    data: dict[str, Any] | None = Field(
        default=None, description="The record (create, replace) or a JSON Merge Patch (patch)."
    )
    if_match: int | None = Field(
        default=None, ge=0, description="Expected current version (like the If-Match header)."
    )


class BatchRequest(StrictModel):
    mode: Literal["atomic", "best_effort"] = Field(
        default="atomic",
        description="atomic: one failing operation applies nothing; best_effort: each alone.",
    )
    operations: list[BatchOperation] = Field(min_length=1)


class BatchResult(BaseModel):
    index: int
    op: str
    id: str | None
    status: int = Field(description="The HTTP status the operation alone would have had.")
    version: int | None = None
    code: str | None = Field(default=None, description="Error code when it failed.")
    detail: str | None = None


class BatchResponse(BaseModel):
    mode: Literal["atomic", "best_effort"]
    applied: bool = Field(description="Whether anything was written.")
    succeeded: int
    failed: int
    results: list[BatchResult]
    cursor: str = Field(description="Sync feed cursor at which the effects are visible.")
