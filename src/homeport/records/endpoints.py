"""HTTP face of the records API: ``/api/v1/collections/{collection}/records``."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Body, Depends, Header, Path, Query, Request, Response, status

from homeport.auth.dependencies import CheckedCredentialsDep, Credentials, PrincipalDep
from homeport.kit.errors import PROBLEM_CONTENT_TYPE, ErrorCode
from homeport.kit.problems import Problem, responses
from homeport.kit.routing import api_router
from homeport.records.etags import etag, if_match_version, none_match
from homeport.records.query import OPERATORS
from homeport.records.schemas import (
    BatchOperation,
    BatchRequest,
    BatchResponse,
    RecordOut,
    RecordPage,
)
from homeport.records.service import RecordService, RecordView
from homeport.records.writes import GroupedWrites
from homeport.state import SessionDep, StateDep
from homeport.sync.schemas import CollectionName, RecordId

router = api_router(prefix="/api/v1/collections/{collection}", tags=["records"])

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
# Record answers are per caller; a private cache may keep them but must revalidate (ETag).
CACHE_CONTROL = "private, no-cache"
VARY = "Authorization, X-API-Key"

CollectionPath = Annotated[CollectionName, Path(description="The collection's name.")]
IdPath = Annotated[RecordId, Path(description="The record id.")]
IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        description='The ETag (`"<version>"`) the write expects; 412 `SYNC_004` when the '
        "record is at another version. `*`: the record must exist.",
    ),
]

_PRECONDITION: dict[int | str, dict[str, Any]] = {
    412: {
        "model": Problem,
        "content": {PROBLEM_CONTENT_TYPE: {}},
        "description": "SYNC_004: If-Match names another version than the current one",
    }
}
_READ_ERRORS = (ErrorCode.AUTH_001, ErrorCode.AUTH_006, ErrorCode.NOT_FOUND)
_WRITE_ERRORS = (*_READ_ERRORS, ErrorCode.SYNC_001, ErrorCode.SYNC_002)


def _documented(
    *codes: ErrorCode, extra: dict[int | str, dict[str, Any]] | None = None
) -> dict[int | str, dict[str, Any]]:
    documented = responses(*codes)
    documented.update(extra or {})
    return documented


async def record_service(state: StateDep, session: SessionDep) -> RecordService:
    return RecordService(session, state.settings, state.secret_key)


RecordsDep = Annotated[RecordService, Depends(record_service)]


async def _write(
    credentials: Credentials, collection: str, operation: BatchOperation
) -> RecordView | None:
    """A single write, in a transaction shared with concurrent ones (the app's grouped writes
    are looked up here, not by a dependency: FastAPI's solving of one costs more than this)."""
    writes: GroupedWrites = credentials.state.record_writes
    return await writes.write(credentials, collection, operation)


def _record_headers(view: RecordView) -> dict[str, str]:
    return {"ETag": etag(view.version), "Cache-Control": CACHE_CONTROL, "Vary": VARY}


def _record_response(view: RecordView, status_code: int = 200) -> Response:
    return Response(
        view.body, status_code=status_code, media_type=JSON, headers=_record_headers(view)
    )


def _condition(if_match: str | None) -> int | None:
    """The version an If-Match header expects (None: any, when absent or ``*``)."""
    _given, version = if_match_version(if_match)
    return version


_FILTER_PARAMETER = {
    "name": "filter",
    "in": "query",
    "style": "deepObject",
    "explode": True,
    "required": False,
    "description": "Filters on top-level fields the schema declares: `filter[status]=open` "
    "(equality) or `filter[priority][gte]=3`. Operators: "
    + ", ".join(f"`{op}`" for op in OPERATORS)
    + " (`in` takes a comma-separated list; `contains` is an element of an array or a "
    "case-insensitive substring). Values are read by the field's schema type. An unknown "
    "field or operator is a 400 `VALIDATION_004` naming the parameter.",
    "schema": {"type": "object", "additionalProperties": {"type": "string"}},
}


@router.get(
    "/records",
    response_model=None,
    summary="List records: filters, sort, fields, cursor pagination",
    openapi_extra={"parameters": [_FILTER_PARAMETER]},
    responses=_documented(
        *_READ_ERRORS,
        ErrorCode.VALIDATION_004,
        extra={200: {"model": RecordPage, "description": "A page of records"}},
    ),
)
async def list_records(
    request: Request,
    collection: CollectionPath,
    principal: PrincipalDep,
    service: RecordsDep,
    limit: Annotated[
        int | None, Query(ge=1, description="Records per page (default 50, at most 1000).")
    ] = None,
    cursor: Annotated[
        str | None, Query(max_length=2000, description="`next_cursor` of the previous page.")
    ] = None,
    sort: Annotated[
        str | None,
        Query(
            max_length=100,
            description="One key, `-` for descending: `id` (default), `created_at`, "
            "`updated_at`, or a field the collection declares `sortable`. The id breaks ties.",
        ),
    ] = None,
    fields: Annotated[
        str | None,
        Query(max_length=2000, description="Comma-separated fields of `data` to return."),
    ] = None,
    q: Annotated[
        str | None,
        Query(max_length=500, description="Full-text search over the searchable fields."),
    ] = None,
) -> Response:
    # The named parameters above document and pre-check the list; `filter[...]` keys are
    # dynamic, so the service reads every parameter from the query string, in order.
    body = await service.list_page(principal, collection, request.query_params.multi_items())
    return Response(body, media_type=JSON, headers={"Cache-Control": CACHE_CONTROL, "Vary": VARY})


@router.get(
    "/records/{record_id:path}",
    response_model=None,
    summary="One record, with an ETag; If-None-Match gives 304",
    responses=_documented(
        *_READ_ERRORS,
        extra={
            200: {"model": RecordOut, "description": "The record"},
            304: {"description": "Not modified: If-None-Match names the current ETag"},
        },
    ),
)
async def get_record(
    collection: CollectionPath,
    record_id: IdPath,
    principal: PrincipalDep,
    service: RecordsDep,
    if_none_match: Annotated[
        str | None,
        Header(alias="If-None-Match", description="ETags the client holds: 304 when current."),
    ] = None,
) -> Response:
    view = await service.get(principal, collection, record_id)
    if if_none_match is not None and none_match(if_none_match, view.version):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=_record_headers(view))
    return _record_response(view)


