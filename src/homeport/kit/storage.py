"""Where file bytes live: a local directory (the embedded default) or an S3-compatible service.

Both backends speak one small interface built around *staged* objects that are written in
parts and then assembled, because that is what resumable uploads need:

- local directory: a staged object is one file; a part is written at its byte offset
  (``pwrite``), so parts may arrive in any order and be re-sent; assembling is a no-op.
- S3: a staged object is a multipart upload; part ``n`` is S3 part ``n``; assembling completes
  the multipart upload. Every part but the last must be at least ``min_part_size`` bytes.

Keys are relative, ``/``-separated and never contain ``..``; callers build them from ids and
hashes only (never from client-supplied names).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar

from homeport.kit.disk import start_writeback, sync

READ_BLOCK = 1024 * 1024
_Result = TypeVar("_Result")
_KEY = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$")


class StorageError(Exception):
    """The backend failed (unreachable, refused, inconsistent); not the client's fault."""


class ObjectMissing(StorageError):
    """The key names no object."""


@dataclass(frozen=True)
class Part:
    """One written part of a staged object: its 1-based number, byte offset, size and the
    backend's token for it (the S3 ETag; empty on a local directory)."""

    number: int
    offset: int
    size: int
    token: str = ""


def check_key(key: str) -> str:
    if not _KEY.match(key) or any(piece in {".", ".."} for piece in key.split("/")):
        raise ValueError(f"invalid storage key {key!r}")
    return key


class Storage(Protocol):
    """What the uploads and files domains need from a backend."""

    name: str
    # Smallest size of a part that is not the last one (1 when any size works).
    min_part_size: int

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raises when the backend cannot be used (readiness check)."""

    async def create_staged(self, key: str) -> str:
        """Begin a staged object; returns the backend's handle for it (S3 upload id)."""

    async def write_part(self, key: str, handle: str, part: Part, data: bytes) -> Part:
        """Write one part (re-writing a part replaces it); returns it with its token."""

    async def assemble(self, key: str, handle: str, parts: list[Part]) -> None:
        """Turn the staged parts (in number order, covering the object) into the object."""

    async def reopen(self, key: str, parts: list[Part]) -> tuple[str, list[Part]]:
        """Make an assembled object staged again with the same parts (so parts can be
        re-sent after a failed whole-file check); returns the new handle and parts."""

    async def abort(self, key: str, handle: str) -> None:
        """Drop a staged object and its parts; no error when it is already gone."""

    async def put(self, key: str, data: bytes, content_type: str) -> None: ...

    async def get(self, key: str) -> bytes: ...

    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The bytes ``start`` to ``end`` (exclusive; ``None`` = to the end), in blocks."""

    async def size(self, key: str) -> int | None:
        """The object's size, ``None`` when there is no such object."""

    async def delete(self, key: str) -> None:
        """Remove an object; no error when it is already gone."""

    async def move(self, source: str, target: str) -> None:
        """Give an assembled object another key (the old key stops existing)."""


async def sha256_of(storage: Storage, key: str, start: int = 0, end: int | None = None) -> str:
    """SHA-256 (hex) of a stored object (or of its bytes ``start`` to ``end``), read in blocks."""
    digest = hashlib.sha256()
    async for block in storage.read(key, start, end):
        digest.update(block)
    return digest.hexdigest()


