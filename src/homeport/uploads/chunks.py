"""The REST chunk protocol: init, chunks in any order (re-sends welcome), status, finalize."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from homeport.auth.principal import Permission, Principal
from homeport.auth.tokens import AccessClaims
from homeport.files.service import FileService
from homeport.files.sniff import HEAD_BYTES
from homeport.kit.clock import utcnow
from homeport.kit.errors import ErrorCode, ProblemError, not_found
from homeport.kit.storage import LocalStorage, Part
from homeport.models.files import StoredFile, UploadSession
from homeport.uploads.blocks import Block, joined, leading, size_of
from homeport.uploads.digests import PartTooLarge, Sink, read_part, read_part_but_tail
from homeport.uploads.known import KNOWN_PART_MAX_BYTES, KnownUpload
from homeport.uploads.repository import Progress, UploadRepository
from homeport.uploads.schemas import UploadInit
from homeport.uploads.service import (
    Authenticate,
    Finished,
    UploadService,
    effective_chunk_size,
    held_lease,
    progress,
    storage_failures,
    upload_busy,
)

PROTOCOL = "rest"
_CANCELLED = "This upload was cancelled"


@dataclass(frozen=True)
class ChunkResult:
    chunk_index: int
    remaining_chunks: int
    progress_pct: float


@dataclass(frozen=True)
class StatusResult:
    upload: UploadSession
    uploaded: list[int]
    missing: list[int]


def expected_chunk_size(upload: UploadSession | KnownUpload, index: int) -> int:
    if index < upload.total_chunks - 1:
        return upload.chunk_size
    return upload.total_size - upload.chunk_size * (upload.total_chunks - 1)


def _wrong_size(index: int, expected: int) -> ProblemError:
    return ProblemError(ErrorCode.UPLOAD_001, f"Chunk {index} must be {expected} bytes")


def _checksum_mismatch(index: int) -> ProblemError:
    return ProblemError(
        ErrorCode.UPLOAD_002,
        f"Chunk {index} does not match its X-Chunk-Checksum; nothing was kept",
        extra={"chunk_index": index},
    )


class ChunkUploads:
    def __init__(self, service: UploadService) -> None:
        self.service = service

    async def init(self, principal: Principal, body: UploadInit) -> UploadSession:
        chunk_size = effective_chunk_size(
            self.service.settings, self.service.storage, body.chunk_size
        )
        upload = self.service.new_session(
            principal,
            protocol=PROTOCOL,
            filename=body.filename,
            mime_type=body.mime_type,
            total_size=body.total_size,
            file_hash=body.file_hash,
            chunk_size=chunk_size,
            access=body.access,
        )
        await self.service.create_staged(upload)
        async with self.service.begin() as session:
            UploadRepository(session).add(upload)
        self.service.remember(upload)
        return upload

    async def put_chunk(
        self,
        authenticate: Authenticate,
        claims: AccessClaims | None,
        upload_id: str,
        index: int,
        body: AsyncIterator[bytes],
        checksum: str | None,
    ) -> ChunkResult:
        """Store and record one chunk. ``claims``: the caller's access token, when it is one
        (its session not yet checked), for :meth:`_known_target`."""
        known = self._known_target(claims, upload_id, index, checksum)
        if known is not None:
            assert checksum is not None
            return await self._put_known(authenticate, known, index, body, checksum)
        upload, resent = await self._checked_before_body(authenticate, upload_id, index, checksum)
        assert checksum is not None
        expected = expected_chunk_size(upload, index)
        offset = index * upload.chunk_size
        storage = self.service.storage
        # A local file takes a chunk sent for the first time while it arrives (bytes of a
        # refused one sit where no part is recorded). A re-sent one replaces recorded bytes:
        # only once verified, inside the transaction that finds the upload open and free
        # (_received), so good bytes are never replaced by bad ones nor changed under a
        # finalize. An S3 part goes before that transaction (it keeps the network out):
        # completing the multipart upload names each part by the ETag recorded for it, so a
        # part replaced meanwhile makes that fail, never mix.
        in_place: Sink | None = None
        if isinstance(storage, LocalStorage) and not resent:
            local = storage

            def write_in_place(position: int, block: Block) -> None:
                local.write_at(upload.storage_key, offset + position, block)

            in_place = write_in_place
        try:
            with storage_failures(_CANCELLED):
                pieces, digest = await read_part(body, expected, in_place)
        except PartTooLarge as exc:
            raise _wrong_size(index, expected) from exc
        self._verify(upload, index, expected, pieces, digest, checksum)
        part = Part(number=index + 1, offset=offset, size=expected)
        if not isinstance(storage, LocalStorage):
            with storage_failures(_CANCELLED):
                part = await storage.write_part(
                    upload.storage_key, upload.storage_handle, part, joined(pieces)
                )
        # Hashed for the whole-file digest while the part is recorded and the client sends
        # its next chunk.
        await self.service.digests.add_part(upload.id, offset, part.number, pieces, digest)
        async with self.service.begin() as session:
            repository = UploadRepository(session)
            await repository.save_part(upload.tenant_id, upload.id, part, digest)
            # Checked after the insert, in its transaction: a cancel or expiry in between
            # rolls the part back and is answered.
            received = await self._received(repository, upload.tenant_id, upload.id)
            if isinstance(storage, LocalStorage) and resent:
                with storage_failures(_CANCELLED):
                    await storage.write_part(
                        upload.storage_key, upload.storage_handle, part, pieces
                    )
        self.service.remember(upload)
        return ChunkResult(
            chunk_index=index,
            remaining_chunks=upload.total_chunks - received,
            progress_pct=progress(received, upload.total_chunks),
        )

    async def _checked_before_body(
        self,
        authenticate: Authenticate,
        upload_id: str,
        index: int,
        checksum: str | None,
    ) -> tuple[UploadSession, bool]:
        """What a chunk must pass before its body is read, in a transaction: the caller, the
        checksum header, the caller's open upload and the index. Returns the upload and
        whether this chunk was recorded before."""
        async with self.service.begin() as session:
            principal = await authenticate(session)
            if checksum is None or len(checksum) != 64:
                raise ProblemError(
                    ErrorCode.VALIDATION_001,
                    "X-Chunk-Checksum must be the SHA-256 of the chunk, 64 hex digits",
                )
            upload, resent = await self.service.load_with_part(
                session, principal, upload_id, PROTOCOL, index + 1
            )
        self.service.require_open(upload, utcnow())
        if not 0 <= index < upload.total_chunks:
            raise ProblemError(
                ErrorCode.UPLOAD_001,
                f"chunk_index must be between 0 and {upload.total_chunks - 1}",
            )
        return upload, resent

    def _verify(
        self,
        upload: UploadSession | KnownUpload,
        index: int,
        expected: int,
        pieces: Block,
        digest: str,
        checksum: str,
    ) -> None:
        """The body is the chunk: its size, its checksum, and (the first) its content type."""
        if size_of(pieces) != expected:
            raise _wrong_size(index, expected)
        if digest != checksum.lower():
            raise _checksum_mismatch(index)
        if index == 0:
            self.service.check_head(upload, leading(pieces, HEAD_BYTES))

    async def _received(self, repository: UploadRepository, tenant_id: str, upload_id: str) -> int:
        """The number of recorded parts, once the upload is found still open and not being
        finalized or cancelled (its lease free). Its row stays locked until the commit, so
        bytes written before it are in place before any finalize can start."""
        found = await self._open_progress(repository, tenant_id, upload_id)
        if found.leased(utcnow()):
            raise upload_busy()
        return found.received

    async def _open_progress(
        self, repository: UploadRepository, tenant_id: str, upload_id: str
    ) -> Progress:
        """Where the upload stands (its row locked until the commit), once found still open;
        an upload found closed is forgotten."""
        found = await repository.progress(tenant_id, upload_id)
        if found is None:
            raise not_found("Upload")
        try:
            self.service.require_status(found.status, found.expires_at, utcnow())
        except ProblemError:
            self.service.known.forget(tenant_id, upload_id)
            raise
        return found

    def _known_target(
        self, claims: AccessClaims | None, upload_id: str, index: int, checksum: str | None
    ) -> KnownUpload | None:
        """The upload, from this process's memory (:meth:`UploadService.known_upload`), when
        its chunk can skip the transaction before the body (:meth:`_put_known`): besides, the
        checksum header is well-formed, the index in range and the part at most
        :data:`KNOWN_PART_MAX_BYTES`. Anything else takes the full path, which answers it."""
        if checksum is None or len(checksum) != 64:
            return None
        known = self.service.known_upload(claims, upload_id, PROTOCOL)
        if known is None or not 0 <= index < known.total_chunks:
            return None
        if expected_chunk_size(known, index) > KNOWN_PART_MAX_BYTES:
            return None
        return known

    async def _put_known(
        self,
        authenticate: Authenticate,
        upload: KnownUpload,
        index: int,
        body: AsyncIterator[bytes],
        checksum: str,
    ) -> ChunkResult:
        """A chunk of an upload this process knows, in one transaction instead of two. The
        body is read first, all but its last block hashed. Then one transaction checks the
        caller's session and role and the upload's status and lease, records the part, and
        on one worker thread hashes the last block and, if the chunk matches its checksum
        and may be written, writes it; then it commits. So nothing is written for a caller
        whose session was not checked or to an upload the database no longer has open
        (another process may have finished or cancelled it), and good bytes are never
        replaced by bad ones. Refusals come in the full path's order: the caller and the
        upload's status (before a body there), then the body, then the lease."""
        expected = expected_chunk_size(upload, index)
        offset = index * upload.chunk_size
        try:
            try:
                read = await read_part_but_tail(body, expected)
            except PartTooLarge as exc:
                raise _wrong_size(index, expected) from exc
            if size_of(read.pieces) != expected:
                raise _wrong_size(index, expected)
        except ProblemError:
            await self._checked_before_body(authenticate, upload.id, index, checksum)
            raise
        head_problem: ProblemError | None = None
        if index == 0:
            try:
                self.service.check_head(upload, leading(read.pieces, HEAD_BYTES))
            except ProblemError as exc:
                head_problem = exc
        storage = self.service.storage
        assert isinstance(storage, LocalStorage)
        wanted = checksum.lower()
        part = Part(number=index + 1, offset=offset, size=expected)
        async with self.service.begin() as session:
            principal = await authenticate(session)
            principal.require(Permission.FILES_WRITE)
            self.service.require_owner(principal, upload.owner_id)
            repository = UploadRepository(session)
            # Recorded with the checksum it must match; rolled back if it does not.
            await repository.save_part(upload.tenant_id, upload.id, part, wanted)
            found = await self._open_progress(repository, upload.tenant_id, upload.id)
            leased = found.leased(utcnow())
            writable = head_problem is None and not leased

            def finish_and_write() -> str:
                digest = read.finish()
                if digest == wanted and writable:
                    storage.write_at(upload.storage_key, offset, read.pieces)
                return digest

            with storage_failures(_CANCELLED):
                digest = await asyncio.to_thread(finish_and_write)
            if digest != wanted:
                raise _checksum_mismatch(index)
            if head_problem is not None:
                raise head_problem
            if leased:
                raise upload_busy()
        await self.service.digests.add_part(upload.id, offset, part.number, read.pieces, digest)
        return ChunkResult(
            chunk_index=index,
            remaining_chunks=upload.total_chunks - found.received,
            progress_pct=progress(found.received, upload.total_chunks),
        )

    async def status(self, principal: Principal, upload_id: str) -> StatusResult:
        async with self.service.begin() as session:
            upload = await self.service.load(session, principal, upload_id, PROTOCOL)
            numbers = await UploadRepository(session).part_numbers(upload.tenant_id, upload.id)
        if upload.status == "open" and upload.expires_at <= utcnow():
            raise ProblemError(ErrorCode.UPLOAD_003, "This upload expired; start a new one")
        if upload.status == "expired":
            raise ProblemError(ErrorCode.UPLOAD_003, "This upload expired; start a new one")
        if upload.status == "finalized":
            return StatusResult(upload, list(range(upload.total_chunks)), [])
        uploaded = [number - 1 for number in numbers]
        present = set(uploaded)
        missing = [index for index in range(upload.total_chunks) if index not in present]
        return StatusResult(upload, uploaded, missing)

    async def finalize(self, principal: Principal, upload_id: str) -> tuple[Finished, StoredFile]:
        async with self.service.begin() as session:
            upload = await self.service.load(session, principal, upload_id, PROTOCOL)
        if upload.status == "finalized" and upload.file_id is not None:
            return await self._finished_before(principal, upload)
        self.service.require_open(upload, utcnow())
        async with held_lease(self.service, principal, upload):
            async with self.service.begin() as session:
                parts = list(await UploadRepository(session).parts(upload.tenant_id, upload.id))
                current = await UploadRepository(session).get(upload.tenant_id, upload.id)
            assert current is not None
            if current.status == "finalized":  # finished by a request that held the lease
                return await self._finished_before(principal, current)
            present = {part.number for part in parts}
            missing = [i for i in range(upload.total_chunks) if i + 1 not in present]
            if missing:
                raise ProblemError(
                    ErrorCode.UPLOAD_001,
                    f"{len(missing)} chunk(s) missing; send them, then finalize",
                    extra={"missing_chunks": missing},
                )
            finished = await self.service.finish(
                principal,
                current,
                [Part(p.number, p.offset, p.size, p.token) for p in parts],
                {part.number: part.sha256 for part in parts},
            )
        return finished, finished.file

    async def _finished_before(
        self, principal: Principal, upload: UploadSession
    ) -> tuple[Finished, StoredFile]:
        assert upload.file_id is not None
        async with self.service.begin() as session:
            files = FileService(session, self.service.settings, self.service.secret_key)
            view = await files.view(principal, upload.file_id)
        finished = Finished(
            file=view.file, deduplicated=view.blob.storage_key != upload.storage_key
        )
        return finished, view.file

    async def cancel(self, principal: Principal, upload_id: str) -> UploadSession:
        return await self.service.cancel(principal, upload_id, PROTOCOL)
