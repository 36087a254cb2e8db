"""HTTP face of sync: collections (admin), push, pull, force-sync, policies and conflicts."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Header, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse

from homeport.auth.dependencies import PrincipalDep
from homeport.auth.principal import Permission, Principal
from homeport.kit.errors import ErrorCode, ProblemError
from homeport.kit.problems import responses
from homeport.kit.routing import api_router
from homeport.kit.text import whole_number
from homeport.models.sync import Collection, SyncConflict
from homeport.state import SessionDep, StateDep
from homeport.sync.collections import Change, CollectionService
from homeport.sync.conflicts import ConflictService
from homeport.sync.schemas import (
    CollectionChange,
    CollectionList,
    CollectionName,
    CollectionOut,
    CollectionSpec,
    CollectionUpdate,
    ConflictList,
    ConflictOut,
    ConflictResolve,
    CursorResponse,
    PolicyOut,
    PolicyUpdate,
    PullResponse,
    PushChange,
    PushResponse,
)
from homeport.sync.service import SyncService

router = api_router(prefix="/api/v1", tags=["sync"])

PUSH_PATH = "/api/v1/sync/push"
PROTOCOL_HEADER = "X-Homeport-Protocol"
PROTOCOL_VERSION = 1
MIN_PROTOCOL_VERSION = 1
MAX_PROTOCOL_DIGITS = 9

NamePath = Annotated[str, Path(min_length=1, max_length=63)]
TenantPath = Annotated[str, Path(min_length=1, max_length=64)]
IdPath = Annotated[str, Path(min_length=1, max_length=64)]


async def protocol_version(
    version: Annotated[
        str | None,
        Header(
            alias=PROTOCOL_HEADER,
            description=f"Sync protocol version of the client (current {PROTOCOL_VERSION}).",
        ),
    ] = None,
) -> int:
    if version is None:
        return PROTOCOL_VERSION
    number = whole_number(version.strip(), MAX_PROTOCOL_DIGITS)
    if number is None:
        raise ProblemError(
            ErrorCode.SYNC_001,
            f"{PROTOCOL_HEADER} must be a whole number of at most {MAX_PROTOCOL_DIGITS} digits",
        )
    if number < MIN_PROTOCOL_VERSION:
        raise ProblemError(
            ErrorCode.SYNC_005,
            f"Protocol version {number} is no longer supported (minimum "
            f"{MIN_PROTOCOL_VERSION}); update the app",
        )
    return number


ProtocolDep = Annotated[int, Depends(protocol_version)]


async def sync_service(state: StateDep, session: SessionDep) -> SyncService:
    return SyncService(session, state.settings, state.secret_key)


async def collection_service(state: StateDep, session: SessionDep) -> CollectionService:
    return CollectionService(session, state.settings.records_max_field_indexes)


async def conflict_service(session: SessionDep) -> ConflictService:
    return ConflictService(session)


SyncDep = Annotated[SyncService, Depends(sync_service)]
CollectionsDep = Annotated[CollectionService, Depends(collection_service)]
ConflictsDep = Annotated[ConflictService, Depends(conflict_service)]


def _collection_out(collection: Collection) -> CollectionOut:
    return CollectionOut(
        name=collection.name,
        id_field=collection.id_field,
        schema_=collection.json_schema,
        read=collection.read_rule,
        write=collection.write_rule,
        conflict_policy=collection.conflict_policy,
        owner_field=collection.owner_field,
        schema_version=collection.schema_version,
        sortable=list(collection.sortable or []),
        indexes=list(collection.indexes or []),
        searchable=list(collection.searchable or []),
        facets=list(collection.facets or []),
        created_at=collection.created_at,
        updated_at=collection.updated_at,
    )


def _change_out(change: Change) -> CollectionChange:
    return CollectionChange(
        name=change.name,
        action=change.action,
        changes=change.changes,
        breaking=change.breaking,
        collection=_collection_out(change.collection) if change.collection else None,
    )


def _actor(principal: Principal) -> str:
    return principal.user_id or f"api-key:{principal.api_key_id}"


# Collections (admin)


@router.get(
    "/collections",
    response_model=CollectionList,
    summary="List the tenant's collections",
    responses=responses(ErrorCode.AUTH_001, ErrorCode.AUTH_006),
)
async def list_collections(principal: PrincipalDep, service: CollectionsDep) -> CollectionList:
    principal.require(Permission.COLLECTIONS_READ)
    collections = await service.list(principal.tenant_id)
    return CollectionList(collections=[_collection_out(c) for c in collections])


@router.post(
    "/collections",
    response_model=CollectionChange,
    status_code=status.HTTP_201_CREATED,
    summary="Declare a collection (owner/admin)",
    responses=responses(ErrorCode.AUTH_001, ErrorCode.AUTH_006, ErrorCode.VALIDATION_002),
)
async def create_collection(
    body: CollectionSpec, principal: PrincipalDep, service: CollectionsDep
) -> CollectionChange:
    principal.require(Permission.COLLECTIONS_WRITE)
    change = await service.declare(
        principal.tenant_id, body, actor=_actor(principal), must_exist=False
    )
    return _change_out(change)


@router.get(
    "/collections/{name}",
    response_model=CollectionOut,
    summary="One collection",
    responses=responses(ErrorCode.AUTH_001, ErrorCode.AUTH_006, ErrorCode.NOT_FOUND),
)
async def get_collection(
    name: NamePath, principal: PrincipalDep, service: CollectionsDep
) -> CollectionOut:
    principal.require(Permission.COLLECTIONS_READ)
    return _collection_out(await service.get(principal.tenant_id, name))


@router.put(
    "/collections/{name}",
    response_model=CollectionChange,
    summary="Change a collection: additive schema changes, or any change with force=true",
    responses=responses(
        ErrorCode.AUTH_001, ErrorCode.AUTH_006, ErrorCode.NOT_FOUND, ErrorCode.VALIDATION_003
    ),
)
async def update_collection(
    name: Annotated[CollectionName, Path()],
    body: CollectionUpdate,
    principal: PrincipalDep,
    service: CollectionsDep,
    force: Annotated[bool, Query(description="Apply a breaking schema change (recorded).")] = False,
) -> CollectionChange:
    principal.require(Permission.COLLECTIONS_WRITE)
    spec = CollectionSpec(name=name, **body.model_dump(by_alias=True))
    change = await service.declare(
        principal.tenant_id, spec, force=force, actor=_actor(principal), must_exist=True
    )
    return _change_out(change)


@router.delete(
    "/collections/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a collection (force=true when it holds records: they are removed too)",
    responses=responses(
        ErrorCode.AUTH_001, ErrorCode.AUTH_006, ErrorCode.NOT_FOUND, ErrorCode.VALIDATION_003
    ),
)
async def delete_collection(
    name: NamePath,
    principal: PrincipalDep,
    service: CollectionsDep,
    force: Annotated[bool, Query()] = False,
) -> Response:
    principal.require(Permission.COLLECTIONS_WRITE)
    await service.delete(principal.tenant_id, name, force=force)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# Push, pull, force-sync


@router.post(
    "/sync/push",
    response_model=PushResponse,
    summary="Push a batch of mutations (idempotent; atomic or best effort)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["idempotency_key"],
                        "properties": {
                            "idempotency_key": {"type": "string", "maxLength": 200},
                            "device_id": {"type": "string"},
                            "mode": {"type": "string", "enum": ["atomic", "best_effort"]},
                            "changes": {
                                "type": "array",
                                "items": PushChange.model_json_schema(),
                            },
                        },
                        "additionalProperties": {
                            "type": "array",
                            "items": {"type": "object"},
                            "description": "Seed format: a collection's name holding records",
                        },
                    }
                }
            },
        }
    },
    responses=responses(
        ErrorCode.AUTH_001,
        ErrorCode.AUTH_006,
        ErrorCode.SYNC_001,
        ErrorCode.SYNC_002,
        ErrorCode.SYNC_003,
        ErrorCode.SYNC_005,
    ),
)
async def push(
    request: Request,
    principal: PrincipalDep,
    service: SyncDep,
    _protocol: ProtocolDep,
) -> Response:
    # Bodies over HOMEPORT_SYNC_MAX_BATCH_BYTES never get here: the body-limit middleware
    # answers them (413, SYNC_001).
    raw = await request.body()
    try:
        body: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ProblemError(ErrorCode.SYNC_001, "The push body is not valid JSON") from exc
    try:
        answer = await service.push(principal, body)
    except RecursionError as exc:  # absurdly nested documents; nothing was applied
        raise ProblemError(ErrorCode.SYNC_001, "A record is nested too deeply") from exc
    headers = {"Idempotent-Replay": "true"} if answer.replayed else {}
    return JSONResponse(answer.body, headers=headers)


@router.get(
    "/sync/pull",
    response_model=PullResponse,
    summary="Changes after a cursor, in feed order, only in your scope",
    responses=responses(
        ErrorCode.AUTH_001,
        ErrorCode.AUTH_006,
        ErrorCode.SYNC_001,
        ErrorCode.SYNC_005,
        ErrorCode.SYNC_006,
        ErrorCode.NOT_FOUND,
    ),
)
async def pull(
    principal: PrincipalDep,
    service: SyncDep,
    _protocol: ProtocolDep,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    limit: Annotated[int | None, Query(ge=1)] = None,
    collections: Annotated[
        str | None, Query(max_length=2000, description="Comma-separated collection names")
    ] = None,
) -> Response:
    names = (
        [name.strip() for name in collections.split(",") if name.strip()] if collections else None
    )
    body = await service.pull(principal, cursor, limit, names)
    return Response(body, media_type="application/json")


@router.post(
    "/sync/force-sync",
    response_model=CursorResponse,
    summary="A cursor for a full re-download (after SYNC_006 or to rebuild a device)",
    responses=responses(ErrorCode.AUTH_001, ErrorCode.AUTH_006, ErrorCode.SYNC_005),
)
async def force_sync(
    principal: PrincipalDep, service: SyncDep, _protocol: ProtocolDep
) -> CursorResponse:
    return CursorResponse(cursor=service.force_sync_cursor(principal))


# Policies and conflicts


def _policy_out(collection: Collection) -> PolicyOut:
    return PolicyOut(
        tenant_id=collection.tenant_id,
        domain=collection.name,
        resolution_policy=collection.conflict_policy,
        auto_resolve=collection.auto_resolve,
        notify_on_conflict=collection.notify_on_conflict,
    )


@router.get(
    "/sync/policies/{tenant_id}/{domain}",
    response_model=PolicyOut,
    summary="The conflict policy of a collection",
    responses=responses(ErrorCode.AUTH_001, ErrorCode.AUTH_006, ErrorCode.NOT_FOUND),
)
async def get_policy(
    tenant_id: TenantPath, domain: NamePath, principal: PrincipalDep, service: ConflictsDep
) -> PolicyOut:
    principal.require(Permission.COLLECTIONS_READ)
    return _policy_out(await service.get_policy(principal, tenant_id, domain))


@router.put(
    "/sync/policies/{tenant_id}/{domain}",
    response_model=PolicyOut,
    summary="Set the conflict policy of a collection (owner/admin)",
    responses=responses(ErrorCode.AUTH_001, ErrorCode.AUTH_006, ErrorCode.NOT_FOUND),
)
async def set_policy(
    tenant_id: TenantPath,
    domain: NamePath,
    body: PolicyUpdate,
    principal: PrincipalDep,
    service: ConflictsDep,
) -> PolicyOut:
    principal.require(Permission.COLLECTIONS_WRITE)
    collection = await service.set_policy(
        principal,
        tenant_id,
        domain,
        body.resolution_policy,
        body.auto_resolve,
        body.notify_on_conflict,
    )
    return _policy_out(collection)


def _conflict_out(conflict: SyncConflict) -> ConflictOut:
    return ConflictOut(
        id=conflict.id,
        mobile_id=conflict.record_id,
        domain=conflict.collection,
        device_id=conflict.device_id,
        server_version=conflict.server_side,
        client_version=conflict.client_side,
        resolution_strategy=conflict.strategy,
        resolution_result=conflict.status,
        winning_version=conflict.winner,
        created_at=conflict.created_at,
        resolved_at=conflict.resolved_at,
    )


@router.get(
    "/sync/conflicts",
    response_model=ConflictList,
    summary="The conflict log (newest first) and the conflict rate",
    responses=responses(ErrorCode.AUTH_001, ErrorCode.AUTH_006),
)
async def list_conflicts(
    principal: PrincipalDep,
    service: ConflictsDep,
    tenant_id: Annotated[str | None, Query(max_length=64)] = None,
    domain: Annotated[str | None, Query(max_length=63)] = None,
    since: Annotated[datetime | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ConflictList:
    principal.require(Permission.CONFLICTS_READ)
    if since is not None and since.tzinfo is None:
        raise ProblemError(ErrorCode.VALIDATION_001, "since needs a time zone (e.g. Z)")
    rows, total, rate = await service.list(principal, tenant_id, domain, since, limit)
    return ConflictList(
        conflicts=[_conflict_out(row) for row in rows], total=total, conflict_rate_pct=rate
    )


@router.post(
    "/sync/conflicts/{conflict_id}/resolve",
    response_model=ConflictOut,
    summary="Resolve a pending conflict: accept_server, accept_client or merge (with data)",
    responses=responses(
        ErrorCode.AUTH_001,
        ErrorCode.AUTH_006,
        ErrorCode.NOT_FOUND,
        ErrorCode.SYNC_002,
        ErrorCode.VALIDATION_003,
    ),
)
async def resolve_conflict(
    conflict_id: IdPath,
    body: ConflictResolve,
    principal: PrincipalDep,
    service: ConflictsDep,
    sync: SyncDep,
) -> ConflictOut:
    principal.require(Permission.CONFLICTS_WRITE)
    conflict = await service.resolve(
        principal, conflict_id, body.resolution, body.data, sync.write_resolution
    )
    return _conflict_out(conflict)


@router.delete(
    "/sync/conflicts/{conflict_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Dismiss a conflict",
    responses=responses(ErrorCode.AUTH_001, ErrorCode.AUTH_006, ErrorCode.NOT_FOUND),
)
async def dismiss_conflict(
    conflict_id: IdPath, principal: PrincipalDep, service: ConflictsDep
) -> Response:
    principal.require(Permission.CONFLICTS_WRITE)
    await service.dismiss(principal, conflict_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
