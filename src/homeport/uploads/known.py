"""What this process knows of the REST uploads it serves: the fields of an upload that never
change after init (owner, sizes, storage key, declared type, expiry), so that a chunk can be
checked before its body without a transaction (:mod:`homeport.uploads.chunks`). What does
change (the upload's status, the caller's session and role) is checked in the transaction
that records the chunk. Bounded: the least recently used are forgotten first, and a chunk of
a forgotten upload simply takes the full path."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, fields
from datetime import datetime

from homeport.models.files import UploadSession

# About 300 bytes each: a few MiB at most.
KNOWN_UPLOADS_CAPACITY = 10_000


@dataclass(frozen=True, slots=True)
class KnownUpload:
    tenant_id: str
    id: str
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

    def __len__(self) -> int:
        return len(self._uploads)

    def remember(self, upload: UploadSession) -> None:
        """Remember an open upload (of the REST protocol: only its chunks look uploads up)."""
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
