"""Whole-file SHA-256 computed from the bytes an upload receives, so finishing it need not read
the file back. Only an optimisation: the digest lives in this process's memory and is used only
when it provably covers exactly the stored bytes; otherwise the file is hashed from storage
(after a restart, or when another instance received some of the parts).

The whole-file digest is off a request's critical path: a body's bytes are handed over once
they are stored (and, for a REST chunk, verified against its checksum), and a background task
hashes them on a worker thread while the client sends its next request. A request waits only
for the hashing it must answer from (a REST chunk's checksum, a tus ``Upload-Checksum``);
finishing waits for the whole-file digest to catch up."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from homeport.uploads.blocks import Block, Blocks, size_of

# Gets each block of a part with its offset within the part, on the hashing thread (a local
# file writes it there: one thread hand-off per block for both).
Sink = Callable[[int, Block], None]

# Bytes handed over and not yet hashed, per upload and in all, beyond which handing over more
# waits for that upload's hashing: the backlog is memory, and a tus body may be gigabytes.
MAX_BACKLOG_BYTES = 16 * 1024 * 1024
MAX_TOTAL_BACKLOG_BYTES = 128 * 1024 * 1024


@dataclass
class _Digest:
    # Bytes handed over in file order (hashed, or queued for hashing).
    offset: int = 0
    hasher: Any = field(default_factory=hashlib.sha256)
    # sha256 of each REST part handed over, by part number: a re-sent part must match it.
    parts: dict[int, str] = field(default_factory=dict)
    backlog: Block = field(default_factory=list)
    backlog_bytes: int = 0
    # The task hashing the backlog, while there is one.
    hashing: asyncio.Task[None] | None = None


class RunningDigests:
    def __init__(
        self,
        max_entries: int = 1024,
        max_backlog_bytes: int = MAX_BACKLOG_BYTES,
        max_total_backlog_bytes: int = MAX_TOTAL_BACKLOG_BYTES,
    ) -> None:
        self._entries: OrderedDict[str, _Digest] = OrderedDict()
        self._max_entries = max_entries
        self._max_backlog_bytes = max_backlog_bytes
        self._max_total_backlog_bytes = max_total_backlog_bytes
        self.backlog_bytes = 0  # of all uploads, handed over and not hashed yet

    async def add_part(
        self, upload_id: str, offset: int, part: int, pieces: Block, digest: str
    ) -> None:
        """A verified, stored REST part: it continues the whole-file digest when it is the
        next part in file order. A re-sent part that differs from what was hashed ends the
        digest; one further along leaves a gap (finishing then hashes from storage)."""
        entry = self._entry(upload_id, offset)
        if entry is None:
            return
        if offset == entry.offset:
            entry.parts[part] = digest
            await self._queue(entry, pieces)
        elif offset < entry.offset and entry.parts.get(part) != digest:
            self.drop(upload_id)  # bytes already hashed were replaced

    async def append(self, upload_id: str, offset: int, pieces: Block) -> None:
        """Bytes stored at ``offset`` (tus): the digest grows only along the file; bytes
        anywhere else end it."""
        entry = self._entry(upload_id, offset)
        if entry is None:
            return
        if offset != entry.offset:
            self.drop(upload_id)
            return
        await self._queue(entry, pieces)

    def covers(self, upload_id: str, offset: int) -> bool:
        """Whether this process received the upload's bytes, in order, up to ``offset``: it
        then wrote them itself since it started (no restart, no power loss in between)."""
        entry = self._entries.get(upload_id)
        return entry is not None and entry.offset == offset

    async def take(self, upload_id: str, total_size: int, parts: dict[int, str]) -> str | None:
        """The digest when it covers the whole file and every part it hashed is the stored one
        (after the hashing of what was handed over has caught up)."""
        entry = self._entries.get(upload_id)
        if entry is None or entry.offset != total_size:
            return None
        if any(parts.get(number) != digest for number, digest in entry.parts.items()):
            return None
        if entry.hashing is not None:
            # Shielded: a caller that gives up does not stop the hashing of the others' bytes.
            await asyncio.shield(entry.hashing)
        if self._entries.get(upload_id) is not entry or entry.offset != total_size:
            return None  # dropped, or handed more bytes, while it caught up
        del self._entries[upload_id]
        return str(entry.hasher.hexdigest())

    def drop(self, upload_id: str) -> None:
        self._entries.pop(upload_id, None)

    def _entry(self, upload_id: str, offset: int) -> _Digest | None:
        entry = self._entries.get(upload_id)
        if entry is None and offset == 0:
            entry = self._entries[upload_id] = _Digest()
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        elif entry is not None:
            self._entries.move_to_end(upload_id)
        return entry

    async def _queue(self, entry: _Digest, pieces: Block) -> None:
        size = size_of(pieces)
        entry.offset += size
        entry.backlog.extend(pieces)
        entry.backlog_bytes += size
        self.backlog_bytes += size
        if entry.hashing is None:
            entry.hashing = asyncio.create_task(self._hash_backlog(entry))
        too_much = (
            entry.backlog_bytes > self._max_backlog_bytes
            or self.backlog_bytes > self._max_total_backlog_bytes
        )
        if too_much and entry.hashing is not None:
            await asyncio.shield(entry.hashing)

    async def _hash_backlog(self, entry: _Digest) -> None:
        """Hash the entry's backlog on a worker thread, all that waits in one hand-off, until
        none is left (bytes handed over meanwhile are taken by the next hand-off)."""
        try:
            while entry.backlog:
                pieces, entry.backlog = entry.backlog, []
                size, entry.backlog_bytes = entry.backlog_bytes, 0
                try:
                    await asyncio.to_thread(_update, entry.hasher, pieces)
                finally:
                    self.backlog_bytes -= size
        finally:
            entry.hashing = None


def _update(hasher: Any, pieces: Block) -> None:
    for piece in pieces:
        hasher.update(piece)


class PartTooLarge(Exception):
    pass


async def read_part(
    body: AsyncIterator[bytes], limit: int, sink: Sink | None = None
) -> tuple[Block, str]:
    """Read a REST chunk and return it (its pieces, not joined) with its SHA-256. Hashing runs
    on a worker thread, block by block, while the next block arrives. ``sink`` (if given) gets
    each block with its offset within the part, in order, on that thread (a local file writes
    while the next block arrives). Raises :class:`PartTooLarge` past ``limit`` bytes. The
    whole-file digest takes the part only once it is verified (:meth:`RunningDigests.add_part`).
    """
    pieces, hasher, tail = await _read(body, limit, sink, hash_tail=True)
    assert not tail
    return pieces, hasher.hexdigest()


@dataclass
class ReadPart:
    """A body read with all but its last block hashed (:func:`read_part_but_tail`)."""

    pieces: Block
    hasher: Any
    tail: Block

    def finish(self) -> str:
        """Blocking: hash the last block; the body's digest (hex)."""
        _update(self.hasher, self.tail)
        self.tail = []
        return str(self.hasher.hexdigest())


