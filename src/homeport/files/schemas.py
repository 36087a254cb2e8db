"""Response and request bodies of the files endpoints."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from homeport.auth.schemas import StrictModel

# No control characters: a file name goes into Content-Disposition and into text columns
# (PostgreSQL refuses a NUL in text).
FILENAME_PATTERN = r"^[^\x00-\x1f\x7f]+$"
FILENAME_MAX_LENGTH = 255
Filename = Annotated[
    str,
    StringConstraints(min_length=1, max_length=FILENAME_MAX_LENGTH, pattern=FILENAME_PATTERN),
]


def is_filename(name: str) -> bool:
    """Whether ``name`` is a valid :data:`Filename` (for names that arrive outside a body, as
    tus metadata)."""
    return len(name) <= FILENAME_MAX_LENGTH and re.fullmatch(FILENAME_PATTERN, name) is not None


class VariantOut(BaseModel):
    name: str = Field(description="thumbnail (150 px), small (300), medium (600), large (1200)")
    format: Literal["webp", "jpeg"]
    mime_type: str
    width: int
    height: int
    size: int
    url: str


class ImageOut(BaseModel):
    width: int | None
    height: int | None
    variants_status: Literal["pending", "ready", "failed"]


class FileOut(BaseModel):
    id: str
    filename: str
    mime_type: str
    size: int
    checksum: str = Field(description="SHA-256 (hex) of the bytes.")
    access: Literal["owner", "tenant"]
    owner_id: str | None
    created_at: datetime
    url: str = Field(
        description="Signed download URL (no token needed), valid until url_expires_at."
    )
    url_expires_at: datetime
    image: ImageOut | None = None
    variants: list[VariantOut] = Field(default_factory=list)


class FileList(BaseModel):
    files: list[FileOut]
    next_cursor: str | None


class InlineImage(StrictModel):
    image: Annotated[str, StringConstraints(min_length=1)] = Field(
        description="A data URL (data:image/jpeg;base64,...) or bare base64."
    )
    filename: Filename | None = None
    access: Literal["owner", "tenant"] = "owner"
