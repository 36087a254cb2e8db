"""HTTP face of tus 1.0 under ``/api/v1/tus/``.

Every answer carries ``Tus-Resumable``; a request naming another protocol version gets 412.
A finished upload's answers name the file (``Homeport-File-Id``, ``Homeport-File-Url``).
"""

from __future__ import annotations

from email.utils import format_datetime
from typing import Annotated

from fastapi import Depends, Header, Request, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from homeport.auth.dependencies import BriefPrincipalDep, CredentialsDep
from homeport.auth.principal import Principal
from homeport.files.endpoints import file_url
from homeport.kit.errors import ErrorCode, ProblemError
from homeport.kit.http import public_base_url
from homeport.kit.problems import responses
from homeport.kit.routing import api_router
from homeport.kit.text import whole_number
from homeport.models.files import UploadSession
from homeport.uploads.dependencies import UploadServiceDep
from homeport.uploads.endpoints import UploadIdPath
from homeport.uploads.service import already
from homeport.uploads.tus import (
    CHECKSUM_ALGORITHMS,
    EXTENSIONS,
    TUS_VERSION,
    PatchResult,
    TusUploads,
    encode_metadata,
    parse_checksum,
    parse_metadata,
)

TUS_PREFIX = "/api/v1/tus"
OFFSET_TYPE = "application/offset+octet-stream"


async def require_tus_version(
    tus_resumable: Annotated[str | None, Header(alias="Tus-Resumable")] = None,
) -> None:
    if tus_resumable != TUS_VERSION:
        raise ProblemError(
            ErrorCode.UPLOAD_006,
            f"This server speaks tus {TUS_VERSION}; send Tus-Resumable: {TUS_VERSION}",
            headers={"Tus-Version": TUS_VERSION},
        )


router = api_router(prefix=TUS_PREFIX, tags=["tus"])
# Everything but OPTIONS (discovery) insists on the protocol version. A router of its own,
# not one included in ``router``: the app keeps its route table flat.
versioned = api_router(prefix=TUS_PREFIX, tags=["tus"], dependencies=[Depends(require_tus_version)])

_ERRORS = (
    ErrorCode.AUTH_001,
    ErrorCode.AUTH_006,
    ErrorCode.NOT_FOUND,
    ErrorCode.UPLOAD_001,
    ErrorCode.UPLOAD_003,
    ErrorCode.UPLOAD_006,
)


def _tus_headers(upload: UploadSession | None = None) -> dict[str, str]:
    headers = {"Tus-Resumable": TUS_VERSION, "Cache-Control": "no-store"}
    if upload is not None:
        headers["Upload-Offset"] = str(upload.offset)
        headers["Upload-Length"] = str(upload.total_size)
        headers["Upload-Expires"] = format_datetime(upload.expires_at, usegmt=True)
    return headers


def _with_file(
    headers: dict[str, str], request: Request, service: UploadServiceDep, file_id: str | None
) -> dict[str, str]:
    if file_id is not None:
        headers["Homeport-File-Id"] = file_id
        headers["Homeport-File-Url"] = file_url(
            request, service.settings, service.secret_key, file_id, ""
        )
    return headers


def _length(value: str | None) -> int:
    length = None if value is None else whole_number(value, 19)
    if length is None:
        raise ProblemError(ErrorCode.UPLOAD_001, "Upload-Length must be a whole number of bytes")
    return length


@router.options(
    "/",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="tus capabilities",
    response_class=Response,
)
@router.options(
    "/{upload_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="tus capabilities",
    response_class=Response,
    include_in_schema=False,
)
async def tus_options(service: UploadServiceDep) -> Response:
    return Response(
        status_code=status.HTTP_204_NO_CONTENT,
        headers={
            "Tus-Resumable": TUS_VERSION,
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": EXTENSIONS,
            "Tus-Max-Size": str(service.settings.uploads_max_file_bytes),
            "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
        },
    )