@router.post(
    "/records",
    response_model=None,
    status_code=status.HTTP_201_CREATED,
    summary="Create a record (the id comes from the id field, or is generated)",
    responses=_documented(
        *_WRITE_ERRORS,
        ErrorCode.VALIDATION_002,
        extra={201: {"model": RecordOut, "description": "The record created"}},
    ),
)
async def create_record(
    request: Request,
    collection: CollectionPath,
    credentials: CheckedCredentialsDep,
    data: Annotated[dict[str, Any], Body(description="The record.")],
) -> Response:
    view = await _write(credentials, collection, BatchOperation(op="create", data=data))
    assert view is not None
    response = _record_response(view, status.HTTP_201_CREATED)
    # Escaped: an id may hold "/", "?", "#", "%" or non-ASCII characters. The request's
    # path as it came (what request.url.path gives for a collection's name, without building
    # the whole URL).
    location = quote(view.record_id, safe="")
    response.headers["Location"] = f"{request.scope['path'].rstrip('/')}/{location}"
    return response


@router.put(
    "/records/{record_id:path}",
    response_model=None,
    summary="Replace a record (If-Match for optimistic concurrency)",
    responses=_documented(
        *_WRITE_ERRORS,
        extra={200: {"model": RecordOut, "description": "The record now"}, **_PRECONDITION},
    ),
)
async def replace_record(
    collection: CollectionPath,
    record_id: IdPath,
    credentials: CheckedCredentialsDep,
    data: Annotated[dict[str, Any], Body(description="The whole record.")],
    if_match: IfMatch = None,
) -> Response:
    operation = BatchOperation(op="replace", id=record_id, data=data, if_match=_condition(if_match))
    view = await _write(credentials, collection, operation)
    assert view is not None
    return _record_response(view)


@router.patch(
    "/records/{record_id:path}",
    response_model=None,
    summary="Change a record with a JSON Merge Patch (RFC 7396: null removes a field)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                MERGE_PATCH: {"schema": {"type": "object"}},
                JSON: {"schema": {"type": "object"}},
            },
        }
    },
    responses=_documented(
        *_WRITE_ERRORS,
        extra={200: {"model": RecordOut, "description": "The record now"}, **_PRECONDITION},
    ),
)
async def patch_record(
    collection: CollectionPath,
    record_id: IdPath,
    credentials: CheckedCredentialsDep,
    patch: Annotated[dict[str, Any], Body()],
    if_match: IfMatch = None,
) -> Response:
    operation = BatchOperation(op="patch", id=record_id, data=patch, if_match=_condition(if_match))
    view = await _write(credentials, collection, operation)
    assert view is not None
    return _record_response(view)


@router.delete(
    "/records/{record_id:path}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a record (a tombstone in the sync feed)",
    responses=_documented(*_WRITE_ERRORS, extra=_PRECONDITION),
)
async def delete_record(
    collection: CollectionPath,
    record_id: IdPath,
    credentials: CheckedCredentialsDep,
    if_match: IfMatch = None,
) -> Response:
    operation = BatchOperation(op="delete", id=record_id, if_match=_condition(if_match))
    await _write(credentials, collection, operation)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/records:batch",
    response_model=BatchResponse,
    summary="Up to 1,000 operations, atomic or best effort, idempotent with Idempotency-Key",
    responses=_documented(
        ErrorCode.AUTH_001,
        ErrorCode.AUTH_006,
        ErrorCode.NOT_FOUND,
        ErrorCode.SYNC_001,
        ErrorCode.SYNC_003,
    ),
)
async def batch_records(
    collection: CollectionPath,
    body: BatchRequest,
    principal: PrincipalDep,
    service: RecordsDep,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            max_length=200,
            description="A replay with the same key and body gets the stored answer; the same "
            "key with another body is 409 `SYNC_003`.",
        ),
    ] = None,
) -> dict[str, Any]:
    answer, replayed = await service.batch(principal, collection, body, idempotency_key)
    response.headers["Cache-Control"] = "no-store"
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return answer
