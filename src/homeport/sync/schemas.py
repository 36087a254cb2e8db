"""Request and response bodies of the sync endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    model_validator,
)

from homeport.auth.schemas import StrictModel
from homeport.sync.policies import normalise_policy
from homeport.sync.rules import parse_rule

CollectionName = Annotated[
    str, StringConstraints(min_length=1, max_length=63, pattern=r"^[a-z][a-z0-9_]*$")
]
FieldName = Annotated[
    str, StringConstraints(min_length=1, max_length=63, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
]
Rule = Annotated[str, StringConstraints(max_length=40), AfterValidator(parse_rule)]
Policy = Annotated[str, StringConstraints(max_length=20), AfterValidator(normalise_policy)]
# The records tables' id columns are this long (PostgreSQL refuses longer values).
RECORD_ID_MAX_LENGTH = 200
RecordId = Annotated[str, StringConstraints(min_length=1, max_length=RECORD_ID_MAX_LENGTH)]
# A record's version is an integer column (32 bits on PostgreSQL): no version is beyond this.
MAX_VERSION = 2**31 - 1
# The records REST API options: each names a top-level property of the collection's schema.
RECORD_OPTIONS = ("sortable", "indexes", "searchable", "facets")
FieldList = Annotated[list[FieldName], Field(max_length=64)]


def _check_options(options: dict[str, list[str]], schema: dict[str, Any]) -> None:
    """Each option lists distinct properties the schema declares (ValueError otherwise)."""
    properties = schema.get("properties")
    declared = set(properties) if isinstance(properties, dict) else set()
    for option, names in options.items():
        if len(set(names)) != len(names):
            raise ValueError(f"{option} names a field twice")
        unknown = [name for name in names if name not in declared]
        if unknown:
            raise ValueError(
                f"{option}: {', '.join(unknown)} is not a property of the schema "
                "(declare it under schema.properties)"
            )


class _RecordOptions(StrictModel):
    sortable: FieldList = Field(
        default_factory=list, description="Fields the records API may sort on (`sort=`)."
    )
    indexes: FieldList = Field(
        default_factory=list,
        description="Fields to index for `filter[...]` (expression indexes on the JSON data).",
    )
    searchable: FieldList = Field(
        default_factory=list, description="Fields of the full-text index (`q=`)."
    )
    facets: FieldList = Field(
        default_factory=list, description="Fields whose values the search counts (facets)."
    )

    @model_validator(mode="after")
    def _options_name_properties(self) -> _RecordOptions:
        schema: dict[str, Any] = getattr(self, "schema_", {})
        _check_options({name: getattr(self, name) for name in RECORD_OPTIONS}, schema)
        return self


class CollectionSpec(_RecordOptions):
    """A collection as declared (admin API body and one entry of a manifest)."""

    name: CollectionName
    id_field: FieldName = "id"
    schema_: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object"},
        alias="schema",
        description="JSON Schema of a record; `x-owner-field` names the field holding the "
        "owner's user id.",
    )
    read: Rule = "owner"
    write: Rule = "owner"
    conflict_policy: Policy = "server_wins"

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class CollectionUpdate(_RecordOptions):
    id_field: FieldName = "id"
    schema_: dict[str, Any] = Field(default_factory=lambda: {"type": "object"}, alias="schema")
    read: Rule = "owner"
    write: Rule = "owner"
    conflict_policy: Policy = "server_wins"

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class CollectionOut(BaseModel):
    name: str
    id_field: str
    schema_: dict[str, Any] = Field(alias="schema", serialization_alias="schema")
    read: str
    write: str
    conflict_policy: str
    owner_field: str | None
    schema_version: int
    sortable: list[str]
    indexes: list[str]
    searchable: list[str]
    facets: list[str]
    created_at: datetime
    updated_at: datetime

    model_config = ConfigDict(populate_by_name=True)


class CollectionChange(BaseModel):
    """What a create or update did (the manifest diff shows the same)."""

    name: str
    action: Literal["created", "updated", "unchanged", "deleted"]
    changes: list[str]
    breaking: list[str]
    collection: CollectionOut | None = None


class CollectionList(BaseModel):
    collections: list[CollectionOut]


class PushChange(BaseModel):
    collection: str = Field(max_length=63)
    id: str | None = Field(default=None, max_length=RECORD_ID_MAX_LENGTH)
    op: str = "upsert"
    data: dict[str, Any] | None = None
    # Strict: "1" or true is not a version (a client sending one has a bug worth seeing).
    base_version: StrictInt | None = Field(default=None, ge=0, le=MAX_VERSION)
    hlc: str | None = Field(default=None, max_length=300)
    hash: str | None = Field(default=None, max_length=64)


class PushResult(BaseModel):
    collection: str
    id: str | None
    status: Literal["applied", "conflict", "rejected"]
    version: int | None = None
    resolution: str | None = None


class ConflictSide(BaseModel):
    version: int | None
    data: dict[str, Any] | None
    deleted: bool


class PushConflict(BaseModel):
    conflict_id: str
    collection: str
    id: str
    resolution: str
    winner: str | None
    status: Literal["resolved", "pending"]
    server: ConflictSide


class ItemError(BaseModel):
    item_id: str | None
    collection: str | None = None
    error: str
    message: str
    fields: list[str] | None = None


class PushResponse(BaseModel):
    synced_items: int
    failed_items: int
    results: list[PushResult]
    conflicts: list[PushConflict]
    errors: list[ItemError]
    cursor: str


class PullChange(BaseModel):
    collection: str
    id: str
    op: Literal["upsert", "delete"]
    version: int
    data: dict[str, Any] | None
    deleted: bool
    updated_at: datetime


class PullResponse(BaseModel):
    changes: list[PullChange]
    cursor: str
    has_more: bool


class CursorResponse(BaseModel):
    cursor: str


class PolicyOut(BaseModel):
    tenant_id: str
    domain: str
    resolution_policy: str
    auto_resolve: bool
    notify_on_conflict: bool


class PolicyUpdate(StrictModel):
    """Fields left out keep their current value."""

    resolution_policy: Policy
    auto_resolve: StrictBool | None = None
    notify_on_conflict: StrictBool | None = None


class ConflictOut(BaseModel):
    id: str
    mobile_id: str
    domain: str
    device_id: str | None
    server_version: dict[str, Any]
    client_version: dict[str, Any]
    resolution_strategy: str
    resolution_result: Literal["resolved", "pending", "dismissed"]
    winning_version: str | None
    created_at: datetime
    resolved_at: datetime | None


class ConflictList(BaseModel):
    conflicts: list[ConflictOut]
    total: int
    conflict_rate_pct: float


class ConflictResolve(StrictModel):
    resolution: Literal["accept_server", "accept_client", "merge"]
    data: dict[str, Any] | None = None