class LocalStorage:
    """Objects are files under one directory (``<data dir>/files`` by default)."""

    name = "fs"
    min_part_size = 1

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    @staticmethod
    async def _on_thread(function: Callable[..., _Result], *args: Any) -> _Result:
        """Run a blocking file operation on a worker thread (see :func:`_system_failures`)."""
        with _system_failures():
            return await asyncio.to_thread(function, *args)

    async def start(self) -> None:
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        def probe() -> None:
            if not self.root.is_dir() or not os.access(self.root, os.W_OK):
                raise StorageError(f"storage directory is not writable: {self.root.name}")

        await asyncio.to_thread(probe)

    async def create_staged(self, key: str) -> str:
        path = self._path(key)

        def create() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(exist_ok=True)

        await self._on_thread(create)
        return ""

    async def write_part(
        self, key: str, handle: str, part: Part, data: bytes | Sequence[bytes]
    ) -> Part:
        """Also takes the part's pieces, written one after the other without joining them."""
        await self._on_thread(self.write_at, key, part.offset, data)
        return part

    async def sync_staged(self, key: str) -> None:
        """Put what was written to a staged object so far on disk."""
        try:
            await self._on_thread(functools.partial(sync, self._path(key), data_only=True))
        except FileNotFoundError as exc:
            raise ObjectMissing(key) from exc

    def write_at(self, key: str, offset: int, data: bytes | Sequence[bytes]) -> None:
        """Blocking: write ``data`` (bytes, or pieces written one after the other) at
        ``offset`` of a staged object (on a worker thread; a caller with other blocking work
        for the same bytes runs both in one hand-off)."""
        pieces = [data] if isinstance(data, bytes) else list(data)
        try:
            descriptor = os.open(self._path(key), os.O_WRONLY)
        except FileNotFoundError as exc:
            raise ObjectMissing(key) from exc
        start = offset
        try:
            # On the caller's worker thread (not through _on_thread): the same failures.
            with _system_failures():
                # One system call for all pieces, without joining them first.
                while pieces:
                    written = os.pwritev(descriptor, pieces[:_MAX_PIECES_PER_WRITE], offset)
                    offset += written
                    pieces = left_after_write(pieces, written)
                start_writeback(descriptor, start, offset - start)
        finally:
            os.close(descriptor)

    async def assemble(self, key: str, handle: str, parts: list[Part]) -> None:
        # The parts were written in place. Drop anything past the end (a longer re-send), and
        # sync: the object is about to become a file its uploader may delete its copy of.
        end = max((part.offset + part.size for part in parts), default=0)
        path = self._path(key)

        def truncate_and_sync() -> None:
            try:
                os.truncate(path, end)
                sync(path)
            except FileNotFoundError as exc:
                raise ObjectMissing(key) from exc
            sync(path.parent)

        await self._on_thread(truncate_and_sync)

    async def reopen(self, key: str, parts: list[Part]) -> tuple[str, list[Part]]:
        if await self.size(key) is None:
            raise ObjectMissing(key)
        return "", parts

    async def abort(self, key: str, handle: str) -> None:
        await self.delete(key)

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        path = self._path(key)

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(path.name + ".tmp")
            temporary.write_bytes(data)
            sync(temporary)  # on disk before it takes the name, and the name on disk too
            os.replace(temporary, path)
            sync(path.parent)

        await self._on_thread(write)

    async def get(self, key: str) -> bytes:
        try:
            return await self._on_thread(self._path(key).read_bytes)
        except FileNotFoundError as exc:
            raise ObjectMissing(key) from exc

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            handle = await self._on_thread(_open_binary, path)
        except FileNotFoundError as exc:
            raise ObjectMissing(key) from exc
        try:
            await self._on_thread(handle.seek, start)
            remaining = None if end is None else max(0, end - start)
            while remaining is None or remaining > 0:
                wanted = READ_BLOCK if remaining is None else min(READ_BLOCK, remaining)
                block = await self._on_thread(handle.read, wanted)
                if not block:
                    break
                if remaining is not None:
                    remaining -= len(block)
                yield block
        finally:
            # Synchronously: a cancelled download (client gone) must still close the file.
            handle.close()

    async def size(self, key: str) -> int | None:
        try:
            return (await self._on_thread(self._path(key).stat)).st_size
        except FileNotFoundError:
            return None

    async def delete(self, key: str) -> None:
        path = self._path(key)
        await self._on_thread(lambda: path.unlink(missing_ok=True))

    async def move(self, source: str, target: str) -> None:
        source_path, target_path = self._path(source), self._path(target)

        def rename() -> None:
            target_path.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(source_path, target_path)
            except FileNotFoundError as exc:
                raise ObjectMissing(source) from exc

        await self._on_thread(rename)


def open_storage(
    backend: str,
    *,
    root: Path,
    bucket: str | None = None,
    endpoint_url: str | None = None,
    region: str = "us-east-1",
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    prefix: str = "",
) -> Storage:
    """The configured backend (not started): ``fs`` (a directory) or ``s3``."""
    if backend == "fs":
        return LocalStorage(root)
    if backend == "s3":
        # Imported here so the embedded default never loads the S3 client libraries.
        from homeport.kit.storage_s3 import S3Storage

        return S3Storage(
            bucket=bucket or "",
            endpoint_url=endpoint_url,
            region=region,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            prefix=prefix,
        )
    raise ValueError(f"unknown storage backend {backend!r} (expected 'fs' or 's3')")


@contextlib.contextmanager
def _system_failures() -> Iterator[None]:
    """The system's failures of a file operation (a full disk, an I/O error, a read-only
    mount) are the storage's, not the caller's: they become :class:`StorageError`. A missing
    file is left to each operation to mean."""
    try:
        yield
    except (StorageError, FileNotFoundError):
        raise
    except OSError as exc:
        raise StorageError(f"file storage failed: {exc.strerror or exc}") from exc


def _open_binary(path: Path) -> BinaryIO:
    return path.open("rb")


# Below the kernel's IOV_MAX (1024) for one pwritev.
_MAX_PIECES_PER_WRITE = 512


def left_after_write(pieces: list[bytes], written: int) -> list[bytes]:
    """What of ``pieces`` is left once their first ``written`` bytes are written."""
    for index, piece in enumerate(pieces):
        if written < len(piece):
            rest = pieces[index:]
            if written:
                rest[0] = piece[written:]
            return rest
        written -= len(piece)
    return []
