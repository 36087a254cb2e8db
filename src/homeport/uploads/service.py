"""Resumable uploads: the rules shared by the REST chunk protocol and tus.

Bytes never travel inside a database transaction: SQLite has one writer, and a phone on a
slow link may take minutes to send a chunk. So each step reads or writes the upload's row in a
short unit of work handed in by the request (``begin``), and storage I/O happens between them.
(One exception: verified bytes that go to a local file after their body, a REST chunk or a
tus ``PATCH`` of an upload the process knows or a chunk that replaces a stored one, are written
inside the transaction that records them: at most 4 MiB, to the page cache; see ``chunks`` and
``tus``.)
A tus ``PATCH`` or a finalize holds a lease on the row (``lock_owner``/``locked_until``), so a
second writer is refused with 423 instead of interleaving; a lease whose holder died expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from homeport.auth.principal import Permission, Principal
from homeport.auth.tokens import AccessClaims
from homeport.config import Settings
from homeport.files.images import ImageInfo, ImageRejected, inspect_image
from homeport.files.service import VARIANT_SOURCE_TYPES, Content, FileService, Owner
from homeport.files.sniff import HEAD_BYTES, ContentTypeMismatch, check_declared
from homeport.kit.clock import utcnow
from homeport.kit.errors import ErrorCode, ProblemError, not_found
from homeport.kit.ids import new_id
from homeport.kit.jobs import enqueue
from homeport.kit.storage import (
    LocalStorage,
    ObjectMissing,
    Part,
    Storage,
    StorageError,
    sha256_of,
)
from homeport.models.files import StoredFile, UploadSession
from homeport.uploads.digests import RunningDigests
from homeport.uploads.known import KnownUpload, KnownUploads
from homeport.uploads.repository import UploadRepository

Begin = Callable[[], AbstractAsyncContextManager[AsyncSession]]

DISCARD_JOB = "uploads.discard"
LEASE = timedelta(seconds=60)
# Images up to this size are decoded once at finish to reject corrupt files and bombs.
IMAGE_CHECK_MAX_BYTES = 64 * 1024 * 1024


# Resolves the caller inside a unit of work the upload code opens (see
# homeport.auth.dependencies.Credentials): the hot paths authenticate in their first
# transaction instead of one of its own.
Authenticate = Callable[[AsyncSession], Awaitable[Principal]]


def already(principal: Principal) -> Authenticate:
    """For a caller authenticated earlier in the request."""

    async def known(_session: AsyncSession) -> Principal:
        return principal

    return known


@dataclass(frozen=True)
class Finished:
    file: StoredFile
    deduplicated: bool


def storage_key_for(tenant_id: str, upload_id: str) -> str:
    return f"t/{tenant_id}/u/{upload_id}"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def progress(done: int, total: int) -> float:
    return 100.0 if total == 0 else round(100.0 * done / total, 2)


def effective_chunk_size(settings: Settings, storage: Storage, wanted: int | None) -> int:
    size = wanted or settings.uploads_chunk_size_bytes
    size = max(size, storage.min_part_size)
    return min(size, max(settings.uploads_max_chunk_bytes, storage.min_part_size))


class UploadService:
    def __init__(
        self,
        begin: Begin,
        begin_durable: Begin,
        settings: Settings,
        storage: Storage,
        secret_key: str,
        digests: RunningDigests,
        known: KnownUploads,
    ) -> None:
        # Upload progress (sessions, leases, parts) commits without waiting for the disk: its
        # loss in a power failure means re-sending a chunk, whose bytes were not synced either.
        # Making a file object (the finished upload) is durable, after its bytes are synced.
        self.begin = begin
        self.begin_durable = begin_durable
        self.settings = settings
        self.storage = storage
        self.secret_key = secret_key
        self.digests = digests
        self.known = known

    # Uploads this process knows (uploads.known)

    def remember(self, upload: UploadSession) -> None:
        # Only a local directory's chunks and PATCHes look uploads up (see known_upload).
        if isinstance(self.storage, LocalStorage):
            self.known.remember(upload)

    def known_upload(
        self, claims: AccessClaims | None, upload_id: str, protocol: str
    ) -> KnownUpload | None:
        """The upload of ``protocol``, from this process's memory, when a body for it may skip
        the transaction before it: the storage is a local directory, the caller presents a
        signed, unexpired access token of the upload's owner, and the upload is unexpired.
        Each protocol adds its own conditions; anything else takes the full path."""
        if claims is None or not isinstance(self.storage, LocalStorage):
            return None
        known = self.known.get(claims.tenant_id, upload_id)
        if known is None or known.protocol != protocol or known.owner_id != claims.user_id:
            return None
        if known.expires_at <= utcnow():
            return None
        return known

    # Shared checks

    async def load(
        self,
        session: AsyncSession,
        principal: Principal,
        upload_id: str,
        protocol: str,
        *,
        for_update: bool = False,
    ) -> UploadSession:
        """The caller's upload, or 404 (another user's upload does not exist for them)."""
        principal.require(Permission.FILES_WRITE)
        upload = await UploadRepository(session).get(
            principal.tenant_id, upload_id, for_update=for_update
        )
        return self._callers(principal, upload, protocol)

    async def load_with_part(
        self,
        session: AsyncSession,
        principal: Principal,
        upload_id: str,
        protocol: str,
        number: int,
    ) -> tuple[UploadSession, bool]:
        """:meth:`load`, and whether the upload's part ``number`` is recorded."""
        principal.require(Permission.FILES_WRITE)
        upload, has_part = await UploadRepository(session).get_with_part(
            principal.tenant_id, upload_id, number
        )
        return self._callers(principal, upload, protocol), has_part

    @staticmethod
    def require_owner(principal: Principal, owner_id: str | None) -> None:
        """Another user's upload does not exist for the caller (404)."""
        if owner_id != Owner.of(principal).actor_id:
            raise not_found("Upload")

    @staticmethod
    def _callers(
        principal: Principal, upload: UploadSession | None, protocol: str
    ) -> UploadSession:
        if upload is None:
            raise not_found("Upload")
        UploadService.require_owner(principal, upload.owner_id)
        if upload.protocol != protocol:
            raise ProblemError(
                ErrorCode.UPLOAD_001, f"This upload uses the {upload.protocol} protocol"
            )
        return upload

    @staticmethod
    def require_open(upload: UploadSession, now: datetime) -> None:
        UploadService.require_status(upload.status, upload.expires_at, now)

    @staticmethod
    def require_status(status: str, expires_at: datetime, now: datetime) -> None:
        if status == "cancelled":
            raise ProblemError(ErrorCode.UPLOAD_001, "This upload was cancelled")
        if status == "expired" or (status == "open" and expires_at <= now):
            raise ProblemError(ErrorCode.UPLOAD_003, "This upload expired; start a new one")
        if status == "finalized":
            raise ProblemError(ErrorCode.VALIDATION_003, "This upload is already finished")

    def check_total_size(self, total_size: int) -> None:
        if total_size > self.settings.uploads_max_file_bytes:
            raise ProblemError(
                ErrorCode.UPLOAD_007,
                f"Files may be at most {self.settings.uploads_max_file_bytes} bytes",
            )

    def new_session(
        self,
        principal: Principal,
        *,
        protocol: str,
        filename: str,
        mime_type: str | None,
        total_size: int,
        file_hash: str | None,
        chunk_size: int,
        access: str,
        tus_metadata: dict[str, Any] | None = None,
    ) -> UploadSession:
        principal.require(Permission.FILES_WRITE)
        self.check_total_size(total_size)
        now = utcnow()
        owner = Owner.of(principal)
        upload_id = new_id()
        return UploadSession(
            id=upload_id,
            tenant_id=principal.tenant_id,
            owner_id=owner.actor_id,
            device_id=owner.device_id,
            protocol=protocol,
            status="open",
            filename=filename,
            mime_type=mime_type,
            access=access,
            total_size=total_size,
            file_hash=file_hash.lower() if file_hash else None,
            chunk_size=chunk_size,
            total_chunks=math.ceil(total_size / chunk_size),
            offset=0,
            tail_size=0,
            tus_metadata=tus_metadata,
            storage_key=storage_key_for(principal.tenant_id, upload_id),
            storage_handle="",
            expires_at=now + timedelta(seconds=self.settings.uploads_ttl_seconds),
            created_at=now,
            updated_at=now,
        )

    async def create_staged(self, upload: UploadSession) -> None:
        try:
            upload.storage_handle = await self.storage.create_staged(upload.storage_key)
        except StorageError as exc:
            raise storage_unavailable(exc) from exc

    def check_head(self, upload: UploadSession | KnownUpload, head: bytes) -> str:
        """The effective content type; a declared type the bytes contradict is refused."""
        try:
            return check_declared(upload.mime_type, head)
        except ContentTypeMismatch as exc:
            raise ProblemError(
                ErrorCode.UPLOAD_001,
                f"The declared type {upload.mime_type!r} does not match the content"
                + (f" ({exc.sniffed})" if exc.sniffed else ""),
            ) from exc

    async def take_lease(self, principal: Principal, upload: UploadSession, owner: str) -> None:
        now = utcnow()
        taken = await self._repository_call(
            lambda repository: repository.take_lease(
                principal.tenant_id, upload.id, owner, now, now + LEASE
            )
        )
        if not taken:
            raise upload_busy()

    async def release_lease(self, tenant_id: str, upload_id: str, owner: str) -> None:
        await self._repository_call(
            lambda repository: repository.release_lease(tenant_id, upload_id, owner)
        )

    async def _repository_call(self, call: Callable[[UploadRepository], Any]) -> Any:
        async with self.begin() as session:
            return await call(UploadRepository(session))

    async def read_head(self, upload: UploadSession, size: int) -> bytes:
        chunks = bytearray()
        async for block in self.storage.read(upload.storage_key, 0, min(size, upload.total_size)):
            chunks += block
        return bytes(chunks)

    # Finishing (both protocols)

    async def finish(
        self,
        principal: Principal,
        upload: UploadSession,
        parts: list[Part],
        part_hashes: dict[int, str],
    ) -> Finished:
        """Assemble the parts, verify the whole file, and make it a file object. The caller
        holds the upload's lease. A whole-file hash mismatch leaves the upload open."""
        try:
            await self.storage.assemble(upload.storage_key, upload.storage_handle, parts)
            digest = await self.digests.take(upload.id, upload.total_size, part_hashes)
            if digest is None:
                digest = await sha256_of(self.storage, upload.storage_key)
            size = await self.storage.size(upload.storage_key)
            if upload.file_hash is not None and digest != upload.file_hash:
                damaged = await self._damaged_parts(upload, parts, part_hashes)
                await self._reopen(principal, upload, parts, forget=damaged)
                raise self._mismatch(upload.file_hash, digest, damaged)
            mime_type = self.check_head(upload, await self.read_head(upload, HEAD_BYTES))
            image = None
            if mime_type in VARIANT_SOURCE_TYPES:
                image = await self._check_image(upload)
        except ObjectMissing as exc:
            raise ProblemError(ErrorCode.UPLOAD_001, "The upload's data is gone") from exc
        except StorageError as exc:
            raise storage_unavailable(exc) from exc
        if size != upload.total_size:
            raise ProblemError(
                ErrorCode.UPLOAD_001, f"Stored {size} bytes, expected {upload.total_size}"
            )
        async with self.begin_durable() as session:
            files = FileService(session, self.settings, self.secret_key)
            stored, deduplicated = await files.adopt(
                upload.tenant_id,
                Owner.of(principal),
                Content(
                    upload.storage_key,
                    upload.total_size,
                    digest,
                    mime_type,
                    image.width if image else None,
                    image.height if image else None,
                ),
                filename=upload.filename,
                access=upload.access,
                upload_id=upload.id,
            )
            repository = UploadRepository(session)
            await repository.update(
                upload.tenant_id,
                upload.id,
                status="finalized",
                file_id=stored.id,
                offset=upload.total_size,
                file_hash=digest,
                lock_owner=None,
                locked_until=None,
                updated_at=utcnow(),
            )
            await repository.delete_parts(upload.tenant_id, upload.id)
        self.known.forget(upload.tenant_id, upload.id)
        return Finished(file=stored, deduplicated=deduplicated)

    async def _check_image(self, upload: UploadSession) -> ImageInfo | None:
        """Decode the image once: a corrupt file or a decompression bomb is refused now.
        Very large images are left to the variants job (which marks them failed)."""
        if upload.total_size > IMAGE_CHECK_MAX_BYTES:
            return None
        data = await self.read_head(upload, upload.total_size)
        try:
            return await asyncio.to_thread(
                inspect_image, data, max_pixels=self.settings.images_max_pixels
            )
        except ImageRejected as exc:
            raise ProblemError(
                ErrorCode.UPLOAD_008, exc.reason, extra={"reason": exc.code}
            ) from exc

    async def _damaged_parts(
        self, upload: UploadSession, parts: list[Part], part_hashes: dict[int, str]
    ) -> list[int]:
        """The parts whose stored bytes no longer have the SHA-256 they were accepted with
        (lost or damaged in storage, e.g. by a power loss before they reached the disk). Only
        read after a whole-file mismatch; parts without a recorded hash (tus) are not known."""
        damaged = []
        for part in parts:
            expected = part_hashes.get(part.number)
            end = part.offset + part.size
            if expected is not None and expected != await sha256_of(
                self.storage, upload.storage_key, part.offset, end
            ):
                damaged.append(part.number)
        return damaged

    @staticmethod
    def _mismatch(expected: str, actual: str, damaged: list[int]) -> ProblemError:
        resend = [number - 1 for number in damaged]  # chunk indexes
        if resend:
            detail = (
                f"The file's SHA-256 does not match file_hash: chunk(s) {resend} no longer hold "
                "what was sent (lost or damaged in storage); send them again, then finalize"
            )
        else:
            detail = (
                "The file's SHA-256 does not match file_hash, though every chunk holds what was "
                "sent: the file changed while it was sent, or file_hash is wrong; re-send the "
                "chunks that changed, or start over"
            )
        extra = {"expected": expected, "actual": actual, "chunks_to_resend": resend}
        return ProblemError(ErrorCode.UPLOAD_002, detail, extra=extra)

    async def _reopen(
        self,
        principal: Principal,
        upload: UploadSession,
        parts: list[Part],
        forget: list[int] | None = None,
    ) -> None:
        """After a failed whole-file check the parts must be writable again (S3 completed its
        multipart upload already); a local file simply stays where it is. The ``forget``
        parts count as missing again (their bytes were found damaged)."""
        handle, reopened = await self.storage.reopen(upload.storage_key, parts)
        async with self.begin() as session:
            repository = UploadRepository(session)
            if forget:
                await repository.delete_parts(upload.tenant_id, upload.id, forget)
            await repository.update(
                upload.tenant_id, upload.id, storage_handle=handle, updated_at=utcnow()
            )
            await repository.set_part_tokens(
                upload.tenant_id, upload.id, {part.number: part.token for part in reopened}
            )
        upload.storage_handle = handle

    async def cancel(self, principal: Principal, upload_id: str, protocol: str) -> UploadSession:
        lease_owner = new_id()
        async with self.begin() as session:
            upload = await self.load(session, principal, upload_id, protocol)
            if upload.status == "finalized":
                raise ProblemError(
                    ErrorCode.VALIDATION_003,
                    "This upload is finished; delete the file instead",
                )
            if upload.status in ("cancelled", "expired"):
                return upload
            repository = UploadRepository(session)
            now = utcnow()
            if not await repository.take_lease(
                upload.tenant_id, upload.id, lease_owner, now, now + LEASE
            ):
                raise ProblemError(
                    ErrorCode.UPLOAD_004, "Another request is writing this upload; retry"
                )
            await repository.update(upload.tenant_id, upload.id, status="cancelled", updated_at=now)
            await repository.delete_parts(upload.tenant_id, upload.id)
            enqueue_discard(session, upload)
        self.digests.drop(upload_id)
        self.known.forget(upload.tenant_id, upload_id)
        upload.status = "cancelled"
        return upload


