"""Files: upload sessions (REST chunks and tus), stored blobs, file objects, image variants.

- A *blob* is stored bytes, content-addressed per tenant by SHA-256: a second upload of the same
  bytes links the existing blob instead of storing it again.
- A *file* is what clients see (name, type, owner, access); several files may share a blob.
- An *upload session* is a resumable upload in progress; its received parts are
  ``upload_parts`` rows (REST chunks arrive in any order; tus appends).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from homeport.kit.db import Base, UTCDateTime


class FileBlob(Base):
    __tablename__ = "file_blobs"

    tenant_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    storage_key: Mapped[str] = mapped_column(String(300))
    size: Mapped[int] = mapped_column(BigInteger)
    mime_type: Mapped[str] = mapped_column(String(127))
    # Set by the image job: "pending" | "ready" | "failed" | None (not an image).
    variants_status: Mapped[str | None] = mapped_column(String(10), nullable=True)
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class FileVariant(Base):
    """A resized copy of an image blob (EXIF orientation applied, metadata stripped)."""

    __tablename__ = "file_variants"

    tenant_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(20), primary_key=True)  # thumbnail, small, ...
    format: Mapped[str] = mapped_column(String(10), primary_key=True)  # webp | jpeg
    storage_key: Mapped[str] = mapped_column(String(300))
    mime_type: Mapped[str] = mapped_column(String(127))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(BigInteger)


class StoredFile(Base):
    __tablename__ = "files"
    __table_args__ = (
        Index("ix_files_blob", "tenant_id", "sha256"),
        Index("ix_files_owner", "tenant_id", "owner_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    owner_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    device_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    filename: Mapped[str] = mapped_column(String(255))
    mime_type: Mapped[str] = mapped_column(String(127))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    access: Mapped[str] = mapped_column(String(10))  # owner | tenant
    upload_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class UploadSession(Base):
    __tablename__ = "upload_sessions"
    __table_args__ = (
        Index("ix_upload_sessions_expires", "status", "expires_at"),
        Index("ix_upload_sessions_tenant", "tenant_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    owner_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    device_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    protocol: Mapped[str] = mapped_column(String(4))  # rest | tus
    # open | finalized | cancelled | expired
    status: Mapped[str] = mapped_column(String(10))
    filename: Mapped[str] = mapped_column(String(255))
    mime_type: Mapped[str | None] = mapped_column(String(127), nullable=True)
    access: Mapped[str] = mapped_column(String(10))
    total_size: Mapped[int] = mapped_column(BigInteger)
    file_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    chunk_size: Mapped[int] = mapped_column(BigInteger)
    total_chunks: Mapped[int] = mapped_column(Integer)
    # tus: bytes accepted so far (parts cover [0, offset) plus a tail below the part size).
    offset: Mapped[int] = mapped_column(BigInteger, default=0)
    tail_size: Mapped[int] = mapped_column(BigInteger, default=0)
    # tus, local directory: bytes below synced_offset are on disk; those above were written
    # during boot written_boot (a Linux boot id) and are lost or zeros if the machine has
    # booted since (a power loss).
    synced_offset: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    written_boot: Mapped[str | None] = mapped_column(String(36), nullable=True)
    tus_metadata: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    storage_key: Mapped[str] = mapped_column(String(300))
    storage_handle: Mapped[str] = mapped_column(String(1024), default="")
    # Who is writing (tus PATCH) and until when: a second writer is refused with 423.
    lock_owner: Mapped[str | None] = mapped_column(String(36), nullable=True)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    file_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class UploadPart(Base):
    """A received part: a REST chunk (number = chunk index + 1) or a flushed tus part."""

    __tablename__ = "upload_parts"

    tenant_id: Mapped[str] = mapped_column(String(36))
    upload_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    offset: Mapped[int] = mapped_column(BigInteger)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    token: Mapped[str] = mapped_column(String(200), default="")