async def read_part_but_tail(
    body: AsyncIterator[bytes], limit: int, algorithm: Callable[[], Any] = hashlib.sha256
) -> ReadPart:
    """:func:`read_part` without a sink, leaving the last block unhashed: the caller hashes it
    on the worker thread that then goes on with the chunk (one hand-off for both).
    ``algorithm``: the hash to compute (a tus ``Upload-Checksum`` may ask for SHA-1)."""
    return ReadPart(*await _read(body, limit, None, hash_tail=False, algorithm=algorithm))


async def _read(
    body: AsyncIterator[bytes],
    limit: int,
    sink: Sink | None,
    *,
    hash_tail: bool,
    algorithm: Callable[[], Any] = hashlib.sha256,
) -> tuple[Block, Any, Block]:
    """The chunk's pieces, its hasher and (``hash_tail`` false) its last block, not hashed."""
    chunk = algorithm()
    hashed = 0
    pending: asyncio.Future[None] | None = None

    def step(position: int, block: Block) -> None:
        _update(chunk, block)
        if sink is not None:
            sink(position, block)

    gathered = Blocks()
    pieces: Block = []
    received = 0
    # Without hash_tail, each block waits until the next one is gathered, so the last one is
    # never handed out here.
    held: Block = []
    try:
        async for piece in body:
            received += len(piece)
            if received > limit:
                raise PartTooLarge
            block = gathered.add(piece)
            if block is None:
                continue
            pieces.extend(block)
            if not hash_tail:
                block, held = held, block
                if not block:
                    continue
            if pending is not None:
                await pending
            pending = asyncio.ensure_future(asyncio.to_thread(step, hashed, block))
            hashed += size_of(block)
        if pending is not None:
            await pending
            pending = None
        if (block := gathered.rest()) is not None:
            pieces.extend(block)
            if not hash_tail:
                held = held + block
            else:
                pending = asyncio.ensure_future(asyncio.to_thread(step, hashed, block))
                await pending
                pending = None
    finally:
        if pending is not None:
            with contextlib.suppress(BaseException):
                await pending
    return pieces, chunk, held