def enqueue_discard(session: AsyncSession, upload: UploadSession) -> None:
    """Free the upload's storage after the commit (durable: survives a crash)."""
    enqueue(
        session,
        DISCARD_JOB,
        {"key": upload.storage_key, "handle": upload.storage_handle},
        tenant_id=upload.tenant_id,
    )


def upload_busy() -> ProblemError:
    return ProblemError(
        ErrorCode.UPLOAD_004,
        "Another request is writing this upload; retry when it has finished",
        headers={"Retry-After": "1"},
    )


def storage_unavailable(exc: StorageError) -> ProblemError:
    return ProblemError(ErrorCode.UNAVAILABLE, "File storage is unavailable; retry later")


@contextlib.contextmanager
def storage_failures(gone: str) -> Iterator[None]:
    """A failure of the storage while a body is written, as the request's answer: the
    upload's bytes gone (``gone``, UPLOAD_001) or the storage unavailable (503)."""
    try:
        yield
    except ObjectMissing as exc:
        raise ProblemError(ErrorCode.UPLOAD_001, gone) from exc
    except StorageError as exc:
        raise storage_unavailable(exc) from exc


@contextlib.asynccontextmanager
async def held_lease(
    service: UploadService, principal: Principal, upload: UploadSession
) -> AsyncIterator[str]:
    """The upload's lease for the block; released afterwards unless finishing cleared it."""
    owner = new_id()
    await service.take_lease(principal, upload, owner)
    try:
        yield owner
    finally:
        await service.release_lease(upload.tenant_id, upload.id, owner)
