"""The REST chunk protocol: init, chunks in any order (re-sends welcome), status, finalize."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from homeport.auth.principal import Principal
from homeport.files.service import FileService
from homeport.files.sniff import HEAD_BYTES
from homeport.kit.clock import utcnow
from homeport.kit.errors import ErrorCode, ProblemError
from homeport.kit.storage import LocalStorage, ObjectMissing, Part, StorageError
from homeport.models.files import StoredFile, UploadSession
from homeport.uploads.blocks import Block, joined, leading, size_of
from homeport.uploads.digests import PartTooLarge, Sink, read_part
from homeport.uploads.repository import UploadRepository
from homeport.uploads.schemas import UploadInit
from homeport.uploads.service import (
    Authenticate,
    Finished,
    UploadService,
    effective_chunk_size,
    held_lease,
    progress,
    storage_unavailable,
)

PROTOCOL = "rest"


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


def expected_chunk_size(upload: UploadSession, index: int) -> int:
    if index < upload.total_chunks - 1:
        return upload.chunk_size
    return upload.total_size - upload.chunk_size * (upload.total_chunks - 1)


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
        return upload

    async def put_chunk(
        self,
        authenticate: Authenticate,
        upload_id: str,
        index: int,
        body: AsyncIterator[bytes],
        checksum: str | None,
    ) -> ChunkResult:
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
        expected = expected_chunk_size(upload, index)
        offset = index * upload.chunk_size
        wrong_size = ProblemError(ErrorCode.UPLOAD_001, f"Chunk {index} must be {expected} bytes")
        storage = self.service.storage
        # A local file takes a chunk sent for the first time while it arrives; a re-sent one
        # (or an S3 part, written whole) only once verified, so good bytes are never replaced
        # by bad ones. Bytes of a refused first send sit where no part is recorded.
        write_block: Sink | None = None
        if isinstance(storage, LocalStorage) and not resent:
            local = storage

            def write_in_place(position: int, block: Block) -> None:
                local.write_at(upload.storage_key, offset + position, block)

            write_block = write_in_place
        streams_in = write_block is not None
        try:
            pieces, digest = await read_part(body, expected, write_block)
        except PartTooLarge as exc:
            raise wrong_size from exc
        except ObjectMissing as exc:
            raise ProblemError(ErrorCode.UPLOAD_001, "This upload was cancelled") from exc
        except StorageError as exc:
            raise storage_unavailable(exc) from exc
        if size_of(pieces) != expected:
            raise wrong_size
        if digest != checksum.lower():
            raise ProblemError(
                ErrorCode.UPLOAD_002,
                f"Chunk {index} does not match its X-Chunk-Checksum; nothing was kept",
                extra={"chunk_index": index},
            )
        if index == 0:
            self.service.check_head(upload, leading(pieces, HEAD_BYTES))
        part = Part(number=index + 1, offset=offset, size=expected)
        try:
            if not streams_in:  # only then are the pieces joined
                part = await storage.write_part(
                    upload.storage_key, upload.storage_handle, part, joined(pieces)
                )
        except ObjectMissing as exc:
            raise ProblemError(ErrorCode.UPLOAD_001, "This upload was cancelled") from exc
        except StorageError as exc:
            raise storage_unavailable(exc) from exc
        # Hashed for the whole-file digest while the part is recorded and the client sends
        # its next chunk.
        await self.service.digests.add_part(upload.id, offset, part.number, pieces, digest)
        async with self.service.begin() as session:
            repository = UploadRepository(session)
            await repository.save_part(upload.tenant_id, upload.id, part, digest)
            # Checked after the insert, in its transaction: a cancel or expiry in between
            # rolls the part back and is answered.
            status, expires_at, received = await repository.progress(upload.tenant_id, upload.id)
            self.service.require_status(status, expires_at, utcnow())
        return ChunkResult(
            chunk_index=index,
            remaining_chunks=upload.total_chunks - received,
            progress_pct=progress(received, upload.total_chunks),
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
