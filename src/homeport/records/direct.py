"""The single-record writes as direct routes (``kit.direct``): the same endpoint functions,
called without FastAPI's dependency solving and body validation when the request is a
well-formed JSON object write. Anything else is declined and FastAPI answers it."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import TypeAdapter
from starlette.requests import Request
from starlette.responses import Response

from homeport.auth.dependencies import Credentials, read_checked_credentials
from homeport.kit.direct import DirectRoute, Handler, path_param
from homeport.records.endpoints import (
    JSON,
    MERGE_PATCH,
    create_record,
    delete_record,
    patch_record,
    replace_record,
    router,
)
from homeport.sync.schemas import CollectionName, RecordId

_collection_names: TypeAdapter[str] = TypeAdapter(CollectionName)
_record_ids: TypeAdapter[str] = TypeAdapter(RecordId)
# Exactly these (parameters aside): FastAPI reads any application/*json; a rarer spelling is
# left to it.
_JSON_TYPES = frozenset({JSON, MERGE_PATCH})


def _json_object(request: Request, body: bytes) -> dict[str, Any] | None:
    """The body as FastAPI's ``dict[str, Any]`` body parameter would take it, or None when
    that is not certain."""
    content_type = request.headers.get("content-type")
    if not body or content_type is None:
        return None
    if content_type.partition(";")[0].strip().lower() not in _JSON_TYPES:
        return None
    try:
        data = json.loads(body)
    except ValueError:  # FastAPI's 422 json_invalid
        return None
    return data if isinstance(data, dict) else None


async def _create(request: Request, params: dict[str, Any], body: bytes) -> Response | None:
    data = _json_object(request, body)
    collection = path_param(_collection_names, params["collection"])
    if data is None or collection is None:
        return None
    credentials = await read_checked_credentials(request)
    return await create_record(request, collection, credentials, data)


def _with_body(
    endpoint: Callable[[str, str, Credentials, dict[str, Any], str | None], Awaitable[Response]],
) -> Handler:
    """The handler of a write to one record that carries a body (replace, patch)."""

    async def handler(request: Request, params: dict[str, Any], body: bytes) -> Response | None:
        data = _json_object(request, body)
        target = _target(params)
        if data is None or target is None:
            return None
        credentials = await read_checked_credentials(request)
        return await endpoint(*target, credentials, data, request.headers.get("if-match"))

    return handler


async def _delete(request: Request, params: dict[str, Any], _body: bytes) -> Response | None:
    target = _target(params)
    if target is None:
        return None
    credentials = await read_checked_credentials(request)
    return await delete_record(*target, credentials, request.headers.get("if-match"))


def _target(params: dict[str, Any]) -> tuple[str, str] | None:
    """(collection, record id) of the path, when both are of their types."""
    collection = path_param(_collection_names, params["collection"])
    record_id = path_param(_record_ids, params["record_id"])
    if collection is None or record_id is None:
        return None
    return collection, record_id


def _route(method: str, path: str, endpoint: Any, handler: Handler) -> DirectRoute:
    return DirectRoute(method, router.prefix + path, endpoint, handler=handler)


DIRECT_ROUTES = (
    _route("POST", "/records", create_record, _create),
    _route("PUT", "/records/{record_id:path}", replace_record, _with_body(replace_record)),
    _route("PATCH", "/records/{record_id:path}", patch_record, _with_body(patch_record)),
    _route("DELETE", "/records/{record_id:path}", delete_record, _delete),
)
