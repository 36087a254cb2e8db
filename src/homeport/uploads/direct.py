"""The upload hot paths as direct routes (``kit.direct``): a REST chunk and a tus ``PATCH``
call the same endpoint functions with the same dependency callables, without FastAPI's
routing and dependency solving. Their bodies stream, so each route decides from the path and
headers alone: a path parameter FastAPI would refuse, or a tus request of another protocol
version, goes on to FastAPI untouched and gets exactly the answer it always got."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter
from starlette.requests import Request
from starlette.responses import Response

from homeport.auth.dependencies import read_credentials
from homeport.kit.direct import DirectRoute, path_param
from homeport.uploads import endpoints, tus_endpoints
from homeport.uploads.dependencies import upload_service
from homeport.uploads.tus import TUS_VERSION

# The endpoints' own path parameter types (tus uses the same upload id).
_upload_ids: TypeAdapter[str] = TypeAdapter(endpoints.UploadIdPath)
_chunk_indexes: TypeAdapter[int] = TypeAdapter(endpoints.ChunkIndexPath)


async def _chunk(request: Request, params: dict[str, Any]) -> Response | None:
    upload_id = path_param(_upload_ids, params["upload_id"])
    index = path_param(_chunk_indexes, params["chunk_index"])
    if upload_id is None or index is None:
        return None
    credentials = await read_credentials(request)
    service = await upload_service(request.app.state.homeport)
    checksum = request.headers.get("x-chunk-checksum")
    return await endpoints.put_chunk(request, upload_id, index, credentials, service, checksum)


async def _tus_patch(request: Request, params: dict[str, Any]) -> Response | None:
    upload_id = path_param(_upload_ids, params["upload_id"])
    headers = request.headers
    # The versioned router's dependency answers 412 to another version.
    if upload_id is None or headers.get("tus-resumable") != TUS_VERSION:
        return None
    credentials = await read_credentials(request)
    service = await upload_service(request.app.state.homeport)
    return await tus_endpoints.tus_patch(
        request,
        upload_id,
        credentials,
        service,
        headers.get("upload-offset"),
        headers.get("upload-checksum"),
        headers.get("content-type"),
    )


DIRECT_ROUTES = (
    DirectRoute(
        "POST",
        endpoints.router.prefix + "/{upload_id}/chunk/{chunk_index}",
        endpoints.put_chunk,
        stream_handler=_chunk,
    ),
    DirectRoute(
        "PATCH",
        tus_endpoints.TUS_PREFIX + "/{upload_id}",
        tus_endpoints.tus_patch,
        stream_handler=_tus_patch,
    ),
)
