"""Whole-file SHA-256 computed while the bytes arrive, so finishing an upload need not read
the file back. Only an optimisation: the digest lives in this process's memory and is used only
when it provably covers exactly the stored bytes; otherwise the file is hashed from storage
(after a restart, or when another instance received some of the parts)."""

from __future__ import annotations

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


class RunningDigests:
    def __init__(self, max_entries: int = 1024) -> None:
        self._entries: OrderedDict[str, _Digest] = OrderedDict()
        self._max_entries = max_entries

    def feed(self, upload_id: str, offset: int, data: bytes, part: int, part_sha256: str) -> None:
        """Bytes stored at ``offset`` as part ``part`` (a REST chunk, or a tus write)."""
        entry = self._entries.get(upload_id)
        if entry is None:
            if offset != 0:
                return
            entry = self._entries[upload_id] = _Digest()
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        self._entries.move_to_end(upload_id)
        if offset == entry.offset:
            entry.hasher.update(data)
            entry.offset += len(data)
            entry.parts[part] = part_sha256
        elif offset > entry.offset:
            return  # a later part arrived first: this digest stops growing, it stays valid
        elif entry.parts.get(part) != part_sha256:
            self.drop(upload_id)  # bytes already hashed were replaced

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
