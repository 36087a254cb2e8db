"""tus 1.0 (core, creation, creation-with-upload, expiration, checksum, termination).

A PATCH streams into storage as it arrives. On a local directory the bytes are written at
their offset; on S3 they are cut into parts of the upload's part size and what is left below
that size is kept as a small *tail* object until the next PATCH (S3 parts but the last must be
at least 5 MiB). The committed offset always equals the bytes in parts plus the tail.

A PATCH of at most 4 MiB (with a Content-Length) of a local upload this process knows, by its
owner's access token, is read into memory first and then checked, written and recorded in one
transaction (:meth:`TusUploads._patch_known`): the usual case of a client sending a file piece
by piece costs one transaction a PATCH instead of two.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import ClientDisconnect

from homeport.auth.principal import Principal
from homeport.auth.tokens import AccessClaims
from homeport.files.schemas import FILENAME_MAX_LENGTH, is_filename
from homeport.files.sniff import HEAD_BYTES
from homeport.kit.clock import utcnow
from homeport.kit.disk import boot_id
from homeport.kit.errors import ErrorCode, ProblemError, not_found
from homeport.kit.ids import new_id
from homeport.kit.logging import get_logger
from homeport.kit.storage import LocalStorage, ObjectMissing, Part, StorageError
from homeport.models.files import UploadSession
from homeport.uploads.blocks import Block, Blocks, leading, size_of
from homeport.uploads.digests import PartTooLarge, ReadPart, RunningDigests, read_part_but_tail
from homeport.uploads.known import KNOWN_PART_MAX_BYTES, KnownUpload
from homeport.uploads.repository import UploadRepository, lease_held
from homeport.uploads.service import (
    LEASE,
    Authenticate,
    Finished,
    UploadService,
    effective_chunk_size,
    sha256_hex,
    storage_failures,
    storage_unavailable,
    upload_busy,
)

log = get_logger("homeport.uploads")

PROTOCOL = "tus"
TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,expiration,checksum,termination"
CHECKSUM_ALGORITHMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256}
_FILENAME_KEYS = ("filename", "name")
_TYPE_KEYS = ("filetype", "type", "content_type", "mime_type")
_HASH_KEYS = ("sha256", "checksum", "file_hash")
_TERMINATED = "This upload was terminated"


@dataclass(frozen=True)
class Checksum:
    algorithm: str
    expected: bytes


@dataclass(frozen=True)
class PatchResult:
    upload: UploadSession
    offset: int
    finished: Finished | None


def parse_metadata(header: str | None) -> dict[str, str]:
    """``Upload-Metadata``: comma-separated ``key base64value`` pairs (value optional)."""
    metadata: dict[str, str] = {}
    if not header or not header.strip():
        return metadata
    for pair in header.split(","):
        key, _, encoded = pair.strip().partition(" ")
        if not key or " " in encoded.strip() or not key.isascii() or key in metadata:
            raise ProblemError(ErrorCode.UPLOAD_001, "Upload-Metadata is malformed")
        try:
            value = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise ProblemError(
                ErrorCode.UPLOAD_001, f"Upload-Metadata value of {key!r} is not base64 UTF-8"
            ) from exc
        if "\x00" in value:  # stored as text, which PostgreSQL refuses to hold a NUL in
            raise ProblemError(
                ErrorCode.UPLOAD_001, f"Upload-Metadata value of {key!r} holds a NUL character"
            )
        metadata[key] = value
    return metadata


def encode_metadata(metadata: dict[str, str]) -> str:
    return ",".join(
        f"{key} {base64.b64encode(value.encode()).decode()}" if value else key
        for key, value in metadata.items()
    )


def parse_checksum(header: str | None) -> Checksum | None:
    if header is None:
        return None
    algorithm, _, encoded = header.strip().partition(" ")
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise ProblemError(
            ErrorCode.UPLOAD_001,
            f"Unsupported checksum algorithm {algorithm!r}; use sha1 or sha256",
        )
    try:
        expected = base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error as exc:
        raise ProblemError(ErrorCode.UPLOAD_001, "Upload-Checksum is not base64") from exc
    return Checksum(algorithm, expected)


def _first(metadata: dict[str, str], keys: tuple[str, ...]) -> str | None:
    return next((metadata[key] for key in keys if metadata.get(key)), None)


class _TooLarge(Exception):
    pass


class TusUploads:
    def __init__(self, service: UploadService) -> None:
        self.service = service

    async def create(
        self, principal: Principal, length: int, metadata: dict[str, str]
    ) -> UploadSession:
        file_hash = _first(metadata, _HASH_KEYS)
        if file_hash is not None and (
            len(file_hash) != 64 or any(c not in "0123456789abcdefABCDEF" for c in file_hash)
        ):
            raise ProblemError(ErrorCode.UPLOAD_001, "The sha256 metadata must be 64 hex digits")
        access = metadata.get("access", "owner")
        if access not in ("owner", "tenant"):
            raise ProblemError(ErrorCode.UPLOAD_001, "The access metadata is owner or tenant")
        mime_type = _first(metadata, _TYPE_KEYS)
        if mime_type is not None and ("/" not in mime_type or len(mime_type) > 127):
            raise ProblemError(ErrorCode.UPLOAD_001, "The filetype metadata is not a media type")
        filename = (_first(metadata, _FILENAME_KEYS) or "upload")[:FILENAME_MAX_LENGTH]
        if not is_filename(filename):
            raise ProblemError(
                ErrorCode.UPLOAD_001, "The filename metadata holds control characters"
            )
        upload = self.service.new_session(
            principal,
            protocol=PROTOCOL,
            filename=filename,
            mime_type=mime_type,
            total_size=length,
            file_hash=file_hash,
            chunk_size=effective_chunk_size(self.service.settings, self.service.storage, None),
            access=access,
            tus_metadata=metadata,
        )
        await self.service.create_staged(upload)
        async with self.service.begin() as session:
            UploadRepository(session).add(upload)
        self.service.remember(upload)
        return upload

    async def head(self, principal: Principal, upload_id: str) -> UploadSession:
        async with self.service.begin() as session:
            upload = await self.service.load(session, principal, upload_id, PROTOCOL)
            await self._check_stored_offset(session, upload)
        self._require_usable(upload)
        return upload

    async def _check_stored_offset(self, session: AsyncSession, upload: UploadSession) -> None:
        """A local file must still hold the bytes below the recorded offset. Acknowledged bytes
        are not synced (only a finished file is): after a power loss the file can be shorter
        than the offset the database kept, and a client resuming there would leave a hole.
        Then the offset goes back to what the file holds, so HEAD tells the client where to
        resume (and a PATCH at the old offset is a 409). Skipped when this process wrote the
        bytes up to the offset itself (it has hashed them: no restart since)."""
        storage = self.service.storage
        if upload.status != "open" or upload.offset == 0 or not isinstance(storage, LocalStorage):
            return
        if self.service.digests.covers(upload.id, upload.offset):
            return
        resume_at = upload.offset
        if upload.written_boot is not None and upload.written_boot != boot_id():
            # Written before the machine last booted, and never synced: maybe zeros now.
            resume_at = min(resume_at, upload.synced_offset)
        stored = await storage.size(upload.storage_key)
        if stored is not None:
            resume_at = min(resume_at, stored)
        if resume_at >= upload.offset:
            return
        log.warning(
            "upload_offset_lowered",
            upload_id=upload.id,
            recorded=upload.offset,
            stored=stored,
            synced=upload.synced_offset,
        )
        # Everything below the new offset is on disk, or was written during this boot.
        lowered = {
            "offset": resume_at,
            "synced_offset": min(upload.synced_offset, resume_at),
            "written_boot": None,
        }
        await UploadRepository(session).update(
            upload.tenant_id, upload.id, **lowered, updated_at=utcnow()
        )
        for name, value in lowered.items():
            setattr(upload, name, value)

    def _require_usable(self, upload: UploadSession) -> None:
        if upload.status == "finalized":
            return
        if upload.status == "cancelled":
            # tus termination: a terminated upload answers 404 (or 410), never 400.
            raise not_found("Upload")
        self.service.require_open(upload, utcnow())

    async def patch(
        self,
        authenticate: Authenticate,
        upload_id: str,
        offset: int,
        stream: AsyncIterator[bytes],
        checksum: Checksum | None,
        *,
        claims: AccessClaims | None = None,
        length: int | None = None,
    ) -> PatchResult:
        """Two short transactions around the body: one checks the upload and takes its lease,
        the last commits the new offset and releases the lease (finishing clears it instead).
        ``claims`` (the caller's access token, its session not yet checked; None unless the
        request's headers are well formed) and ``length`` (Content-Length) let a PATCH of an
        upload this process knows take one transaction instead (:meth:`_patch_known`)."""
        known = self._known_target(claims, upload_id, offset, length)
        if known is not None and self.service.known.start_receiving(known):
            try:
                return await self._patch_known(authenticate, known, offset, stream, checksum)
            finally:
                self.service.known.stop_receiving(known)
        lease_owner = new_id()
        async with self.service.begin() as session:
            principal = await authenticate(session)
            # Read locked (PostgreSQL): a writer finishing now cannot move the offset between
            # this check and the lease.
            current = await self._at_offset(session, principal, upload_id, offset)
            if current.status == "finalized":
                return PatchResult(current, current.offset, None)
            now = utcnow()
            # A body this process reads for it without a lease (_patch_known) counts as one.
            if self.service.known.receiving(
                current.tenant_id, current.id
            ) or not await UploadRepository(session).take_lease(
                current.tenant_id, current.id, lease_owner, now, now + LEASE
            ):
                raise upload_busy()
        try:
            new_offset = await self._append(current, stream, checksum, lease_owner)
            finished = None
            if new_offset == current.total_size:
                finished = await self._finish(principal, current)
        except BaseException:
            await self.service.release_lease(current.tenant_id, current.id, lease_owner)
            raise
        if finished is None:
            self.service.remember(current)
        return PatchResult(current, new_offset, finished)

    async def _at_offset(
        self, session: AsyncSession, principal: Principal, upload_id: str, offset: int
    ) -> UploadSession:
        """The caller's upload, its row locked, found usable (a finished one too: the caller
        answers it) and at ``offset``. An upload no longer open is forgotten."""
        current = await self.service.load(session, principal, upload_id, PROTOCOL, for_update=True)
        if current.status != "open" or current.expires_at <= utcnow():
            self.service.known.forget(current.tenant_id, current.id)
        self._require_usable(current)
        await self._check_stored_offset(session, current)
        _require_offset(current, offset)
        return current

    def _known_target(
        self, claims: AccessClaims | None, upload_id: str, offset: int, length: int | None
    ) -> KnownUpload | None:
        """The upload, from this process's memory (:meth:`UploadService.known_upload`), when
        its PATCH can skip the transaction before the body: besides, the body has a
        Content-Length of at most :data:`KNOWN_PART_MAX_BYTES` that fits in the upload.
        Anything else takes the full path, which answers it."""
        if length is None or not 0 < length <= KNOWN_PART_MAX_BYTES:
            return None
        known = self.service.known_upload(claims, upload_id, PROTOCOL)
        if known is None or offset + length > known.total_size:
            return None
        return known

    async def _patch_known(
        self,
        authenticate: Authenticate,
        known: KnownUpload,
        start: int,
        stream: AsyncIterator[bytes],
        checksum: Checksum | None,
    ) -> PatchResult:
        """A PATCH of an upload this process knows, in one transaction instead of two. The
        body is read into memory first (with an ``Upload-Checksum``, all but its last block
        hashed), while the bytes of earlier PATCHes are synced to disk. Then one transaction
        checks the caller's session, the upload's status, offset and lease with its row
        locked, and on one worker thread hashes the last block and, if the body matches its
        checksum and the file's type, writes it at its offset; then it records the new
        offset and commits. The lease is never taken (the row lock keeps other writers out
        for the write) unless this body completes the upload, which finishing then needs.
        Refusals come in the full path's order: the caller, the upload, its offset and lease,
        then the body."""
        storage = self.service.storage
        assert isinstance(storage, LocalStorage)
        syncing = _DiskSync(storage, known.storage_key, 0, start)
        try:
            body = await _read_known_body(stream, known.total_size - start, checksum)
        finally:
            await syncing.settle()
        pieces = body.pieces
        end = start + size_of(pieces)
        head_problem: ProblemError | None = None
        if start == 0 and pieces:
            try:
                self.service.check_head(known, leading(pieces, HEAD_BYTES))
            except ProblemError as exc:
                head_problem = exc
        lease_owner = new_id()
        async with self.service.begin() as session:
            principal = await authenticate(session)
            current = await self._at_offset(session, principal, known.id, start)
            if current.status == "finalized":
                return PatchResult(current, current.offset, None)
            now = utcnow()
            if lease_held(current.lock_owner, current.locked_until, now):
                raise upload_busy()
            if body.past_the_end:
                raise _past_the_end()
            read = body.read
            if checksum is not None and (body.interrupted or read is None):
                raise _checksum_mismatch()

            def check_and_write() -> bool:
                matches = read is None or read.finish() == checksum_of(checksum).hex()
                if matches and head_problem is None and pieces:
                    storage.write_at(current.storage_key, start, pieces)
                return matches

            with storage_failures(_TERMINATED):
                matches = await asyncio.to_thread(check_and_write)
            if not matches:
                raise _checksum_mismatch()
            if head_problem is not None:
                raise head_problem
            repository = UploadRepository(session)
            if end == current.total_size:
                # Kept for finishing, as the full path keeps the lease it took.
                await repository.take_lease(
                    current.tenant_id, current.id, lease_owner, now, now + LEASE
                )
            synced_offset, written_boot = syncing.recorded(end, current.synced_offset)
            await repository.advance(
                current.tenant_id,
                current.id,
                offset=end,
                tail_size=0,
                synced_offset=synced_offset,
                written_boot=written_boot,
                now=now,
                release_owner=None,
            )
            # In offset order: the row stays locked until the commit.
            await self.service.digests.append(current.id, start, pieces)
        current.offset, current.tail_size = end, 0
        current.synced_offset, current.written_boot = synced_offset, written_boot
        if end < current.total_size:
            return PatchResult(current, end, None)
        try:
            finished = await self._finish(principal, current)
        except BaseException:
            await self.service.release_lease(current.tenant_id, current.id, lease_owner)
            raise
        return PatchResult(current, end, finished)

    async def _finish(self, principal: Principal, upload: UploadSession) -> Finished:
        upload.offset = upload.total_size
        if isinstance(self.service.storage, LocalStorage):
            parts = [Part(1, 0, upload.total_size)]  # written in place
        else:
            async with self.service.begin() as session:
                rows = await UploadRepository(session).parts(upload.tenant_id, upload.id)
            parts = [Part(row.number, row.offset, row.size, row.token) for row in rows]
        return await self.service.finish(principal, upload, parts, {})

    async def _append(
        self,
        upload: UploadSession,
        stream: AsyncIterator[bytes],
        checksum: Checksum | None,
        lease_owner: str,
    ) -> int:
        """Stream the body into storage; commit and return the new offset, releasing the lease
        in the same transaction unless the upload is now complete (finishing needs it). With a
        checksum the whole body is kept only when it matches (460 otherwise); without, an
        interrupted body keeps what arrived, as tus asks."""
        storage = self.service.storage
        digests = self.service.digests
        start = upload.offset
        hasher: Any = CHECKSUM_ALGORITHMS[checksum.algorithm]() if checksum else None
        # A local file is written in place while the body arrives; elsewhere (S3) the body is
        # cut into parts of chunk_size and the rest kept as a tail object.
        writer: _BackgroundWriter | None = None
        syncing: _DiskSync | None = None
        if isinstance(storage, LocalStorage):
            writer = _BackgroundWriter(storage, digests, upload, start, hasher)
            # The bytes of earlier PATCHes go to disk while this body arrives; its commit
            # then records them as synced (a power loss costs at most the bytes since).
            syncing = _DiskSync(storage, upload.storage_key, upload.synced_offset, start)
        parts_end = start - upload.tail_size  # bytes covered by S3 parts
        buffer = bytearray()
        try:
            if writer is None and upload.tail_size:
                buffer += await storage.get(_tail_key(upload))
                if len(buffer) != upload.tail_size:
                    raise ProblemError(ErrorCode.UPLOAD_001, "The upload's buffered bytes are gone")
        except ObjectMissing as exc:
            raise ProblemError(
                ErrorCode.UPLOAD_001, "The upload's buffered bytes are gone"
            ) from exc
        received = 0
        new_parts: list[tuple[Part, str]] = []
        head = bytearray()  # the file's first bytes, when this body starts the file
        # Elsewhere than a local file, the body's pieces go to the whole-file digest in blocks.
        for_digest, digest_from = Blocks(), start
        interrupted = False
        try:
            try:
                async for block in stream:
                    if not block:
                        continue
                    if start + received + len(block) > upload.total_size:
                        raise _TooLarge
                    if writer is None:
                        if (gathered := for_digest.add(block)) is not None:
                            await digests.append(upload.id, digest_from, gathered)
                            digest_from += size_of(gathered)
                        if hasher is not None:
                            hasher.update(block)
                    if start + received < HEAD_BYTES:
                        head += block[: HEAD_BYTES - start - received]
                    received += len(block)
                    if writer is not None:
                        await writer.add(block)
                        continue
                    buffer += block
                    while len(buffer) >= upload.chunk_size:
                        parts_end = await self._flush_part(
                            upload, buffer, upload.chunk_size, parts_end, new_parts
                        )
            except ClientDisconnect:
                interrupted = True
            if writer is not None:
                await writer.finish()  # every block written
            elif (gathered := for_digest.rest()) is not None:
                await digests.append(upload.id, digest_from, gathered)
            if hasher is not None and (interrupted or hasher.digest() != checksum_of(checksum)):
                digests.drop(upload.id)
                raise _checksum_mismatch()
            end = start + received
            if start == 0 and head:
                # The first bytes settle the type: a contradicting declaration stops here.
                try:
                    self.service.check_head(upload, bytes(head))
                except ProblemError:
                    digests.drop(upload.id)
                    raise
            tail_size = 0
            if writer is None:
                if end == upload.total_size and buffer:
                    parts_end = await self._flush_part(
                        upload, buffer, len(buffer), parts_end, new_parts
                    )
                elif buffer:
                    await storage.put(_tail_key(upload), bytes(buffer), "application/octet-stream")
                    tail_size = len(buffer)
        except _TooLarge as exc:
            digests.drop(upload.id)
            raise _past_the_end() from exc
        except ObjectMissing as exc:
            digests.drop(upload.id)
            raise ProblemError(ErrorCode.UPLOAD_001, _TERMINATED) from exc
        except StorageError as exc:
            digests.drop(upload.id)
            raise storage_unavailable(exc) from exc
        finally:
            if writer is not None:
                await writer.settle()
            if syncing is not None:
                await syncing.settle()
        synced_offset, written_boot = (
            syncing.recorded(end, upload.synced_offset)
            if syncing
            else (upload.synced_offset, upload.written_boot)
        )
        async with self.service.begin() as session:
            repository = UploadRepository(session)
            for part, digest in new_parts:
                await repository.save_part(upload.tenant_id, upload.id, part, digest)
            await repository.advance(
                upload.tenant_id,
                upload.id,
                offset=end,
                tail_size=tail_size,
                synced_offset=synced_offset,
                written_boot=written_boot,
                now=utcnow(),
                release_owner=lease_owner if end < upload.total_size else None,
            )
        upload.offset, upload.tail_size = end, tail_size
        upload.synced_offset, upload.written_boot = synced_offset, written_boot
        return end

    async def _flush_part(
        self,
        upload: UploadSession,
        buffer: bytearray,
        size: int,
        parts_end: int,
        new_parts: list[tuple[Part, str]],
    ) -> int:
        data = bytes(buffer[:size])
        del buffer[:size]
        number = parts_end // upload.chunk_size + 1
        part = await self.service.storage.write_part(
            upload.storage_key, upload.storage_handle, Part(number, parts_end, size), data
        )
        new_parts.append((part, sha256_hex(data)))
        return parts_end + size

    async def terminate(self, principal: Principal, upload_id: str) -> None:
        upload = await self.service.cancel(principal, upload_id, PROTOCOL)
        if upload.tail_size:
            # The discard job also deletes the tail; this only frees it sooner.
            with contextlib.suppress(StorageError):
                await self.service.storage.delete(_tail_key(upload))


@dataclass
class _KnownBody:
    """A PATCH body read whole before its transaction (:meth:`TusUploads._patch_known`)."""

    pieces: Block
    read: ReadPart | None  # with an Upload-Checksum: the body, all but its last block hashed
    interrupted: bool  # the client went away: the pieces are what arrived
    past_the_end: bool  # more than the upload has room for (nothing kept)


async def _read_known_body(
    stream: AsyncIterator[bytes], room: int, checksum: Checksum | None
) -> _KnownBody:
    pieces: Block = []
    try:
        if checksum is not None:
            read = await read_part_but_tail(stream, room, CHECKSUM_ALGORITHMS[checksum.algorithm])
            return _KnownBody(read.pieces, read, interrupted=False, past_the_end=False)
        received = 0
        async for piece in stream:
            received += len(piece)
            if received > room:
                raise PartTooLarge
            if piece:
                pieces.append(piece)
    except ClientDisconnect:
        # Kept (without a checksum) as the full path keeps what arrived.
        return _KnownBody(pieces, None, interrupted=True, past_the_end=False)
    except PartTooLarge:
        # Only a body that outgrew its Content-Length.
        return _KnownBody([], None, interrupted=False, past_the_end=True)
    return _KnownBody(pieces, None, interrupted=False, past_the_end=False)


class _DiskSync:
    """Syncs a local file's bytes below ``start`` (the earlier PATCHes) on a worker thread,
    begun at once, so that the wait is hidden behind the body arriving meanwhile."""

    def __init__(self, storage: LocalStorage, key: str, synced: int, start: int) -> None:
        """``synced``: the upload's synced offset as far as known (0 when it is not known
        yet: then the sync is begun whenever there are earlier bytes)."""
        self._synced = synced
        self._start = start
        self._pending: asyncio.Future[None] | None = None
        if start > synced:
            self._pending = asyncio.ensure_future(storage.sync_staged(key))

    async def settle(self) -> None:
        """Wait for the sync. A failed one leaves the synced offset where it was: the
        request's own outcome is decided by the write of the body."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        with contextlib.suppress(StorageError):
            await pending
            self._synced = self._start

    def recorded(self, end: int, synced: int) -> tuple[int, str | None]:
        """What the commit of a body that ended at ``end`` records: the synced offset (at
        least ``synced``, the upload's as read in that transaction), and the boot during
        which the bytes past it were written (none when there are none)."""
        synced = max(synced, self._synced)
        return synced, boot_id() if end > synced else None


