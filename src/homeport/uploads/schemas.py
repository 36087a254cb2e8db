"""Request and response bodies of the REST upload endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from homeport.auth.schemas import StrictModel
from homeport.files.schemas import Filename

Sha256Hex = Annotated[
    str, StringConstraints(min_length=64, max_length=64, pattern=r"^[0-9a-fA-F]{64}$")
]
MimeType = Annotated[
    str,
    StringConstraints(max_length=127, pattern=r"^[A-Za-z0-9][\w.+-]*/[\w.+-]+(;.*)?$"),
]


class UploadInit(StrictModel):
    filename: Filename
    total_size: int = Field(ge=1, description="Size of the whole file in bytes.")
    mime_type: MimeType | None = Field(
        default=None, description="Declared type; checked against the bytes."
    )
    file_hash: Sha256Hex = Field(description="SHA-256 (hex) of the whole file.")
    chunk_size: int | None = Field(
        default=None,
        ge=1,
        description="Wanted chunk size; the server may raise it (S3 needs at least 5 MiB).",
    )
    access: Literal["owner", "tenant"] = Field(
        default="owner", description="Who may read the file: its owner or the whole tenant."
    )


class UploadCreated(BaseModel):
    upload_id: str
    chunk_size: int
    total_chunks: int
    expires_at: datetime


class ChunkAccepted(BaseModel):
    uploaded: bool
    chunk_index: int
    remaining_chunks: int
    progress_pct: float


class UploadStatus(BaseModel):
    upload_id: str
    status: Literal["open", "finalized", "cancelled", "expired"]
    uploaded_chunks: list[int]
    missing_chunks: list[int]
    progress_pct: float
    expires_at: datetime
    file_id: str | None = None


class UploadFinalized(BaseModel):
    finalized: bool
    file_id: str
    file_url: str
    file_size: int
    checksum: str
    mime_type: str
    deduplicated: bool


class UploadCancelled(BaseModel):
    cancelled: bool
    message: str