@versioned.post(
    "/",
    status_code=status.HTTP_201_CREATED,
    summary="Create an upload (creation; a body is creation-with-upload)",
    response_class=Response,
    responses=responses(*_ERRORS, ErrorCode.UPLOAD_007, ErrorCode.UPLOAD_002),
)
async def tus_create(
    request: Request,
    principal: BriefPrincipalDep,
    service: UploadServiceDep,
    upload_length: Annotated[str | None, Header(alias="Upload-Length")] = None,
    upload_metadata: Annotated[str | None, Header(alias="Upload-Metadata")] = None,
    upload_checksum: Annotated[str | None, Header(alias="Upload-Checksum")] = None,
    content_type: Annotated[str | None, Header(alias="Content-Type")] = None,
) -> Response:
    length = _length(upload_length)
    if length == 0:
        raise ProblemError(ErrorCode.UPLOAD_001, "Upload-Length must be at least 1")
    tus = TusUploads(service)
    checksum = parse_checksum(upload_checksum)
    upload = await tus.create(principal, length, parse_metadata(upload_metadata))
    base = public_base_url(request.scope, service.settings.public_url)
    headers = _tus_headers(upload)
    headers["Location"] = f"{base}{TUS_PREFIX}/{upload.id}"
    if content_type == OFFSET_TYPE:
        result = await tus.patch(already(principal), upload.id, 0, request.stream(), checksum)
        headers.update(_tus_headers(result.upload))
        headers["Upload-Offset"] = str(result.offset)
        _with_file(headers, request, service, _file_id(result))
    return Response(status_code=status.HTTP_201_CREATED, headers=headers)


def _content_length(header: str | None) -> int | None:
    """The body's declared length, when it is a plain whole number (else unknown)."""
    if header is None or not (header.isascii() and header.isdigit()) or len(header) > 19:
        return None
    return int(header)


def _file_id(result: PatchResult) -> str | None:
    return result.finished.file.id if result.finished is not None else result.upload.file_id


@versioned.head(
    "/{upload_id}",
    summary="The upload's offset",
    response_class=Response,
    responses=responses(*_ERRORS),
)
async def tus_head(
    request: Request,
    upload_id: UploadIdPath,
    principal: BriefPrincipalDep,
    service: UploadServiceDep,
) -> Response:
    upload = await TusUploads(service).head(principal, upload_id)
    headers = _tus_headers(upload)
    if upload.tus_metadata:
        headers["Upload-Metadata"] = encode_metadata(upload.tus_metadata)
    return Response(
        status_code=status.HTTP_200_OK,
        headers=_with_file(headers, request, service, upload.file_id),
    )


@versioned.patch(
    "/{upload_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Append bytes at Upload-Offset",
    response_class=Response,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {OFFSET_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        }
    },
    responses=responses(
        *_ERRORS,
        ErrorCode.UPLOAD_002,
        ErrorCode.UPLOAD_004,
        ErrorCode.UPLOAD_005,
        ErrorCode.UPLOAD_007,
    ),
)
async def tus_patch(
    request: Request,
    upload_id: UploadIdPath,
    credentials: CredentialsDep,
    service: UploadServiceDep,
    upload_offset: Annotated[str | None, Header(alias="Upload-Offset")] = None,
    upload_checksum: Annotated[str | None, Header(alias="Upload-Checksum")] = None,
    content_type: Annotated[str | None, Header(alias="Content-Type")] = None,
) -> Response:
    offset = None if upload_offset is None else whole_number(upload_offset, 19)

    async def authenticate(session: AsyncSession) -> Principal:
        # Who asks comes first (401 before any complaint about the request), in the PATCH's
        # first unit of work.
        principal = await credentials.principal(session)
        if content_type != OFFSET_TYPE:
            raise ProblemError(
                ErrorCode.UPLOAD_001, f"PATCH bodies must be {OFFSET_TYPE}", status=415
            )
        if offset is None:
            raise ProblemError(ErrorCode.UPLOAD_001, "Upload-Offset must be a whole number")
        return principal

    well_formed = content_type == OFFSET_TYPE and offset is not None
    result = await TusUploads(service).patch(
        authenticate,
        upload_id,
        offset or 0,
        request.stream(),
        parse_checksum(upload_checksum),
        claims=credentials.access_claims() if well_formed else None,
        length=_content_length(request.headers.get("content-length")),
    )
    headers = _tus_headers(result.upload)
    headers["Upload-Offset"] = str(result.offset)
    return Response(
        status_code=status.HTTP_204_NO_CONTENT,
        headers=_with_file(headers, request, service, _file_id(result)),
    )


@versioned.delete(
    "/{upload_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Terminate an upload and free its storage",
    response_class=Response,
    responses=responses(*_ERRORS, ErrorCode.UPLOAD_004, ErrorCode.VALIDATION_003),
)
async def tus_delete(
    upload_id: UploadIdPath, principal: BriefPrincipalDep, service: UploadServiceDep
) -> Response:
    await TusUploads(service).terminate(principal, upload_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT, headers=_tus_headers())
