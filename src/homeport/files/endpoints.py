"""HTTP face of files: metadata, signed downloads with Range, deletion, inline images."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Path, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from homeport.auth.dependencies import BriefPrincipalDep, PrincipalDep
from homeport.auth.principal import Permission
from homeport.config import Settings
from homeport.files.images import ImageRejected, RejectionCode, decode_base64_image, inspect_image
from homeport.files.schemas import FileList, FileOut, ImageOut, InlineImage, VariantOut
from homeport.files.service import Content, FileService, FileView, Owner
from homeport.files.signing import signed_path
from homeport.files.sniff import ContentTypeMismatch, check_declared
from homeport.kit.clock import utcnow
from homeport.kit.errors import ErrorCode, ProblemError
from homeport.kit.http import public_base_url
from homeport.kit.ids import new_id
from homeport.kit.problems import responses
from homeport.kit.routing import api_router
from homeport.kit.storage import ObjectMissing, StorageError
from homeport.state import SessionDep, StateDep, unit_of_work

router = api_router(prefix="/api/v1/files", tags=["files"])

IMAGES_PATH = "/api/v1/files/images"
FileIdPath = Annotated[str, Path(min_length=1, max_length=64)]
# Shown in the browser; anything else (HTML, SVG, ...) is a download, never rendered here.
_INLINE_TYPES = re.compile(
    r"^(image/(jpeg|png|gif|webp|heic|heif|avif)|video/.*|audio/.*|application/pdf)$"
)
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _base(request: Request, settings: Settings) -> str:
    return public_base_url(request.scope, settings.public_url)


def file_url(
    request: Request, settings: Settings, secret_key: str, file_id: str, variant: str
) -> str:
    """An absolute signed download URL, valid for ``HOMEPORT_FILES_URL_TTL_SECONDS``."""
    expires_at = utcnow() + timedelta(seconds=settings.files_url_ttl_seconds)
    return _base(request, settings) + signed_path(secret_key, file_id, variant, expires_at)


def _file_out(request: Request, state: StateDep, view: FileView) -> FileOut:
    settings = state.settings
    expires_at = utcnow() + timedelta(seconds=settings.files_url_ttl_seconds)
    base = _base(request, settings)

    def url(variant: str) -> str:
        return base + signed_path(state.secret_key, view.file.id, variant, expires_at)

    stored, blob = view.file, view.blob
    image = None
    if blob.variants_status is not None:
        image = ImageOut(
            width=blob.width,
            height=blob.height,
            variants_status=blob.variants_status,
        )
    return FileOut(
        id=stored.id,
        filename=stored.filename,
        mime_type=stored.mime_type,
        size=stored.size,
        checksum=stored.sha256,
        access=stored.access,
        owner_id=stored.owner_id,
        created_at=stored.created_at,
        url=url(""),
        url_expires_at=expires_at,
        image=image,
        variants=[
            VariantOut(
                name=variant.name,
                format=variant.format,
                mime_type=variant.mime_type,
                width=variant.width,
                height=variant.height,
                size=variant.size,
                url=url(f"{variant.name}.{variant.format}"),
            )
            for variant in view.variants
        ],
    )


@router.get(
    "",
    response_model=FileList,
    summary="Files the caller can read, newest first",
    responses=responses(ErrorCode.AUTH_001, ErrorCode.AUTH_006),
)
async def list_files(
    request: Request,
    state: StateDep,
    session: SessionDep,
    principal: PrincipalDep,
    cursor: Annotated[
        str | None, Query(max_length=64, description="next_cursor of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> FileList:
    service = FileService(session, state.settings, state.secret_key)
    found = await service.list_files(principal, after=cursor, limit=limit + 1)
    page = found[:limit]
    views = [await service.view_of(stored) for stored in page]
    return FileList(
        files=[_file_out(request, state, view) for view in views],
        next_cursor=page[-1].id if len(found) > limit else None,
    )


@router.post(
    "/images",
    response_model=FileOut,
    status_code=status.HTTP_201_CREATED,
    summary="Store a small base64 image (data URL or bare) in one request",
    responses=responses(
        ErrorCode.AUTH_001,
        ErrorCode.AUTH_006,
        ErrorCode.UPLOAD_001,
        ErrorCode.UPLOAD_007,
        ErrorCode.UPLOAD_008,
    ),
)
async def upload_inline_image(
    request: Request, body: InlineImage, state: StateDep, principal: BriefPrincipalDep
) -> FileOut:
    principal.require(Permission.FILES_WRITE)
    settings = state.settings
    try:
        data, declared = decode_base64_image(body.image, max_bytes=settings.images_max_inline_bytes)
        info = await asyncio.to_thread(inspect_image, data, max_pixels=settings.images_max_pixels)
    except ImageRejected as exc:
        code = ErrorCode.UPLOAD_007 if exc.code == RejectionCode.TOO_LARGE else ErrorCode.UPLOAD_008
        raise ProblemError(code, exc.reason, extra={"reason": exc.code}) from exc
    try:
        mime_type = check_declared(declared or info.mime_type, data[:8192])
    except ContentTypeMismatch as exc:
        raise ProblemError(
            ErrorCode.UPLOAD_001, f"The data URL says {declared!r} but the bytes are {exc.sniffed}"
        ) from exc
    digest = hashlib.sha256(data).hexdigest()
    key = f"t/{principal.tenant_id}/i/{new_id()}"
    try:
        await state.storage.put(key, data, mime_type)
    except StorageError as exc:
        raise ProblemError(
            ErrorCode.UNAVAILABLE, "File storage is unavailable; retry later"
        ) from exc
    extension = mime_type.rsplit("/", 1)[-1].replace("jpeg", "jpg")
    async with unit_of_work(state) as session:
        service = FileService(session, settings, state.secret_key)
        stored, _ = await service.adopt(
            principal.tenant_id,
            Owner.of(principal),
            Content(key, len(data), digest, mime_type, info.width, info.height),
            filename=body.filename or f"image.{extension}",
            access=body.access,
            upload_id=None,
        )
        view = await service.view_of(stored)
    return _file_out(request, state, view)


@router.get(
    "/{file_id}",
    response_model=FileOut,
    summary="A file's metadata, signed download URL and image variants",
    responses=responses(ErrorCode.AUTH_001, ErrorCode.AUTH_006, ErrorCode.NOT_FOUND),
)
async def get_file(
    request: Request,
    file_id: FileIdPath,
    state: StateDep,
    session: SessionDep,
    principal: PrincipalDep,
) -> FileOut:
    view = await FileService(session, state.settings, state.secret_key).view(principal, file_id)
    return _file_out(request, state, view)


@router.delete(
    "/{file_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a file (its bytes go when no other file shares them)",
    responses=responses(ErrorCode.AUTH_001, ErrorCode.AUTH_006, ErrorCode.NOT_FOUND),
)
async def delete_file(
    file_id: FileIdPath, state: StateDep, session: SessionDep, principal: PrincipalDep
) -> Response:
    await FileService(session, state.settings, state.secret_key).delete(principal, file_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One ``bytes=`` range as [start, end); ``None`` for the whole file (no header, several
    ranges or a malformed one: a server may ignore Range). Raises for an unsatisfiable one."""
    if header is None:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        length = int(last)
        if length == 0:
            raise _Unsatisfiable
        return max(0, size - length), size
    start = int(first)
    end = min(size, int(last) + 1) if last else size
    if start >= size or (last and int(last) < start):
        raise _Unsatisfiable
    return start, end