class _BackgroundWriter:
    """Local directory: the body is gathered into blocks, and each block is written (and
    hashed for ``Upload-Checksum``, when sent) on a worker thread, in one hand-off, while the
    event loop receives the next. One block is in flight at a time, so writes land in order;
    each written block is then handed to the whole-file digest, which hashes it off the
    request's path."""

    def __init__(
        self,
        storage: LocalStorage,
        digests: RunningDigests,
        upload: UploadSession,
        start: int,
        hasher: Any,
    ) -> None:
        self._storage = storage
        self._digests = digests
        self._upload = upload
        self._hasher = hasher
        self._offset = start
        self._blocks = Blocks()
        self._pending: asyncio.Future[None] | None = None
        self._in_flight: tuple[int, Block] = (start, [])

    async def add(self, piece: bytes) -> None:
        block = self._blocks.add(piece)
        if block is not None:
            await self._write(block)

    async def finish(self) -> None:
        """Hand on the last, shorter block and wait until every block is hashed and written."""
        block = self._blocks.rest()
        if block is not None:
            await self._write(block)
        await self.wait()

    async def _write(self, block: Block) -> None:
        await self.wait()
        offset, self._offset = self._offset, self._offset + size_of(block)
        upload = self._upload

        def check_and_write() -> None:
            if self._hasher is not None:
                for piece in block:
                    self._hasher.update(piece)
            self._storage.write_at(upload.storage_key, offset, block)

        self._in_flight = (offset, block)
        self._pending = asyncio.ensure_future(asyncio.to_thread(check_and_write))

    async def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            await pending
            offset, block = self._in_flight
            await self._digests.append(self._upload.id, offset, block)

    async def settle(self) -> None:
        """Wait for a block still in flight when the body failed (its error is not news; the
        digest has been dropped, and is not handed the block)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            with contextlib.suppress(Exception):
                await pending


def _require_offset(upload: UploadSession, offset: int) -> None:
    if offset != upload.offset:
        raise ProblemError(
            ErrorCode.UPLOAD_005,
            f"Upload-Offset is {offset} but the upload is at {upload.offset}",
            extra={"offset": upload.offset},
        )


def _checksum_mismatch() -> ProblemError:
    return ProblemError(
        ErrorCode.UPLOAD_002,
        "The body does not match Upload-Checksum; nothing of it was kept",
        status=460,
    )


def _past_the_end() -> ProblemError:
    return ProblemError(
        ErrorCode.UPLOAD_007, "The body goes past Upload-Length; nothing of it was kept"
    )


def checksum_of(checksum: Checksum | None) -> bytes:
    assert checksum is not None
    return checksum.expected


def _tail_key(upload: UploadSession) -> str:
    return upload.storage_key + ".tail"
