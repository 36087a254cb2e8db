"""What this process knows of the uploads it serves (REST and tus): the fields of an upload that
never change after it is created (protocol, owner, sizes, storage key, declared type, expiry),
so that a REST chunk or a tus ``PATCH`` can be checked before its body without a transaction
(:mod:`homeport.uploads.chunks`, :mod:`homeport.uploads.tus`). What does change (the upload's
status, offset and lease, the caller's session and role) is checked in the transaction that
records the body. Bounded: the least recently used are forgotten first, and a body for
a forgotten upload simply takes the full path."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, fields
from datetime import datetime

from homeport.models.files import UploadSession

# About 300 bytes each: a few MiB at most.
KNOWN_UPLOADS_CAPACITY = 10_000
# A body up to this size, of an upload this process knows, is written inside the transaction
# that records it; a larger one takes the full path, whose extra transaction costs little next
# to its bytes (and whose body streams instead of being held in memory).
KNOWN_PART_MAX_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class KnownUpload:
    tenant_id: str
    id: str
    protocol: str
    owner_id: str | None
    mime_type: str | None
    total_size: int
    chunk_size: int
    total_chunks: int
    storage_key: str
    expires_at: datetime

    @classmethod
    def of(cls, upload: UploadSession) -> KnownUpload:
        return cls(**{field.name: getattr(upload, field.name) for field in fields(cls)})


class KnownUploads:
    def __init__(self, capacity: int = KNOWN_UPLOADS_CAPACITY) -> None:
        self.capacity = capacity
        self._uploads: OrderedDict[tuple[str, str], KnownUpload] = OrderedDict()
        # Uploads a body is being read for without a lease (a tus PATCH of a known upload).
        self._receiving: set[tuple[str, str]] = set()

    def __len__(self) -> int:
        return len(self._uploads)

    def remember(self, upload: UploadSession) -> None:
        """Remember an open upload."""
        if upload.status != "open":
            return
        key = (upload.tenant_id, upload.id)
        self._uploads[key] = KnownUpload.of(upload)
        self._uploads.move_to_end(key)
        while len(self._uploads) > self.capacity:
            self._uploads.popitem(last=False)

    def get(self, tenant_id: str, upload_id: str) -> KnownUpload | None:
        key = (tenant_id, upload_id)
        known = self._uploads.get(key)
        if known is not None:
            self._uploads.move_to_end(key)
        return known

    def forget(self, tenant_id: str, upload_id: str) -> None:
        self._uploads.pop((tenant_id, upload_id), None)

    def start_receiving(self, upload: KnownUpload) -> bool:
        """Mark a body as being read for ``upload``; False if one already is."""
        key = (upload.tenant_id, upload.id)
        if key in self._receiving:
            return False
        self._receiving.add(key)
        return True

    def stop_receiving(self, upload: KnownUpload) -> None:
        self._receiving.discard((upload.tenant_id, upload.id))

    def receiving(self, tenant_id: str, upload_id: str) -> bool:
        """Whether this process is reading a body for the upload without holding its lease:
        another writer is refused as if it held it (423)."""
        return (tenant_id, upload_id) in self._receiving