class _Unsatisfiable(Exception):
    pass


_DOWNLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/octet-stream": {}}, "description": "The bytes"},
    206: {"content": {"application/octet-stream": {}}, "description": "A byte range"},
    304: {"description": "Not modified"},
    **responses(ErrorCode.AUTH_002, ErrorCode.AUTH_006, ErrorCode.NOT_FOUND, ErrorCode.FILE_001),
}


@router.head(
    "/{file_id}/content",
    summary="Headers of a download (size, type, ETag) through a signed URL",
    response_class=Response,
    responses=_DOWNLOAD_RESPONSES,
    operation_id="head_file_content",
)
@router.get(
    "/{file_id}/content",
    summary="Download through a signed URL (no token); supports Range",
    response_class=Response,
    responses=_DOWNLOAD_RESPONSES,
    operation_id="get_file_content",
)
async def download(
    request: Request,
    file_id: FileIdPath,
    state: StateDep,
    session: SessionDep,
    expires: Annotated[int, Query(ge=0, le=2**40)],
    signature: Annotated[str, Query(min_length=1, max_length=128)],
    variant: Annotated[str, Query(max_length=40, pattern=r"^[a-z]+\.[a-z]+$")] = "",
) -> Response:
    found = await FileService(session, state.settings, state.secret_key).download(
        file_id, variant, expires, signature
    )
    etag = f'"{found.etag}"'
    disposition = "inline" if _INLINE_TYPES.match(found.mime_type) else "attachment"
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Cache-Control": f"private, max-age={max(0, expires - int(utcnow().timestamp()))}",
        "Content-Disposition": f"{disposition}; filename*=UTF-8''{quote(found.filename)}",
        "Content-Security-Policy": "sandbox",
    }
    if request.headers.get("if-none-match") in (etag, found.etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    try:
        byte_range = _byte_range(request.headers.get("range"), found.size)
    except _Unsatisfiable as exc:
        raise ProblemError(
            ErrorCode.FILE_001,
            f"The file has {found.size} bytes",
            headers={"Content-Range": f"bytes */{found.size}"},
        ) from exc
    if_range = request.headers.get("if-range")
    if byte_range is not None and if_range is not None and if_range != etag:
        byte_range = None
    start, end = byte_range or (0, found.size)
    headers["Content-Length"] = str(end - start)
    code = status.HTTP_200_OK
    if byte_range is not None:
        code = status.HTTP_206_PARTIAL_CONTENT
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{found.size}"
    if request.method == "HEAD":
        return Response(status_code=code, headers=headers, media_type=found.mime_type)
    storage = state.storage
    blocks = storage.read(found.storage_key, start, end)
    try:
        first = await anext(blocks, b"")
    except ObjectMissing as exc:
        raise ProblemError(ErrorCode.NOT_FOUND, "The file's bytes are gone") from exc
    except StorageError as exc:
        raise ProblemError(
            ErrorCode.UNAVAILABLE, "File storage is unavailable; retry later"
        ) from exc

    async def body() -> AsyncIterator[bytes]:
        if first:
            yield first
        async for block in blocks:
            yield block

    return StreamingResponse(body(), status_code=code, headers=headers, media_type=found.mime_type)
