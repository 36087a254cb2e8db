"""HTTP face of the REST chunk protocol under ``/api/v1/uploads``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header, Path, Request, Response, status

from homeport.auth.dependencies import BriefPrincipalDep, CredentialsDep
from homeport.files.endpoints import file_url
from homeport.kit.errors import ErrorCode
from homeport.kit.problems import responses
from homeport.kit.routing import api_router
from homeport.uploads.chunks import ChunkUploads
from homeport.uploads.dependencies import UploadServiceDep
from homeport.uploads.schemas import (
    ChunkAccepted,
    UploadCancelled,
    UploadCreated,
    UploadFinalized,
    UploadInit,
    UploadStatus,
)
from homeport.uploads.service import progress

router = api_router(prefix="/api/v1/uploads", tags=["uploads"])

INIT_PATH = "/api/v1/uploads/init"
CHUNK_INDEX_MAX = 100_000
UploadIdPath = Annotated[str, Path(min_length=1, max_length=64)]
ChunkIndexPath = Annotated[int, Path(ge=0, le=CHUNK_INDEX_MAX)]
_SESSION_ERRORS = (
    ErrorCode.AUTH_001,
    ErrorCode.AUTH_006,
    ErrorCode.NOT_FOUND,
    ErrorCode.UPLOAD_001,
    ErrorCode.UPLOAD_003,
    ErrorCode.UPLOAD_004,
)


@router.post(
    "/init",
    response_model=UploadCreated,
    status_code=status.HTTP_201_CREATED,
    summary="Start a resumable upload",
    responses=responses(ErrorCode.AUTH_001, ErrorCode.AUTH_006, ErrorCode.UPLOAD_007),
)
async def init_upload(
    body: UploadInit, principal: BriefPrincipalDep, service: UploadServiceDep
) -> UploadCreated:
    upload = await ChunkUploads(service).init(principal, body)
    return UploadCreated(
        upload_id=upload.id,
        chunk_size=upload.chunk_size,
        total_chunks=upload.total_chunks,
        expires_at=upload.expires_at,
    )


@router.post(
    "/{upload_id}/chunk/{chunk_index}",
    response_model=ChunkAccepted,
    summary="Send one chunk (any order; re-sending is fine)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
    responses=responses(*_SESSION_ERRORS, ErrorCode.UPLOAD_002, ErrorCode.PAYLOAD_TOO_LARGE),
)
async def put_chunk(
    request: Request,
    upload_id: UploadIdPath,
    chunk_index: ChunkIndexPath,
    credentials: CredentialsDep,
    service: UploadServiceDep,
    checksum: Annotated[
        str | None,
        Header(alias="X-Chunk-Checksum", description="SHA-256 (hex) of this chunk."),
    ] = None,
) -> Response:
    result = await ChunkUploads(service).put_chunk(
        credentials.principal,
        credentials.access_claims(),
        upload_id,
        chunk_index,
        request.stream(),
        checksum,
    )
    accepted = ChunkAccepted(
        uploaded=True,
        chunk_index=result.chunk_index,
        remaining_chunks=result.remaining_chunks,
        progress_pct=result.progress_pct,
    )
    # Serialised here, not by FastAPI: the direct route calls this function too.
    return Response(accepted.model_dump_json(), media_type="application/json")


@router.get(
    "/{upload_id}/status",
    response_model=UploadStatus,
    summary="Which chunks arrived and which are missing",
    responses=responses(*_SESSION_ERRORS),
)
async def upload_status(
    upload_id: UploadIdPath, principal: BriefPrincipalDep, service: UploadServiceDep
) -> UploadStatus:
    result = await ChunkUploads(service).status(principal, upload_id)
    upload = result.upload
    return UploadStatus(
        upload_id=upload.id,
        status=upload.status,
        uploaded_chunks=result.uploaded,
        missing_chunks=result.missing,
        progress_pct=progress(len(result.uploaded), upload.total_chunks),
        expires_at=upload.expires_at,
        file_id=upload.file_id,
    )


@router.post(
    "/{upload_id}/finalize",
    response_model=UploadFinalized,
    summary="Check every chunk and the whole file's SHA-256; make it a file (idempotent)",
    responses=responses(*_SESSION_ERRORS, ErrorCode.UPLOAD_002, ErrorCode.UPLOAD_008),
)
async def finalize_upload(
    request: Request,
    upload_id: UploadIdPath,
    principal: BriefPrincipalDep,
    service: UploadServiceDep,
) -> UploadFinalized:
    finished, stored = await ChunkUploads(service).finalize(principal, upload_id)
    return UploadFinalized(
        finalized=True,
        file_id=stored.id,
        file_url=file_url(request, service.settings, service.secret_key, stored.id, ""),
        file_size=stored.size,
        checksum=stored.sha256,
        mime_type=stored.mime_type,
        deduplicated=finished.deduplicated,
    )


@router.delete(
    "/{upload_id}",
    response_model=UploadCancelled,
    summary="Cancel an upload and free its storage",
    responses=responses(*_SESSION_ERRORS, ErrorCode.VALIDATION_003),
)
async def cancel_upload(
    upload_id: UploadIdPath, principal: BriefPrincipalDep, service: UploadServiceDep
) -> UploadCancelled:
    await ChunkUploads(service).cancel(principal, upload_id)
    return UploadCancelled(cancelled=True, message="Upload cancelled; its data is being deleted")
