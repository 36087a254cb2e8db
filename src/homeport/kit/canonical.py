"""Content hashes: SHA-256 of the RFC 8785 (JCS) canonical JSON of a document."""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785


class NotCanonicalizable(ValueError):
    """The document has values JSON cannot carry exactly (integers beyond +-2**53, NaN...)."""


def canonical_json(document: Any) -> bytes:
    try:
        return rfc8785.dumps(document)
    except rfc8785.CanonicalizationError as exc:
        raise NotCanonicalizable(str(exc)[:200]) from exc


def content_hash(document: Any) -> str:
    return hashlib.sha256(canonical_json(document)).hexdigest()
