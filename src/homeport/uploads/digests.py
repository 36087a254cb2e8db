"""Whole-file SHA-256 computed while the bytes arrive, so finishing an upload need not read
the file back. Only an optimisation: the digest lives in this process's memory and is used only
when it provably covers exactly the stored bytes; otherwise the file is hashed from storage
(after a restart, or when another instance received some of the parts)."""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any


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

    async def hash_part(self, upload_id: str, offset: int, part: int, data: bytes) -> str:
        """SHA-256 of a REST chunk stored at ``offset``; when it continues the whole-file
        digest, that digest takes it in too, in the same worker-thread pass (the event loop
        stays free). The caller drops the digest when the chunk is then refused."""
        entry = self._entries.get(upload_id)
        if entry is None and offset == 0:
            entry = self._entries[upload_id] = _Digest()
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        if entry is None or offset > entry.offset:
            # Not (yet) next in the file: this digest stops growing, it stays valid.
            return await _sha256_off_loop(data)
        self._entries.move_to_end(upload_id)
        if offset < entry.offset:
            digest = await _sha256_off_loop(data)
            if entry.parts.get(part) != digest:
                self.drop(upload_id)  # bytes already hashed were replaced
            return digest
        entry.offset += len(data)  # claimed: a following chunk continues after this one
        hasher = entry.hasher

        def both() -> str:
            hasher.update(data)
            return hashlib.sha256(data).hexdigest()

        async with entry.order:
            digest = await asyncio.to_thread(both)
        entry.parts[part] = digest
        return digest

    def feed_sequential(self, upload_id: str, offset: int, data: bytes) -> None:
        """Bytes appended at ``offset`` (tus): the digest grows only along the file."""
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
        entry.hasher.update(data)
        entry.offset += len(data)

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


async def _sha256_off_loop(data: bytes) -> str:
    """hashlib releases the GIL on large inputs: hash big chunks on a worker thread."""
    if len(data) < 256 * 1024:
        return hashlib.sha256(data).hexdigest()
    return await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
