"""Whole-file SHA-256 computed while the bytes arrive, so finishing an upload need not read
the file back. Only an optimisation: the digest lives in this process's memory and is used only
when it provably covers exactly the stored bytes; otherwise the file is hashed from storage
(after a restart, or when another instance received some of the parts)."""

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


@dataclass
class _Digest:
    offset: int = 0
    hasher: Any = field(default_factory=hashlib.sha256)
    # sha256 of each consumed part, by part number: a re-sent part must match what was hashed.
    parts: dict[int, str] = field(default_factory=dict)
    # Updates of the running hasher happen one after the other, in file order.
    order: asyncio.Lock = field(default_factory=asyncio.Lock)


class RunningDigests:
    def __init__(self, max_entries: int = 1024) -> None:
        self._entries: OrderedDict[str, _Digest] = OrderedDict()
        self._max_entries = max_entries

    async def read_part(
        self,
        upload_id: str,
        offset: int,
        part: int,
        body: AsyncIterator[bytes],
        limit: int,
        sink: Sink | None = None,
    ) -> tuple[Block, str]:
        """Read a REST chunk that will be stored at ``offset`` and return it (its pieces, not
        joined) with its SHA-256. Hashing runs on a worker thread, block by block, while the
        next block arrives; when the chunk continues the whole-file digest, that digest takes
        it in the same pass. ``sink`` (if given) gets each block with its offset within the
        part, in order, on that thread (a local file writes while the next block arrives). Raises
        :class:`PartTooLarge` past ``limit`` bytes; any failure (or a checksum the caller then
        refuses, see :meth:`drop`) leaves no half-fed digest."""
        entry = self._entries.get(upload_id)
        if entry is None and offset == 0:
            entry = self._entries[upload_id] = _Digest()
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        continues = entry is not None and offset == entry.offset
        if entry is not None:
            self._entries.move_to_end(upload_id)
        running = entry.hasher if continues and entry is not None else None
        lock = entry.order if continues and entry is not None else asyncio.Lock()
        async with lock:
            try:
                pieces, digest = await _read_hashing(body, limit, running, sink)
            except BaseException:
                if running is not None:
                    self.drop(upload_id)
                raise
        if entry is not None and running is not None:
            entry.offset += size_of(pieces)
            entry.parts[part] = digest
        elif entry is not None and offset < entry.offset and entry.parts.get(part) != digest:
            self.drop(upload_id)  # bytes already hashed were replaced
        return pieces, digest

    def feed_sequential(self, upload_id: str, offset: int, data: bytes | Block) -> None:
        """Bytes (or a block's pieces) appended at ``offset`` (tus): the digest grows only
        along the file."""
        entry = self._entries.get(upload_id)
        if entry is None and offset == 0:
            entry = self._entries[upload_id] = _Digest()
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        if entry is None:
            return
        if offset != entry.offset:
            self.drop(upload_id)
            return
        for piece in [data] if isinstance(data, bytes) else data:
            entry.hasher.update(piece)
            entry.offset += len(piece)

    def covers(self, upload_id: str, offset: int) -> bool:
        """Whether this process hashed the upload's bytes, in order, up to ``offset``: it then
        wrote them itself since it started (no restart, no power loss in between)."""
        entry = self._entries.get(upload_id)
        return entry is not None and entry.offset == offset

    def take(self, upload_id: str, total_size: int, parts: dict[int, str]) -> str | None:
        """The digest when it covers the whole file and every part it hashed is the stored one."""
        entry = self._entries.pop(upload_id, None)
        if entry is None or entry.offset != total_size:
            return None
        if any(parts.get(number) != digest for number, digest in entry.parts.items()):
            return None
        return str(entry.hasher.hexdigest())

    def drop(self, upload_id: str) -> None:
        self._entries.pop(upload_id, None)


class PartTooLarge(Exception):
    pass


async def _read_hashing(
    body: AsyncIterator[bytes], limit: int, running: Any, sink: Sink | None
) -> tuple[Block, str]:
    chunk = hashlib.sha256()
    hashed = 0
    pending: asyncio.Future[None] | None = None

    def step(position: int, block: Block) -> None:
        for piece in block:
            chunk.update(piece)
            if running is not None:
                running.update(piece)
        if sink is not None:
            sink(position, block)

    gathered = Blocks()
    pieces: Block = []
    received = 0
    try:
        async for piece in body:
            received += len(piece)
            if received > limit:
                raise PartTooLarge
            block = gathered.add(piece)
            if block is None:
                continue
            if pending is not None:
                await pending
            pieces.extend(block)
            pending = asyncio.ensure_future(asyncio.to_thread(step, hashed, block))
            hashed += size_of(block)
        if pending is not None:
            await pending
            pending = None
        if (block := gathered.rest()) is not None:
            pieces.extend(block)
            pending = asyncio.ensure_future(asyncio.to_thread(step, hashed, block))
            await pending
            pending = None
    finally:
        if pending is not None:
            with contextlib.suppress(BaseException):
                await pending
    return pieces, chunk.hexdigest()
